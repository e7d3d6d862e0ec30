"""The file formats and their registry, importing numpy and the standard library.

(:mod:`.x3p`, :mod:`.gwy` and :mod:`.sdf` also use the field's own libraries, ``x3pio``,
``gwyfile`` and ``sdfio``, imported when a file is read or written.)
:mod:`~tmd_nb.formats.registry` lists the formats; each format module (:mod:`.npy`,
:mod:`.npz`, :mod:`.tmd`, :mod:`.x3p`, :mod:`.gwy`, :mod:`.sdf`)
documents its on-disk layout at its top and ends with its :class:`~tmd_nb.formats.base.Format`
declaration. The plumbing they share (NPY encoding, zip archive, deflate, typed metadata, atomic
writes, units, the embedded record) is :mod:`tmd_nb.storage`, below them.
"""
