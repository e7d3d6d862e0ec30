"""How a height map is stored, below the formats: numpy and the standard library only.

:mod:`.npyfile` (the NPY encoding: header, array bytes, defensive reads), :mod:`.archive` (zip
archives of NPY members), :mod:`.deflate` (the level ladder and parallel compression),
:mod:`.inflate` (whole-buffer and streaming inflate), :mod:`.metadata` (typed JSON),
:mod:`.atomic` (crash-safe replacement), :mod:`.units` (the physical-keys convention),
:mod:`.embedded` (tmd_nb's record inside X3P, Gwyddion and SDF files), :mod:`.limits` (the sizes a
writer checks so that its reader accepts the file), :mod:`.labelled` (DataArray <-> metadata) and
:mod:`._io` (guarded reads, progress, write-behind). Nothing here imports a format
(:mod:`tmd_nb.formats`); the formats are built on these modules.
"""
