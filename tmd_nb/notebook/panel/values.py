"""Typed metadata values as the panels edit them: parse text as a type, render a value as text.

Pure functions, no widgets: what a row shows and what Save stores are decided here.
"""

from __future__ import annotations

import ast
import datetime as dt
from typing import Any

import numpy as np

from ...storage import metadata
from ..display import (
    count_text,
    short_repr,
)

__all__ = [
    "SUGGESTED_KEYS",
    "TYPE_NAMES",
    "VALUE_TYPES",
    "check_storable",
    "describe_value",
    "identical",
    "parse_value",
    "render_value",
]

#: Keys offered in the key field of a metadata row, with the type they usually have.
#: The unit keys are the convention's own (``units`` is only a shorthand for both; docs/FORMAT.md).
SUGGESTED_KEYS: dict[str, str] = {
    "x_length": "float",
    "y_length": "float",
    "lateral_unit": "str",
    "height_unit": "str",
    "source": "str",
    "timestamp": "datetime",
}

#: (label, type name) of the type dropdown of a metadata row.
VALUE_TYPES: list[tuple[str, str]] = [
    ("str", "str"),
    ("int", "int"),
    ("float", "float"),
    ("float32", "float32"),
    ("float64", "float64"),
    ("bool", "bool"),
    ("None", "None"),
    ("datetime", "datetime"),
    ("date", "date"),
    ("literal", "literal"),
]
TYPE_NAMES = {name for _, name in VALUE_TYPES}
#: The value field's hint for each type that needs one (the dropdown's labels stay short).
PLACEHOLDERS = {"literal": "a Python literal: [1, 2], (0.5, 'mm'), 1+2j, b'raw'"}
#: numpy float scalars the editor keeps in their own dtype, shown by their shortest repr in it.
NUMPY_FLOATS: dict[str, type[np.floating]] = {"float32": np.float32, "float64": np.float64}

LITERAL_LIMIT = 500  # longest repr shown as an editable literal


def parse_value(kind: str, text: str) -> Any:
    """Parse the text of a metadata row as ``kind`` (one of :data:`VALUE_TYPES`).

    Raises ``ValueError`` with a short plain reason when the text is not a value of that type.
    """
    stripped = text.strip()
    if kind == "str":
        return text
    if kind == "None":
        if stripped:
            raise ValueError("a None value takes no text; clear the field or choose another type")
        return None
    if kind == "int":
        try:
            return int(stripped)
        except ValueError:
            raise ValueError(f"{quote(text)} is not a whole number") from None
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            raise ValueError(f"{quote(text)} is not a number") from None
    if kind in NUMPY_FLOATS:
        return _numpy_float(kind, text)
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        raise ValueError(f"{quote(text)} is not True or False")
    if kind == "datetime":
        iso = stripped[:-1] + "+00:00" if stripped.endswith(("Z", "z")) else stripped
        try:
            return dt.datetime.fromisoformat(iso)
        except ValueError:
            raise ValueError(f"{quote(text)} is not a date and time like 2024-05-17T14:30:00+02:00") from None
    if kind == "date":
        try:
            return dt.date.fromisoformat(stripped)
        except ValueError:
            raise ValueError(f"{quote(text)} is not a date like 2024-05-17") from None
    if kind == "literal":
        if not stripped:
            raise ValueError("empty; type a Python literal such as [1, 2], (0.5, 'mm') or 1+2j")
        try:
            return ast.literal_eval(stripped)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValueError(f"{quote(text)} is not a Python literal such as [1, 2], (0.5, 'mm') or 1+2j") from None
    raise ValueError(f"unknown value type {kind!r}")


def _numpy_float(kind: str, text: str) -> np.floating:
    """``text`` as the numpy float ``kind``, rounded once from the decimal; overflow is refused."""
    stripped = text.strip()
    try:
        float(stripped)  # the spellings Python accepts, no more (numpy would take "0x10" or b"")
        with np.errstate(over="raise"):
            value = NUMPY_FLOATS[kind](stripped)
    except ValueError:
        raise ValueError(f"{quote(text)} is not a number") from None
    except FloatingPointError:
        value = NUMPY_FLOATS[kind]("inf")
    if np.isinf(value) and not np.isinf(float(stripped)):
        raise ValueError(f"{quote(text)} is too large for {kind}")
    return value


def quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def identical(a: Any, b: Any) -> bool:
    """Same type and same value all the way down (a float's sign and NaN-ness included)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=False))
    return repr(a) == repr(b)


def render_value(value: Any) -> tuple[str, str] | None:
    """The (type, text) of an editable row showing ``value`` exactly, or None if no row can."""
    t = type(value)
    if value is None:
        candidate = ("None", "")
    elif t is bool:
        candidate = ("bool", str(value))
    elif t is int:
        candidate = ("int", str(value))
    elif t is float:
        candidate = ("float", repr(value))
    elif t in NUMPY_FLOATS.values():
        candidate = (np.dtype(t).name, str(value))  # numpy's str is the shortest repr in its own dtype
    elif t is str:
        # A Text field is one line: multi-line or control-character text is edited as a literal.
        candidate = ("str", value) if value.isprintable() else ("literal", repr(value))
    elif t is dt.datetime:
        candidate = ("datetime", value.isoformat())
    elif t is dt.date:
        candidate = ("date", value.isoformat())
    elif t in (complex, bytes) or (
        t in (list, tuple) and all(type(v) in (bool, int, float, complex, str, bytes) or v is None for v in value)
    ):
        candidate = ("literal", repr(value))
    else:
        return None
    if len(candidate[1]) > LITERAL_LIMIT:
        return None
    try:
        parsed = parse_value(*candidate)
    except ValueError:
        return None
    return candidate if identical(parsed, value) else None


def check_storable(key: str, value: Any) -> None:
    """Raise ValueError (plain words) if the NPZ writer could not store ``value``."""
    try:
        metadata.encode({key: value})
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def describe_value(value: Any) -> str:
    """A short description of a read-only value; arrays by shape and dtype, never their values."""
    if isinstance(value, np.ndarray):
        return f"array({', '.join(str(n) for n in value.shape)}) {value.dtype}"
    if type(value) is dict:
        return f"dict with {count_text(len(value), 'key')}: {short_repr(value, 60)}"
    if type(value) in (list, tuple):
        return f"{type(value).__name__} of {count_text(len(value), 'item')}: {short_repr(value, 60)}"
    return f"{type(value).__name__}: {short_repr(value, 70)}"
