"""Typed metadata as plain JSON: what JSON holds natively stays itself, the rest gets a tag.

A value JSON holds natively (str, finite float, int within +-2**53, bool, None, and lists and
str-keyed dicts of such values) is written as itself, so that anyone can read it with
``json.loads``. Every other supported type becomes a tagged object
``{"__tmd_type__": "<tag>", ...}``; see ``docs/FORMAT.md`` for the list. A user dict that
happens to contain the tag key is itself wrapped in a ``"dict"`` tag, so it round-trips too.
Arrays are not put into the JSON: the encoder hands them back to be stored as archive
members and leaves ``{"__tmd_type__": "ndarray", "member": "<name>"}`` in their place.

Only exact types are accepted (``type(v) is int``, not an ``IntEnum``): a subclass would come
back as its base class, and silent coercion is exactly what this format exists to avoid.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..heightmap import is_dask_array
from .npy import is_array_kind  # what the NPY layer stores is what metadata may hold

__all__ = ["MAX_DEPTH", "TAG", "decode", "encode", "is_array_kind"]

TAG = "__tmd_type__"
MAX_DEPTH = 200
_SAFE_INT = 2**53
_MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")
_PATH_TYPES: dict[type, str] = {
    pathlib.PurePosixPath: "PurePosixPath",
    pathlib.PureWindowsPath: "PureWindowsPath",
    pathlib.PosixPath: "PosixPath",
    pathlib.WindowsPath: "WindowsPath",
}
_PATH_BY_NAME = {name: cls for cls, name in _PATH_TYPES.items()}


def _key_path(path: tuple[Any, ...]) -> str:
    return "".join(f"[{p!r}]" for p in path) or "<top level>"


def _float_text(x: float) -> str:
    return repr(float(x))


def _tz_encode(tz: dt.tzinfo | None, path: tuple[Any, ...]) -> Any:
    """A tzinfo as JSON: None, an IANA key, or a fixed offset in seconds (with its name)."""
    if tz is None:
        return None
    key = getattr(tz, "key", None)
    if type(tz).__name__ == "ZoneInfo" and isinstance(key, str):
        return {"zone": key}
    if type(tz) is dt.timezone:
        offset = tz.utcoffset(None)
        out: dict[str, Any] = {"offset": offset.total_seconds()}
        if tz is not dt.UTC and tz.tzname(None) != dt.timezone(offset).tzname(None):
            out["name"] = tz.tzname(None)
        return out
    raise TypeError(
        f"metadata value at {_key_path(path)} has an unsupported time zone of type "
        f"{type(tz).__module__}.{type(tz).__qualname__}; use datetime.timezone or zoneinfo.ZoneInfo"
    )


def _tz_decode(obj: Any) -> dt.tzinfo | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ValueError(f"bad time zone {obj!r}")
    if "zone" in obj:
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(obj["zone"])
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ValueError(f"unknown time zone {obj['zone']!r}") from exc
    offset = dt.timedelta(seconds=float(obj["offset"]))
    if offset == dt.timedelta(0) and "name" not in obj:
        return dt.UTC
    return dt.timezone(offset, obj["name"]) if "name" in obj else dt.timezone(offset)


def encode(meta: Mapping[str, Any], reserved: set[str] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Encode a str-keyed mapping; return the JSON-ready dict and the arrays to store as members.

    Top-level arrays are stored under their own key as member name when that name is usable
    (not in ``reserved``, plain characters); any other array gets ``__array_<n>__``.
    Raises ``TypeError`` naming the key path and type of the first value it cannot represent.
    """
    reserved = set(reserved or ())
    arrays: dict[str, np.ndarray] = {}
    # Claim the usable top-level names first, so generated names never collide with them.
    for key, value in meta.items():
        if (
            (type(value) is np.ndarray or is_dask_array(value))
            and _MEMBER_NAME.fullmatch(key)
            and key not in reserved
            and not re.fullmatch(r"__array_\d+__", key)
        ):
            arrays[key] = value
    counter = iter(range(1 << 62))

    def store(value: np.ndarray, path: tuple[Any, ...]) -> dict[str, Any]:
        if not is_array_kind(value.dtype):
            raise TypeError(
                f"metadata value at {_key_path(path)} is an array of dtype {value.dtype}, which cannot "
                "be stored without pickle; use a numeric, bool or str dtype"
            )
        if len(path) == 1 and arrays.get(path[0]) is value:
            name = path[0]
        else:
            name = next(n for n in (f"__array_{i}__" for i in counter) if n not in arrays and n not in reserved)
            arrays[name] = value
        return {TAG: "ndarray", "member": name}

    def enc(value: Any, path: tuple[Any, ...]) -> Any:
        if len(path) > MAX_DEPTH:
            raise ValueError(f"metadata at {_key_path(path[:3])}... is nested more than {MAX_DEPTH} levels deep")
        t = type(value)
        if value is None or t is bool or t is str:
            return value
        if t is int:
            return value if -_SAFE_INT <= value <= _SAFE_INT else {TAG: "int", "hex": hex(value)}
        if t is float:
            return value if math.isfinite(value) else {TAG: "float", "value": _float_text(value)}
        if t is complex:
            return {TAG: "complex", "real": _float_text(value.real), "imag": _float_text(value.imag)}
        if t is bytes:
            return {TAG: "bytes", "base64": base64.b64encode(value).decode("ascii")}
        if t is list:
            return [enc(v, (*path, i)) for i, v in enumerate(value)]
        if t is tuple:
            return {TAG: "tuple", "items": [enc(v, (*path, i)) for i, v in enumerate(value)]}
        if t is dict:
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise TypeError(
                        f"metadata dict at {_key_path(path)} has a key {k!r} of type "
                        f"{type(k).__name__}; only str keys can be stored"
                    )
                out[k] = enc(v, (*path, k))
            return {TAG: "dict", "items": out} if TAG in out else out
        if t is dt.datetime:
            out = {
                TAG: "datetime",
                "value": value.replace(tzinfo=None).isoformat(),
                "tz": _tz_encode(value.tzinfo, path),
            }
            if value.fold:
                out["fold"] = 1
            return out
        if t is dt.date:
            return {TAG: "date", "value": value.isoformat()}
        if t is dt.time:
            out = {TAG: "time", "value": value.replace(tzinfo=None).isoformat(), "tz": _tz_encode(value.tzinfo, path)}
            if value.fold:
                out["fold"] = 1
            return out
        if t is dt.timedelta:
            return {TAG: "timedelta", "days": value.days, "seconds": value.seconds, "microseconds": value.microseconds}
        if t in _PATH_TYPES:
            return {TAG: "path", "class": _PATH_TYPES[t], "value": str(value)}
        if t is np.ndarray or is_dask_array(value):  # a Dask array is streamed into its member
            return store(value, path)
        if t is np.str_:
            return {TAG: "numpy.str_", "value": str(value)}
        if t is np.bytes_:
            return {TAG: "numpy.bytes_", "base64": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, np.generic) and is_array_kind(value.dtype):
            return {
                TAG: "numpy.scalar",
                "dtype": value.dtype.str,
                "base64": base64.b64encode(value.tobytes()).decode("ascii"),
                "value": _scalar_preview(value),
            }
        raise TypeError(
            f"metadata value at {_key_path(path)} has type {t.__module__}.{t.__qualname__}, which tmd_nb "
            "cannot store losslessly (supported: None, bool, int, float, complex, str, bytes, list, tuple, "
            "str-keyed dict, datetime/date/time/timedelta, pathlib paths, numpy scalars and arrays)"
        )

    encoded: dict[str, Any] = {}
    for key, value in meta.items():
        if type(key) is not str:
            raise TypeError(f"metadata key {key!r} has type {type(key).__name__}; only str keys can be stored")
        encoded[key] = enc(value, (key,))
    return encoded, arrays


def _scalar_preview(value: np.generic) -> Any:
    """A human-readable rendering of a numpy scalar, for readers without tmd_nb (ignored on load)."""
    item = value.item()
    if type(item) in (bool, int, str) or (type(item) is float and math.isfinite(item)):
        return item
    return str(value)


def decode(
    obj: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str = "metadata", used: set[str] | None = None
) -> dict[str, Any]:
    """Invert :func:`encode`; the names of the array members it refers to are added to ``used``.

    Raises ``ValueError`` with a key path for anything malformed.
    """
    used = set() if used is None else used

    def dec(value: Any, path: tuple[Any, ...]) -> Any:
        if len(path) > MAX_DEPTH:
            raise ValueError(f"{where} at {_key_path(path[:3])}... is nested more than {MAX_DEPTH} levels deep")
        t = type(value)
        if value is None or t in (bool, int, float, str):
            return value
        if t is list:
            return [dec(v, (*path, i)) for i, v in enumerate(value)]
        if t is not dict:
            raise ValueError(f"{where} at {_key_path(path)} has unexpected JSON type {t.__name__}")
        if TAG not in value:
            return {k: dec(v, (*path, k)) for k, v in value.items()}
        try:
            return _decode_tagged(value, path)
        except (KeyError, TypeError, ValueError, OverflowError, binascii.Error) as exc:
            raise ValueError(f"{where} at {_key_path(path)} has a malformed {value.get(TAG)!r} value: {exc}") from None

    def _decode_tagged(value: dict[str, Any], path: tuple[Any, ...]) -> Any:
        tag = value[TAG]
        if tag == "dict":
            items = value["items"]
            if type(items) is not dict:
                raise TypeError("items is not an object")
            return {k: dec(v, (*path, k)) for k, v in items.items()}
        if tag == "tuple":
            items = value["items"]
            if type(items) is not list:
                raise TypeError("items is not a list")
            return tuple(dec(v, (*path, i)) for i, v in enumerate(items))
        if tag == "int":
            return int(_str(value["hex"]), 16)
        if tag == "float":
            return float(_str(value["value"]))
        if tag == "complex":
            return complex(float(_str(value["real"])), float(_str(value["imag"])))
        if tag == "bytes":
            return base64.b64decode(_str(value["base64"]), validate=True)
        if tag == "datetime":
            naive = dt.datetime.fromisoformat(_str(value["value"]))
            return naive.replace(tzinfo=_tz_decode(value.get("tz")), fold=int(value.get("fold", 0)))
        if tag == "date":
            return dt.date.fromisoformat(_str(value["value"]))
        if tag == "time":
            clock = dt.time.fromisoformat(_str(value["value"]))
            return clock.replace(tzinfo=_tz_decode(value.get("tz")), fold=int(value.get("fold", 0)))
        if tag == "timedelta":
            return dt.timedelta(
                days=_int(value["days"]), seconds=_int(value["seconds"]), microseconds=_int(value["microseconds"])
            )
        if tag == "path":
            cls = _PATH_BY_NAME[_str(value["class"])]
            try:
                return cls(_str(value["value"]))
            except (NotImplementedError, TypeError):  # a concrete path of the other platform
                pure = pathlib.PurePosixPath if cls is pathlib.PosixPath else pathlib.PureWindowsPath
                return pure(_str(value["value"]))
        if tag == "numpy.str_":
            return np.str_(_str(value["value"]))
        if tag == "numpy.bytes_":
            return np.bytes_(base64.b64decode(_str(value["base64"]), validate=True))
        if tag == "numpy.scalar":
            dtype = np.dtype(_str(value["dtype"]))
            if not is_array_kind(dtype) or dtype.kind in "US":
                raise ValueError(f"dtype {dtype} is not allowed")
            raw = base64.b64decode(_str(value["base64"]), validate=True)
            if len(raw) != dtype.itemsize:
                raise ValueError(f"{len(raw)} bytes for a {dtype.itemsize}-byte scalar")
            return np.frombuffer(raw, dtype=dtype)[0]
        if tag == "ndarray":
            name = _str(value["member"])
            if name not in arrays:
                raise ValueError(f"it refers to a missing array member {name!r}")
            used.add(name)
            return arrays[name]
        raise ValueError(f"unknown type tag {tag!r}")

    if type(obj) is not dict:
        raise ValueError(f"{where} is not a JSON object")
    return {k: dec(v, (k,)) for k, v in obj.items()}


def _str(x: Any) -> str:
    if type(x) is not str:
        raise TypeError(f"expected a string, got {type(x).__name__}")
    return x


def _int(x: Any) -> int:
    if type(x) is not int:
        raise TypeError(f"expected an integer, got {type(x).__name__}")
    return x
