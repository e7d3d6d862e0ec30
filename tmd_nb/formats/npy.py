"""The NPY format: a height map alone in a standard ``.npy`` file, as ``numpy.save`` writes it.

The encoding (header, array bytes, the checks on reading) is :mod:`tmd_nb.storage.npyfile`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import MetadataNotStoredWarning, warn
from ..heightmap import check_height_map_header, keys_text, split_height_map
from ..storage._io import Progress
from ..storage.atomic import atomic_write
from ..storage.npyfile import NPY_MAGIC, read_npy, write_npy
from .base import Format, PathLike

__all__ = ["FORMAT", "export_to_npy", "load_from_npy"]


def export_to_npy(
    data: np.ndarray | Mapping[str, Any], output_path: PathLike, *, progress: Progress | None = None
) -> str:
    """Save the height map as a standard ``.npy`` file at exactly ``output_path``.

    The file is what ``numpy.save`` writes, byte for byte, and replaces any old one atomically.

    Parameters
    ----------
    data : numpy.ndarray or mapping
        A 2-D numeric array, or a dict with a ``"height_map"`` array. It may be a Dask array: it
        is streamed one block row at a time (at most two in memory), never held whole, and the
        file is byte for byte the one the same data in memory gives.
    output_path : str or os.PathLike
        Where to write (exactly this path; no extension is added).
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the array data is written.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    TypeError, ValueError
        ``data`` is not a 2-D numeric height map.
    OSError
        The file cannot be written; an existing special or write-protected file is refused.

    Warns
    -----
    MetadataNotStoredWarning
        ``data`` holds metadata: NPY holds the array only.
    """
    array, meta = split_height_map(data, lazy=True)
    if meta:
        warn(
            f"NPY stores the height map only; metadata not saved to {os.fspath(output_path)!r}: "
            f"{keys_text(meta, 10)}; use export_to_npz to keep it",
            MetadataNotStoredWarning,
        )
    with atomic_write(output_path) as fp:
        write_npy(fp, array, progress=progress)
    return os.path.abspath(output_path)


def load_from_npy(file_path: PathLike, mmap: bool = False, *, progress: Progress | None = None) -> np.ndarray:
    """Load a 2-D height map from a ``.npy`` file, never unpickling anything.

    Parameters
    ----------
    file_path : str or os.PathLike
        The file (the TMD toolkit's name for this parameter, so ``load_from_npy(file_path=...)``
        works as it does there).
    mmap : bool, default False
        Return a read-only memory map of the file instead of reading it.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the array is read.

    Returns
    -------
    numpy.ndarray
        The 2-D height map, with the dtype, byte order and memory layout the file declares.

    Raises
    ------
    FormatError
        The file is not a well-formed NPY file of a 2-D numeric array; the header is checked
        against the file's size before anything is allocated.
    OSError
        The file cannot be read.
    """
    return read_npy(file_path, mmap=mmap, progress=progress, check=check_height_map_header)


FORMAT = Format(
    name="npy",
    title="NPY",
    extensions=(".npy",),
    summary="the height map alone (numpy array file)",
    recognise=lambda head, path: head.startswith(NPY_MAGIC),
    load=lambda path, *, mmap=False, progress=None: {"height_map": load_from_npy(path, mmap, progress=progress)},
    mmap=True,
    save=export_to_npy,
    keeps=frozenset(),
    label="height map only",
    holds="the height map",
)
