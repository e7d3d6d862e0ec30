"""What a height map is, for every layer: the rules the formats, the magics and the panels share.

A height map is a 2-D numpy array of a numeric dtype (bool, integer, float, complex). The
objects tmd_nb saves are either such an array or a str-keyed mapping holding one under
``"height_map"``, whose other entries are the metadata.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Literal, overload

import numpy as np

from .errors import FormatError

__all__ = [
    "HEIGHT_KINDS",
    "HEIGHT_MAP",
    "check_height_map_header",
    "exportable",
    "exportable_names",
    "height_map_of",
    "in_memory",
    "is_dask_array",
    "keys_text",
    "split_height_map",
]

HEIGHT_MAP = "height_map"
#: dtype kinds a height map may have: bool, signed and unsigned integer, float, complex.
HEIGHT_KINDS = frozenset("biufc")


def keys_text(keys: Iterable[Any], limit: int = 5) -> str:
    """``'a', 'b', ...``: the first ``limit`` keys, for a message (``none`` if there are none)."""
    keys = list(keys)
    return ", ".join(repr(k) for k in keys[:limit]) + (", ..." if len(keys) > limit else "") or "none"


def is_dask_array(value: Any) -> bool:
    """Whether ``value`` is a ``dask.array.Array`` (without importing dask: none exists unless it is loaded)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(value, module.Array)


def in_memory(data: Any) -> Any:
    """``data`` with a Dask height map, and Dask metadata values at its top level, computed to numpy.

    For the writers that need the whole array at once (TMD); NPY and NPZ stream Dask arrays instead.
    """
    if is_dask_array(data):
        return _computed(data)
    if isinstance(data, Mapping) and any(is_dask_array(v) for v in data.values()):
        return {
            k: (_computed(v) if k == HEIGHT_MAP else np.asarray(v.compute())) if is_dask_array(v) else v
            for k, v in data.items()
        }
    return data


def _computed(array: Any) -> np.ndarray:
    """A Dask height map computed; a masked one stays a ``MaskedArray``, which :func:`split_height_map`
    refuses (``np.asarray`` would drop its mask, and the masked points would be saved as heights)."""
    value = array.compute()
    return value if isinstance(value, np.ma.MaskedArray) else np.asarray(value)


@overload
def split_height_map(
    data: Any, what: str = ..., *, lazy: Literal[False] = ...
) -> tuple[np.ndarray, dict[str, Any]]: ...
@overload
def split_height_map(data: Any, what: str = ..., *, lazy: bool) -> tuple[Any, dict[str, Any]]: ...
def split_height_map(data: Any, what: str = "data", *, lazy: bool = False) -> tuple[Any, dict[str, Any]]:
    """Return the validated height map and the metadata (everything else) of ``data``.

    ``data`` is a 2-D numeric array or a str-keyed dict with a ``"height_map"`` entry. With
    ``lazy``, a ``dask.array.Array`` is accepted too and returned as it is (not computed), for
    the writers that stream it block by block.
    """
    if isinstance(data, Mapping):
        if HEIGHT_MAP not in data:
            raise ValueError(f"{what} has no 'height_map' entry (keys: {keys_text(data, 8)})")
        array = data[HEIGHT_MAP]
        meta = {k: v for k, v in data.items() if k != HEIGHT_MAP}
        what = f"{what}['height_map']"
    else:
        array, meta = data, {}
    if isinstance(array, np.ma.MaskedArray) or (
        is_dask_array(array) and isinstance(getattr(array, "_meta", None), np.ma.MaskedArray)
    ):
        raise TypeError(
            f"{what} is a masked array; save array.filled(np.nan) and the mask "
            "(np.ma.getmaskarray(array)) as a separate metadata entry instead"
        )
    dask = lazy and is_dask_array(array)  # kept lazy, for the writers that stream it
    if not dask:
        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"{what} must be a 2-D numpy array or a dict with a 'height_map' array, "
                f"not {type(array).__module__}.{type(array).__qualname__}"
            )
        array = np.asarray(array)  # a memmap or matrix becomes a plain view, no copy
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D, but has shape {array.shape} ({array.ndim}-D)")
    if array.dtype.kind not in HEIGHT_KINDS or array.dtype.fields is not None:
        raise TypeError(f"{what} has dtype {array.dtype}; a height map must be bool, integer, float or complex")
    if dask and any(math.isnan(n) for n in array.shape):
        raise ValueError(f"{what} is a Dask array of unknown shape {array.shape}; call compute_chunk_sizes() first")
    return array, meta


def height_map_of(value: Any) -> np.ndarray | None:
    """The height map in ``value``, if it has one, without ever raising.

    For listing what can be saved (completion, the panels' pickers): whatever the user's object
    does, this never raises and never reads the array's values.

    Parameters
    ----------
    value : object
        Anything: a 2-D numeric array, a dict with a ``"height_map"`` entry, or something else.

    Returns
    -------
    numpy.ndarray or None
        The array :func:`split_height_map` would accept in ``value`` (``value`` itself or its
        ``"height_map"``), or None.
    """
    try:
        return split_height_map(value)[0]
    except Exception:
        return None


def check_height_map_header(dtype: np.dtype, shape: tuple[int, ...], where: str) -> None:
    """Raise :class:`FormatError` unless a stored array's header describes a height map."""
    if len(shape) != 2:
        raise FormatError(f"{where} holds a {len(shape)}-D array of shape {shape}, not a 2-D height map")
    if dtype.kind not in HEIGHT_KINDS:
        raise FormatError(f"{where} holds dtype {dtype}, not a numeric height map")


def exportable(namespace: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[Any, np.ndarray]]:
    """``name -> (value, height map)`` of the user variables that can be saved, in namespace order.

    The one rule for what ``%tmd_export`` completes and the export panel lists: 2-D numeric
    arrays and dicts with a 2-D "height_map", under names not starting with ``_``.
    """
    found = {}
    for name, value in list(namespace.items()):
        if isinstance(name, str) and name.startswith(prefix) and not name.startswith("_"):
            array = height_map_of(value)
            if array is not None:
                found[name] = (value, array)
    return found


def exportable_names(namespace: Mapping[str, Any], prefix: str = "") -> list[str]:
    """User variables ``%tmd_export`` can save (see :func:`exportable`), sorted."""
    return sorted(exportable(namespace, prefix))
