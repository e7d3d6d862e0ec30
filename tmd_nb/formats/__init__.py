"""The format layer: file formats and their plumbing, importing only numpy and the standard library.

:mod:`~tmd_nb.formats.registry` lists the formats; each format module (:mod:`.npy`,
:mod:`.npz`, :mod:`.tmd`, ...) documents its on-disk layout at its top and ends with its
:class:`~tmd_nb.formats.base.Format` declaration. The plumbing they share: :mod:`.archive`
(zip archives of NPY members), :mod:`.deflate`, :mod:`.metadata` (typed JSON), :mod:`.atomic`
(crash-safe replacement) and :mod:`._io`.
"""
