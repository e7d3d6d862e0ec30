"""Height maps as labelled arrays, without importing xarray: the coordinate rule, both ways.

:func:`tmd_nb.to_xarray` builds an ``xarray.DataArray`` from the parts this module computes, and
:func:`from_labelled` (``tmd_nb.from_xarray``) reads any object shaped like a DataArray (``dims``,
``coords``, ``attrs``, ``data``) back into ``{"height_map": array, **metadata}``. ``tmd_nb.save``
calls it on a DataArray, so the format layer never imports xarray.

The mapping (``docs/FORMAT.md``, "Physical keys"):

dimensions
    ``("y", "x")``: rows, then columns.
coordinates
    Pixel centres: ``x[i] = x_offset + (i + 0.5) * x_length / width`` (and ``y`` likewise), float64,
    in ``lateral_unit``, each with ``attrs["units"]`` = ``lateral_unit`` (CF style, so
    ``da.pint.quantify()`` reads it). An axis whose length is unknown has no coordinate.
``attrs["units"]``
    The height unit, when the metadata states it or gives lengths (the TrueMap default, mm,
    applies); absent otherwise.
every other metadata key
    In ``attrs``, the value itself (same type). The physical keys stay there too, as given. A key
    ``"units"``, or one starting with ``"tmd_nb_"``, is stored as ``"tmd_nb_" + key``.

Reading back, the coordinates and ``units`` are the truth: the physical keys in ``attrs`` are
kept only when they still give exactly those coordinates and units (so ``from_xarray(to_xarray(d))``
equals ``d``); after ``.sel``, ``.isel``, ``.pint.to(...)`` or anything else that changed them,
lengths, offsets and units are computed from the coordinates (evenly spaced, in either
direction: a decreasing axis is flipped back). pint's unit names (``"micrometer"``) come back as
the short ones (``"um"``).

This module imports only numpy and the standard library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..heightmap import HEIGHT_MAP, is_dask_array, keys_text
from .units import physical

__all__ = [
    "DIMS",
    "ESCAPE",
    "attr_name",
    "coordinates",
    "from_labelled",
    "height_units",
    "is_labelled",
    "key_name",
    "labels",
    "short_unit",
]

#: Dimension names of a height map: rows, then columns.
DIMS = ("y", "x")
#: Prefix of the attribute holding a metadata key that would clash with a CF attribute.
ESCAPE = "tmd_nb_"
_RESERVED = frozenset({"units"})
#: pint's names for the units of the convention (what ``.pint.dequantify()`` writes).
_PINT_NAMES = {
    "kilometer": "km",
    "meter": "m",
    "centimeter": "cm",
    "millimeter": "mm",
    "micrometer": "um",
    "nanometer": "nm",
    "angstrom": "Å",
    "picometer": "pm",
    "dimensionless": "",
    "volt": "V",
}


def attr_name(key: str) -> str:
    """The attribute that holds metadata key ``key`` (``"units"`` -> ``"tmd_nb_units"``)."""
    return ESCAPE + key if key in _RESERVED or key.startswith(ESCAPE) else key


def key_name(attr: str) -> str:
    """The metadata key held by attribute ``attr``: the inverse of :func:`attr_name`."""
    return attr[len(ESCAPE) :] if attr.startswith(ESCAPE) else attr


def short_unit(unit: str) -> str:
    """A unit as the convention writes it: pint's ``"micrometer"`` -> ``"um"``; others unchanged."""
    return _PINT_NAMES.get(unit.strip(), unit.strip())


def _same_unit(found: Any, expected: str | None) -> bool:
    """Whether unit attribute ``found`` names ``expected`` (pint's long names included)."""
    if not isinstance(found, str) or expected is None:
        return False
    return found == expected or _micro(short_unit(found)) == _micro(short_unit(expected))


def _micro(unit: str) -> str:
    """``"µm"`` and ``"μm"`` written ``"um"``."""
    return unit.replace("\u00b5", "u").replace("\u03bc", "u")


def coordinates(meta: Mapping[str, Any], shape: tuple[int, int]) -> dict[str, tuple[np.ndarray, str]]:
    """``{dim: (pixel centres, lateral unit)}`` for each axis whose length ``meta`` gives."""
    px = physical(meta)
    axes = (("y", shape[0], px.y_length, px.y_offset), ("x", shape[1], px.x_length, px.x_offset))
    return {
        dim: (offset + (np.arange(n, dtype=np.float64) + 0.5) * (length / max(n, 1)), px.lateral_unit)
        for dim, n, length, offset in axes
        if length is not None
    }


def height_units(meta: Mapping[str, Any]) -> str | None:
    """The ``units`` attribute of a height map with metadata ``meta``: the height unit, if known."""
    px = physical(meta)
    return px.height_unit if px.height_known else None


def labels(
    meta: Mapping[str, Any], shape: tuple[int, int]
) -> tuple[dict[str, tuple[np.ndarray, dict[str, str]]], dict[Any, Any]]:
    """``({dim: (pixel centres, coordinate attrs)}, attrs)`` of a height map of ``shape`` with metadata ``meta``."""
    coords = {dim: (values, {"units": unit}) for dim, (values, unit) in coordinates(meta, shape).items()}
    attrs = {attr_name(k) if isinstance(k, str) else k: v for k, v in meta.items()}
    units = height_units(meta)
    if units is not None:
        attrs["units"] = units
    return coords, attrs


def is_labelled(value: Any) -> bool:
    """Whether ``value`` looks like an xarray DataArray or Dataset (checked without importing xarray)."""
    return type(value).__module__.split(".")[0] == "xarray" and hasattr(value, "dims") and hasattr(value, "attrs")


def _axis(values: np.ndarray, dim: str, what: str) -> tuple[float, float, bool]:
    """``(length, offset, decreasing)`` of an evenly spaced coordinate of two or more pixel centres."""
    values = values.astype(np.float64)
    steps = np.diff(values)
    step = (values[-1] - values[0]) / (len(values) - 1)
    slack = 1e-6 * abs(step) + 8 * np.finfo(np.float64).eps * float(np.max(np.abs(values)))
    if not np.isfinite(step) or step == 0 or np.max(np.abs(steps - step)) > slack:
        raise ValueError(f"{what}: the {dim} coordinates are not evenly spaced; a height map needs a regular grid")
    if step < 0:
        values, step = values[::-1], -step
    return float(step * len(values)), float(values[0] - step / 2), bool(steps[0] < 0)


def from_labelled(da: Any, what: str = "the DataArray") -> dict[str, Any]:
    """``{"height_map": array, **metadata}`` from an xarray DataArray (see the module docstring).

    A Dataset gives its ``"height_map"`` variable. The heights stay as they are: a Dask-backed
    array stays lazy (``tmd_nb.save`` streams it), a numpy one is not copied. Coordinates other
    than ``x`` and ``y`` (the scalar ``y`` a ``.sel`` leaves, say) are not metadata and are left out.
    """
    if hasattr(da, "data_vars"):  # a Dataset: the variable tmd_nb's engine names height_map
        if HEIGHT_MAP not in da.data_vars:
            raise ValueError(f"{what} has no 'height_map' variable (variables: {keys_text(da.data_vars, 8)})")
        da = da[HEIGHT_MAP]
    dims = tuple(da.dims)
    if sorted(dims) != sorted(DIMS):
        raise ValueError(f"{what} has dims {dims}; a height map has dims ('y', 'x')")
    if dims != DIMS:
        da = da.transpose(*DIMS)
    data = da.data
    if type(data).__module__.split(".")[0] == "pint":
        raise TypeError(f"{what} holds a pint Quantity; call .pint.dequantify() first")
    heights = data if is_dask_array(data) else np.asarray(data)
    attrs = dict(da.attrs)
    if HEIGHT_MAP in attrs:
        raise ValueError(f"{what} has an attribute 'height_map', which would replace the heights; rename it")
    meta = {key_name(k) if isinstance(k, str) else k: v for k, v in attrs.items() if k != "units"}
    meta, flips = _physical_keys(meta, da, heights.shape, attrs.get("units"), what)
    if flips:
        heights = heights[tuple(slice(None, None, -1) if dim in flips else slice(None) for dim in DIMS)]
    return {HEIGHT_MAP: heights, **meta}


def _physical_keys(
    meta: dict[str, Any], da: Any, shape: tuple[int, int], units: Any, what: str
) -> tuple[dict[str, Any], set[str]]:
    """``meta`` with the physical keys made to agree with the coordinates and ``units`` of ``da``.

    Also returns the dimensions whose coordinates decrease (the heights are flipped along them).
    """
    found: dict[str, tuple[np.ndarray, Any]] = {}
    for dim in DIMS:
        if dim in da.coords:
            coord = da.coords[dim]
            if tuple(coord.dims) != (dim,):
                raise ValueError(f"{what}: the {dim} coordinate has dims {tuple(coord.dims)}, not ({dim!r},)")
            found[dim] = (np.asarray(coord.values), coord.attrs.get("units"))
    expected = coordinates(meta, shape)
    flips: set[str] = set()
    same = found.keys() == expected.keys() and all(
        found[d][0].dtype == np.float64
        and np.array_equal(found[d][0], expected[d][0])
        and _same_unit(found[d][1], expected[d][1])
        for d in found
    )
    if not same:
        for dim, (_, unit) in found.items():
            if not isinstance(unit, str):
                raise ValueError(f"{what}: the {dim} coordinate has no 'units' attribute (a length unit, e.g. 'mm')")
        lateral = {short_unit(unit) for _, unit in found.values()}
        if len(lateral) > 1:
            raise ValueError(f"{what}: the x and y coordinates have different units ({', '.join(sorted(lateral))})")
        for key in ("x_length", "y_length", "x_offset", "y_offset", "lateral_unit"):
            meta.pop(key, None)
        if lateral:
            meta["lateral_unit"] = lateral.pop()
        for dim, (values, _) in found.items():
            if values.size >= 2:
                meta[f"{dim}_length"], meta[f"{dim}_offset"], decreasing = _axis(values, dim, what)
                if decreasing:
                    flips.add(dim)
    if isinstance(units, str) and not _same_unit(units, height_units(meta)):
        meta["height_unit"] = short_unit(units)
    return meta, flips
