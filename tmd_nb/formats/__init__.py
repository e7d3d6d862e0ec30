"""The format layer: file formats and their plumbing, importing numpy and the standard library.

(:mod:`.x3p`, :mod:`.gwy` and :mod:`.sdf` also use the field's own libraries, ``x3pio``,
``gwyfile`` and ``sdfio``, imported when a file is read or written.)
:mod:`~tmd_nb.formats.registry` lists the formats; each format module (:mod:`.npy`,
:mod:`.npz`, :mod:`.tmd`, :mod:`.x3p`, :mod:`.gwy`, :mod:`.sdf`)
documents its on-disk layout at its top and ends with its :class:`~tmd_nb.formats.base.Format`
declaration. The plumbing they share: :mod:`.archive` (zip archives of NPY members),
:mod:`.deflate`, :mod:`.metadata` (typed JSON), :mod:`.atomic` (crash-safe replacement),
:mod:`.units` (the physical-keys convention), :mod:`.embedded` (tmd_nb's record inside X3P,
Gwyddion and SDF files) and :mod:`._io`.
"""
