"""xarray's ``tmd_nb`` engine: ``xr.open_dataarray(path, engine="tmd_nb")`` opens any file tmd_nb reads.

Registered in the ``xarray.backends`` entry-point group (``pyproject.toml``), so xarray finds it
by name once tmd_nb is installed; xarray also picks it by itself for a file whose content
:func:`tmd_nb.formats.registry.recognise` knows (NPY, NPZ, TMD, X3P, Gwyddion).

The Dataset holds one variable, ``"height_map"``, the DataArray :func:`tmd_nb.to_xarray` makes of
``tmd_nb.load(path)``: dims ``("y", "x")``, pixel-centre coordinates with units, the metadata in
its ``attrs`` (:mod:`tmd_nb.storage.labelled`).

Lazy
    NPY files and NPZ archives are opened with their headers and metadata only: the heights are
    read when asked for (``.values``, ``.compute()``, ``.load()``), and only the window asked
    for (``da[:256, :256].values``), by the reader behind :func:`tmd_nb.open_dask`
    (:class:`~tmd_nb.chunks.HeightMapWindows`). With ``chunks=`` the DataArray is
    Dask-backed, each block read on its own, so a map bigger than memory opens and computes in
    pieces; a deflated NPZ member prefers bands of whole rows (``chunks={}``), as each block
    inflates whole rows anyway. As with ``open_dask``, windows are not CRC-checked (the CRC covers
    a whole NPZ member; ``tmd_nb.load`` checks it). Other formats are read whole when opened.

Backend arguments
    ``channel``: passed to ``tmd_nb.load`` when given (for files holding several channels); such a
    file is read whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from xarray import Dataset, Variable
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from .chunks import HeightMapWindows, load_metadata, open_windows
from .formats import npy, npz, registry
from .heightmap import HEIGHT_MAP, split_height_map
from .storage.labelled import DIMS, labels

__all__ = ["TmdNbBackendEntrypoint", "WindowsArray"]


class WindowsArray(BackendArray):
    """A stored height map as xarray's lazily indexed array: each index reads one window of the file."""

    def __init__(self, windows: HeightMapWindows) -> None:
        self.windows = windows
        self.shape = windows.shape
        self.dtype = windows.dtype

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        # The windows take an int, a slice or an integer array on each axis: xarray's "outer" indexing.
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.OUTER, self.windows.__getitem__
        )


def _path(filename_or_obj: Any) -> str:
    if isinstance(filename_or_obj, str | os.PathLike):
        return os.fspath(filename_or_obj)
    raise TypeError(
        f"the tmd_nb engine opens files by path (str or os.PathLike), not {type(filename_or_obj).__qualname__}"
    )


class TmdNbBackendEntrypoint(BackendEntrypoint):
    """Height maps of every format tmd_nb reads, as an xarray Dataset with one ``height_map`` variable."""

    description = "Surface height maps (NPY, NPZ, TrueMap .tmd, X3P, Gwyddion .gwy) read by tmd_nb"
    url = "https://pypi.org/project/tmd-nb/"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "channel")

    def open_dataset(
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        channel: Any = None,
    ) -> Dataset:
        path = _path(filename_or_obj)
        fmt = registry.recognise(path)
        encoding: dict[str, Any] = {}
        data: Any
        if channel is None and fmt in (npy.FORMAT, npz.FORMAT):
            windows = open_windows(path)
            meta = load_metadata(path)
            data = indexing.LazilyIndexedArray(WindowsArray(windows))
            shape = windows.shape
            if windows.deflated:  # a block inflates whole rows (of the stored order) anyway
                encoding["preferred_chunks"] = {"y": shape[0]} if windows.fortran else {"x": shape[1]}
        else:
            options = {} if channel is None else {"channel": channel}
            loaded = registry.load(path, **options)
            data, meta = split_height_map(loaded, repr(path))
            shape = data.shape
        coords, attrs = labels(meta, shape)
        variables = {dim: Variable((dim,), values, attrs=a) for dim, (values, a) in coords.items()}
        drop = {drop_variables} if isinstance(drop_variables, str) else set(drop_variables or ())
        if HEIGHT_MAP not in drop:
            variables[HEIGHT_MAP] = Variable(DIMS, data, attrs=attrs, encoding=encoding)
        return Dataset({k: v for k, v in variables.items() if k not in DIMS}, coords={d: variables[d] for d in coords})

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Whether the file is one tmd_nb reads: by its content, or by its extension when it cannot be read."""
        try:
            path = _path(filename_or_obj)
        except TypeError:
            return False
        if not os.path.isfile(path):
            return registry.by_extension(os.path.splitext(path)[1]) is not None
        try:
            registry.recognise(path)
        except (OSError, ValueError):
            return False
        return True
