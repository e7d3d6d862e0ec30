"""Typed metadata as plain JSON: what JSON holds natively stays itself, the rest gets a tag.

A value JSON holds natively (str, finite float, int within +-2**53, bool, None, and lists and
str-keyed dicts of such values) is written as itself, so that anyone can read it with
``json.loads``. Every other supported type becomes a tagged object
``{"__tmd_type__": "<tag>", ...}``; see ``docs/FORMAT.md`` for the list. A user dict that
happens to contain the tag key is itself wrapped in a ``"dict"`` tag, so it round-trips too.
Arrays are not put into the JSON: the encoder hands them back to be stored as archive
members and leaves ``{"__tmd_type__": "ndarray", "member": "<name>"}`` in their place.

Only exact types are accepted (``type(v) is int``, not an ``IntEnum``, nor a subclass of
``np.float64`` or ``np.str_``): a subclass would come back as its base class, and silent coercion
is exactly what this format exists to avoid.

Limits (the same on both sides: what :func:`encode` accepts, :func:`loads` and :func:`decode` read)
    * nesting: :data:`MAX_DEPTH` levels of keys and items (:data:`MAX_JSON_DEPTH` levels of JSON);
    * the JSON text: :data:`MAX_TEXT_BYTES` bytes as stored in the archive member;
    * the number of JSON values, counted before any is built: :data:`MAX_VALUES`;
    * time zones: keys of the zone database only (``"Europe/Paris"``; at most 64 characters).

Decoding is iterative (no recursion, whatever the depth of the data or of the caller's stack)
and stops at the first problem with one short message naming the key path (see SECURITY.md).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import math
import pathlib
import re
import threading
import zoneinfo
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..heightmap import is_dask_array
from .npyfile import is_array_kind  # what the NPY layer stores is what metadata may hold

__all__ = [
    "MAX_DEPTH",
    "MAX_JSON_DEPTH",
    "MAX_TEXT_BYTES",
    "MAX_VALUES",
    "TAG",
    "InvalidJSON",
    "check_json_text",
    "decode",
    "encode",
    "is_array_kind",
    "loads",
]

TAG = "__tmd_type__"
#: Levels of nesting of keys and items (a top-level key is level 1).
MAX_DEPTH = 200
#: Levels of JSON nesting that :data:`MAX_DEPTH` levels of tagged values can need (tuples and
#: escaped dicts take two each; a datetime its time zone object).
MAX_JSON_DEPTH = 2 * MAX_DEPTH + 4
#: Bytes of JSON text, as stored in the archive member (UTF-32 in tmd_nb's files: 4 Mi characters).
MAX_TEXT_BYTES = 16 << 20
#: JSON values in one metadata text, counted (from above) before any of them is built.
MAX_VALUES = 1_000_000
# A JSON string, escapes included, or an unterminated one up to the end of the text. Possessive
# quantifiers and the optional closing quote mean a match never fails once started: linear time,
# even for text such as '"\\"\\"\\"...', where a search that could fail would restart at every quote.
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_SAFE_INT = 2**53
_MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")
_PATH_TYPES: dict[type, str] = {
    pathlib.PurePosixPath: "PurePosixPath",
    pathlib.PureWindowsPath: "PureWindowsPath",
    pathlib.PosixPath: "PosixPath",
    pathlib.WindowsPath: "WindowsPath",
}
_PATH_BY_NAME = {name: cls for cls, name in _PATH_TYPES.items()}


def _key_path(path: tuple[Any, ...] | list[Any]) -> str:
    """``['a'][0]['b']`` for messages: each key cut to 24 characters, a deep path cut in the middle."""

    def one(key: Any) -> str:
        return f"[{key[:24]!r}\u2026]" if isinstance(key, str) and len(key) > 24 else f"[{key!r}]"

    if len(path) > 6:
        return "".join(one(p) for p in path[:3]) + f"[...{len(path) - 6} more...]" + "".join(one(p) for p in path[-3:])
    return "".join(one(p) for p in path) or "<top level>"


def _short(message: str, limit: int = 120) -> str:
    """A message for an error, at most ``limit`` characters."""
    return message if len(message) <= limit else message[: limit - 1] + "\u2026"


def _shown(x: Any, limit: int = 60) -> str:
    """The repr of a value from a file, for an error: at most ``limit`` characters, never huge to build."""
    if isinstance(x, (str, bytes)):
        x = x[:limit]
    elif not isinstance(x, (int, float, bool, type(None))):
        return f"a {type(x).__name__}"
    return _short(repr(x) if not isinstance(x, int) or x.bit_length() < 200 else "a huge int", limit)


# A zone key: names of the zone database ("Europe/Paris", "Etc/GMT+5", "posix/UTC"), never "..".
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+){0,3}")


@functools.lru_cache(maxsize=4096)
def _zone(key: Any) -> zoneinfo.ZoneInfo | None:
    """The zone of a database key, or None: the only zones stored and read.

    A key must look like one (letters, digits, ``_+-``, at most 4 parts, 64 characters) before
    :class:`zoneinfo.ZoneInfo` may look for it, so that a name such as ``"America"`` (a folder),
    ``"../etc"`` or 100,000 characters never reaches the file system as a path.
    """
    if type(key) is not str or len(key) > 64 or not _ZONE_KEY.fullmatch(key):
        return None
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, OSError, ValueError):
        return None


def _float_text(x: float) -> str:
    return repr(float(x))


def _tz_encode(tz: dt.tzinfo | None, path: tuple[Any, ...]) -> Any:
    """A tzinfo as JSON: None, an IANA key, or a fixed offset in seconds (with its name)."""
    if tz is None:
        return None
    if type(tz) is zoneinfo.ZoneInfo:
        key = tz.key
        if _zone(key) is None:
            raise TypeError(
                f"metadata value at {_key_path(path)} has a time zone {_shown(str(tz))} that is not a key of the "
                "IANA zone database, so it could not be read back; use a zone such as 'Europe/Paris'"
            )
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
        key = obj["zone"]
        # Only keys of the zone database: anything else ("America", "../etc", 100,000 characters)
        # would reach the file system through ZoneInfo.
        zone = _zone(key) if type(key) is str else None
        if zone is None:
            raise ValueError(f"unknown time zone {_shown(key)}")
        return zone
    seconds = _field(obj, "offset")
    if type(seconds) not in (int, float):
        raise ValueError(f"time zone offset {_shown(seconds, 40)} is not a number")
    offset = dt.timedelta(seconds=seconds)
    if offset == dt.timedelta(0) and "name" not in obj:
        return dt.UTC
    return dt.timezone(offset, _str(obj, "name")) if "name" in obj else dt.timezone(offset)


def encode(meta: Mapping[str, Any], reserved: set[str] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Encode a str-keyed mapping; return the JSON-ready dict and the arrays to store as members.

    Top-level arrays are stored under their own key as member name when that name is usable
    (not in ``reserved``, plain characters); any other array gets ``__array_<n>__``.
    Raises ``TypeError`` naming the key path and type of the first value it cannot represent.
    """
    reserved = set(reserved or ())
    arrays: dict[str, np.ndarray] = {}
    # Claim the usable top-level names first, so generated names never collide with them.
    for key in meta:
        if type(key) is not str:
            raise TypeError(
                f"metadata key {_short(repr(key), 60)} has type {type(key).__name__}; only str keys can be stored"
            )
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
        # Exact numpy scalar types only (t is its dtype's own type): a subclass would come back as its base.
        if isinstance(value, np.generic) and t is value.dtype.type and is_array_kind(value.dtype):
            out = {
                TAG: "numpy.scalar",
                "dtype": value.dtype.str,
                "base64": base64.b64encode(value.tobytes()).decode("ascii"),
                "value": _scalar_preview(value),
            }
            if np.dtype(value.dtype.str).type is not t:  # e.g. np.longlong, whose dtype reads back as int64
                out["type"] = t.__name__
            return out
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


# numpy scalar types by name, for the "type" field of a numpy.scalar whose dtype string reads back
# as another type of the same layout (np.longlong is stored as "<i8", which reads back as int64).
_SCALAR_TYPES = {
    cls.__name__: cls
    for cls in {np.dtype(code).type for code in np.typecodes["All"]}
    if is_array_kind(np.dtype(cls)) and np.dtype(cls).kind not in "USMm"
}


def check_json_text(text: str, where: str = "metadata") -> None:
    """Refuse a JSON text with more than :data:`MAX_VALUES` values or :data:`MAX_JSON_DEPTH` levels.

    Runs before anything is parsed, in a few linear passes over the text (no value is built):
    strings are removed, then the values are counted from above (one per comma, two per ``[``
    or ``{``, plus one) and the nesting measured on what is left. Raises ``ValueError``.
    """
    bare = _JSON_STRING.sub("", text)
    opened = bare.count("[") + bare.count("{")
    values = bare.count(",") + 2 * opened + 1
    if values > MAX_VALUES:
        raise ValueError(f"{where} holds about {values:,} JSON values, more than the {MAX_VALUES:,} allowed")
    if opened > MAX_JSON_DEPTH:
        brackets = np.frombuffer(_NOT_BRACKET.sub("", bare).encode("ascii"), dtype=np.uint8)
        steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1).astype(np.int32)
        depth = int(np.cumsum(steps).max(initial=0))
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{where} is nested {depth} levels deep, more than the {MAX_JSON_DEPTH} allowed")


def loads(text: str, where: str = "metadata") -> Any:
    """``json.loads`` within the limits: :func:`check_json_text` first, then the parser.

    The standard parser recurses once per level of JSON nesting and counts against the
    caller's recursion limit; if the caller's stack is already too deep for the (at most
    :data:`MAX_JSON_DEPTH`) levels, the text is parsed again on a fresh thread, whose stack starts
    empty. Raises ``ValueError`` (one short line) for text beyond the limits, and its subclass
    :class:`InvalidJSON` for text that is not JSON.
    """
    import json

    check_json_text(text, where)
    problem = None
    try:
        return json.loads(text)
    except RecursionError:
        pass
    except ValueError as exc:
        problem = _short(str(exc), 200)
    if problem is None:
        outcome: list[Any] = []

        def parse() -> None:
            try:
                outcome.append(json.loads(text))
            except (ValueError, RecursionError) as exc:
                problem_box.append(_short(str(exc), 200))

        problem_box: list[str] = []
        worker = threading.Thread(target=parse, name="tmd_nb-json")
        try:
            worker.start()
        except RuntimeError:  # no thread to be had (memory short): the caller's stack is what there is
            problem_box.append(f"nested too deeply for the stack left at this call depth (at most {MAX_JSON_DEPTH})")
        else:
            worker.join()
        if outcome:
            return outcome[0]
        problem = problem_box[0] if problem_box else "the parser failed"
    raise InvalidJSON(f"{where} is not valid JSON: {problem}")


class InvalidJSON(ValueError):
    """The metadata text is not JSON at all (as opposed to JSON beyond the limits)."""


class _Frame:
    """One container being decoded: its remaining (slot, value) pairs and the slot being worked on."""

    __slots__ = ("container", "items", "slot", "tuple")

    def __init__(self, container: Any, is_tuple: bool = False) -> None:
        self.container = container
        self.items: Iterator[tuple[Any, Any]] = (
            iter(container.items()) if type(container) is dict else enumerate(container)
        )
        self.slot: Any = None
        self.tuple = is_tuple


_END = object()


def decode(
    obj: dict[str, Any], arrays: Mapping[str, np.ndarray], where: str = "metadata", used: set[str] | None = None
) -> dict[str, Any]:
    """Invert :func:`encode`; the names of the array members it refers to are added to ``used``.

    ``obj`` (fresh from ``json.loads``) is decoded in place, without recursion: plain lists and
    dicts are reused, tagged objects replaced by their values. Raises ``ValueError`` with the
    key path of the first malformed value, in one short message (nothing is chained to it).
    """
    used = set() if used is None else used
    if type(obj) is not dict:
        raise ValueError(f"{where} is not a JSON object")
    stack = [_Frame(obj)]
    problem = None
    while stack:
        frame = stack[-1]
        step: Any = next(frame.items, _END)
        if step is _END:
            stack.pop()
            if frame.tuple:
                parent = stack[-1]
                parent.container[parent.slot] = tuple(frame.container)
            continue
        slot, value = step
        frame.slot = slot
        if len(stack) > MAX_DEPTH:  # what encode refuses: a value below MAX_DEPTH levels of keys
            problem = f"is nested more than {MAX_DEPTH} levels deep"
            break
        t = type(value)
        if value is None or t is bool or t is int or t is float or t is str:
            continue
        if t is list:
            stack.append(_Frame(value))
            continue
        if t is not dict:
            problem = f"has unexpected JSON type {t.__name__}"
            break
        if TAG not in value:
            stack.append(_Frame(value))
            continue
        tag = value[TAG]
        if tag == "dict" or tag == "tuple":
            items = value.get("items")
            if type(items) is not (dict if tag == "dict" else list):
                problem = f"has a malformed {tag!r} value: items is not {'an object' if tag == 'dict' else 'a list'}"
                break
            if tag == "dict":
                frame.container[slot] = items
            stack.append(_Frame(items, is_tuple=tag == "tuple"))
            continue
        try:
            frame.container[slot] = _decode_leaf(value, tag, arrays, used)
        except (ValueError, OverflowError) as exc:  # what damage raises (binascii.Error is a ValueError)
            problem = f"has a malformed {_shown(tag, 40)} value: {_short(str(exc), 160)}"
            break
    if problem is not None:
        path = [frame.slot for frame in stack]
        raise ValueError(f"{where} at {_key_path(path)} {problem}")
    return obj


def _decode_leaf(value: dict[str, Any], tag: Any, arrays: Mapping[str, np.ndarray], used: set[str]) -> Any:
    """A tagged value that holds no other metadata values (everything but "dict" and "tuple")."""
    if tag == "int":
        return int(_str(value, "hex"), 16)
    if tag == "float":
        return float(_str(value, "value"))
    if tag == "complex":
        return complex(float(_str(value, "real")), float(_str(value, "imag")))
    if tag == "bytes":
        return base64.b64decode(_str(value, "base64"), validate=True)
    if tag == "datetime":
        naive = dt.datetime.fromisoformat(_str(value, "value"))
        return naive.replace(tzinfo=_tz_decode(value.get("tz")), fold=_fold(value))
    if tag == "date":
        return dt.date.fromisoformat(_str(value, "value"))
    if tag == "time":
        clock = dt.time.fromisoformat(_str(value, "value"))
        return clock.replace(tzinfo=_tz_decode(value.get("tz")), fold=_fold(value))
    if tag == "timedelta":
        return dt.timedelta(
            days=_int(value, "days"), seconds=_int(value, "seconds"), microseconds=_int(value, "microseconds")
        )
    if tag == "path":
        cls = _known(_PATH_BY_NAME, _str(value, "class"), "path class")
        try:
            return cls(_str(value, "value"))
        except NotImplementedError:  # a concrete path of the other platform (pathlib.UnsupportedOperation)
            pure = pathlib.PurePosixPath if cls is pathlib.PosixPath else pathlib.PureWindowsPath
            return pure(_str(value, "value"))
    if tag == "numpy.str_":
        return np.str_(_str(value, "value"))
    if tag == "numpy.bytes_":
        return np.bytes_(base64.b64decode(_str(value, "base64"), validate=True))
    if tag == "numpy.scalar":
        dtype = _dtype(_str(value, "dtype"))
        if not is_array_kind(dtype) or dtype.kind in "US":
            raise ValueError(f"dtype {dtype} is not allowed")
        if "type" in value:
            cls = _known(_SCALAR_TYPES, _str(value, "type"), "numpy type")
            if np.dtype(cls).kind != dtype.kind or np.dtype(cls).itemsize != dtype.itemsize:
                raise ValueError(f"type {cls.__name__} does not match dtype {dtype}")
            dtype = np.dtype(cls).newbyteorder(dtype.byteorder)
        raw = base64.b64decode(_str(value, "base64"), validate=True)
        if len(raw) != dtype.itemsize:
            raise ValueError(f"{len(raw)} bytes for a {dtype.itemsize}-byte scalar")
        return np.frombuffer(raw, dtype=dtype)[0]
    if tag == "ndarray":
        name = _str(value, "member")
        if name not in arrays:
            raise ValueError(f"it refers to a missing array member {_shown(name)}")
        used.add(name)
        return arrays[name]
    raise ValueError(f"unknown type tag {_shown(tag)}")


def _fold(value: dict[str, Any]) -> int:
    fold = value.get("fold", 0)
    if fold not in (0, 1) or type(fold) is not int:
        raise ValueError(f"fold must be 0 or 1, not {_shown(fold, 20)}")
    return fold


# A tagged object's fields, read so that a missing field or one of the wrong JSON type is a
# ValueError (damage in the file), never a KeyError or TypeError: those are left to tmd_nb's own bugs.


def _field(value: dict[str, Any], key: str) -> Any:
    if key not in value:
        raise ValueError(f"its field {key!r} is missing")
    return value[key]


def _str(value: dict[str, Any], key: str) -> str:
    x = _field(value, key)
    if type(x) is not str:
        raise ValueError(f"its field {key!r} is not a string but {type(x).__name__}")
    return x


def _int(value: dict[str, Any], key: str) -> int:
    x = _field(value, key)
    if type(x) is not int:
        raise ValueError(f"its field {key!r} is not an integer but {type(x).__name__}")
    return x


def _known(table: Mapping[str, Any], name: str, what: str) -> Any:
    if name not in table:
        raise ValueError(f"unknown {what} {_shown(name, 40)}")
    return table[name]


def _dtype(text: str) -> np.dtype:
    try:  # numpy parses the text: only its own refusal is caught here
        return np.dtype(text)
    except TypeError:
        problem = f"{_shown(text, 40)} is not a numpy dtype"
    raise ValueError(problem)
