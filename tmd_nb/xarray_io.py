"""Height maps as ``xarray.DataArray``: :func:`to_xarray` and :func:`from_xarray`.

xarray is optional (``pip install 'tmd_nb[xarray]'``) and imported only when :func:`to_xarray`
runs; ``import tmd_nb`` does not import it. The mapping between the metadata keys and the
DataArray's dims, coordinates and attributes is documented in :mod:`tmd_nb.storage.labelled`;
``xr.open_dataarray(path, engine="tmd_nb")`` (:mod:`tmd_nb.xarray_backend`) gives the same
DataArray as ``to_xarray(tmd_nb.load(path))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .heightmap import HEIGHT_MAP, split_height_map
from .storage.labelled import DIMS, from_labelled, labels

__all__ = ["XARRAY_MISSING", "from_xarray", "to_xarray"]

#: What :func:`to_xarray` says when xarray is not installed.
XARRAY_MISSING = "to_xarray needs xarray: pip install 'tmd_nb[xarray]'"


def to_xarray(data: np.ndarray | Mapping[str, Any]) -> Any:
    """A height map as an ``xarray.DataArray`` with physical coordinates and its metadata in ``attrs``.

    Dims ``("y", "x")``; coordinates at the pixel centres,
    ``x = x_offset + (i + 0.5) * x_length / width``, in ``lateral_unit`` (``coords["x"].attrs["units"]``);
    ``attrs["units"]`` the height unit; every other metadata key in ``attrs`` with its value
    unchanged, so ``from_xarray(to_xarray(d))`` equals ``d``. Missing points stay NaN. A Dask
    height map stays lazy. ``da.pint.quantify()`` (pint-xarray) reads the units: ``"um"``,
    ``"µm"``, ``"Å"`` and ``""`` (no unit) are all pint units; ``.pint.dequantify()`` writes
    pint's names (``"micrometer"``), which :func:`from_xarray` turns back into ``"um"``.

    netCDF: ``da.to_netcdf(path)`` (xarray's scipy engine, netCDF 3) stores only strings,
    numbers and 1-D lists or arrays of numbers as attributes; it refuses ``None``, dicts,
    datetimes, paths, complex numbers, lists of strings, arrays of two or more dimensions and
    ints beyond 32 bits (drop those attributes first, or save to NPZ, which keeps everything). Of
    what it writes, reading back gives: ints as ``numpy.int32``, floats as ``numpy.float64``,
    bools as ``numpy.int8``, bytes as ``str``, lists and tuples as arrays, int64 arrays as int32,
    numpy scalars as their own type where netCDF 3 has it (float32, float64, int32, int16, int8)
    and else as the signed type of their size (int64 as int32).
    Heights of dtype float64, float32, int32, int16, int8 and bool come back as they were;
    unsigned heights come back as the signed integers of their size, int64 and uint64 ones as
    int32 (refused when a value does not fit); float16 and complex heights are refused. The
    coordinates and units come back exactly, so lengths and offsets do too.

    Parameters
    ----------
    data : numpy.ndarray, dask.array.Array or mapping
        A 2-D height map, or a dict with a ``"height_map"`` array and metadata.

    Returns
    -------
    xarray.DataArray
        Named ``"height_map"``.

    Raises
    ------
    ImportError
        xarray is not installed.
    TypeError, ValueError
        ``data`` is not a height map (the message says why).
    """
    try:
        import xarray as xr
    except ImportError as exc:
        raise ImportError(XARRAY_MISSING) from exc
    heights, meta = split_height_map(data, lazy=True)
    coords, attrs = labels(meta, heights.shape)
    variables = {dim: xr.Variable((dim,), values, attrs=a) for dim, (values, a) in coords.items()}
    return xr.DataArray(heights, dims=DIMS, coords=variables, attrs=attrs, name=HEIGHT_MAP)


def from_xarray(da: Any) -> dict[str, Any]:
    """``{"height_map": array, **metadata}`` from a DataArray: the inverse of :func:`to_xarray`.

    The coordinates and ``attrs["units"]`` are the truth: after ``.sel``, ``.isel`` or a unit
    conversion, the lengths, offsets and units are computed from them (evenly spaced
    coordinates; a decreasing axis is flipped back to increasing). Dims ``("x", "y")`` are
    transposed. A Dask-backed DataArray stays lazy. Coordinates other than ``x`` and ``y`` are
    left out. ``tmd_nb.save(da, path)`` calls this.

    Parameters
    ----------
    da : xarray.DataArray or xarray.Dataset
        Dims ``y`` and ``x``; a Dataset gives its ``"height_map"`` variable.

    Returns
    -------
    dict
        The height map and its metadata, as :func:`tmd_nb.load` returns them.

    Raises
    ------
    ValueError
        Other dims, unevenly spaced coordinates, coordinates without units or with different
        units, an attribute ``"height_map"``.
    TypeError
        The DataArray holds a pint Quantity (call ``.pint.dequantify()`` first).
    """
    return from_labelled(da)
