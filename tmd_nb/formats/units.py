"""Physical units of a height map: one convention for every format (``docs/FORMAT.md``, "Physical keys").

The keys, all optional, in the metadata beside ``"height_map"``:

``x_length``, ``y_length``
    The size of the scanned area along the columns (x) and the rows (y), in ``lateral_unit``.
``x_offset``, ``y_offset``
    Where the scanned area starts (the outer edge of the first pixel), in ``lateral_unit``.
``lateral_unit``, ``height_unit``
    The units of the four keys above and of the heights: ``"m"``, ``"mm"``, ``"um"`` (or
    ``"µm"``), ``"nm"``, ... (:data:`LENGTHS`).
``units``
    Shorthand for both: the unit of a key above that is absent. The specific keys win.

When no key names a unit, the TrueMap convention applies: millimetres for both, as in ``.tmd``
files. Writers of formats with units (TMD, X3P, Gwyddion) refuse a unit they do not know, or
a unit key holding no string (:func:`factors`), rather than guess; writers that store lengths in
another unit also refuse lengths and offsets they could not write as given (:func:`written`).

The pixel spacing is ``x_length / width`` and ``y_length / height`` (a pixel covers the area
it stands for, as in TrueMap and Gwyddion), everywhere: the X3P sampling interval, the
Gwyddion ``xreal``/``yreal``, the axes of the previews. Converting between formats scales
lengths and heights by the exact unit factor and nothing else.

This module imports only the standard library.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_UNIT",
    "LENGTHS",
    "PHYSICAL_KEYS",
    "UNIT_KEYS",
    "Physical",
    "canonical",
    "check_unit_types",
    "convert",
    "factors",
    "in_si",
    "metres_per",
    "physical",
    "unit_factor",
    "written",
]

#: The unit of lengths and heights when the metadata names none (the TrueMap convention).
DEFAULT_UNIT = "mm"
#: Length units and their size in metres. Micrometres may be written ``um``, ``µm`` (micro sign)
#: or ``μm`` (Greek mu).
LENGTHS: dict[str, float] = {
    "km": 1e3,
    "m": 1.0,
    "cm": 1e-2,
    "mm": 1e-3,
    "um": 1e-6,
    "\u00b5m": 1e-6,
    "\u03bcm": 1e-6,
    "nm": 1e-9,
    "Å": 1e-10,
    "pm": 1e-12,
}
#: The same units as powers of ten of a metre, for conversions by an exact factor (:func:`convert`).
_EXPONENTS: dict[str, int] = {
    "km": 3,
    "m": 0,
    "cm": -2,
    "mm": -3,
    "um": -6,
    "\u00b5m": -6,
    "\u03bcm": -6,
    "nm": -9,
    "Å": -10,
    "pm": -12,
}
#: The keys that name a unit: the specific ones, then the shorthand for both.
UNIT_KEYS = ("lateral_unit", "height_unit", "units")
#: Every key of the convention.
PHYSICAL_KEYS = ("x_length", "y_length", "x_offset", "y_offset", "lateral_unit", "height_unit", "units")


def canonical(unit: str) -> str:
    """``unit`` without surrounding blanks, in Unicode NFKC form.

    The same glyph has several code points: the angstrom sign U+212B is the letter U+00C5
    (``"Å"``), and the micro sign U+00B5 the Greek mu U+03BC; NFKC makes them one spelling.
    """
    return unicodedata.normalize("NFKC", unit).strip()


def metres_per(unit: str) -> float | None:
    """How many metres one ``unit`` is (``"mm"`` -> 0.001), or None for a unit that is not a length."""
    return LENGTHS.get(canonical(unit))


def _number(value: Any) -> float | None:
    """A finite real number as float (numpy scalars included), else None."""
    if isinstance(value, bool) or (not isinstance(value, int | float) and not _is_real_scalar(value)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


def _is_real_scalar(value: Any) -> bool:
    kind = getattr(getattr(value, "dtype", None), "kind", None)
    return kind in ("i", "u", "f") and getattr(value, "shape", None) == ()


@dataclass(frozen=True)
class Physical:
    """The physical size of a height map, from its metadata (see the module docstring)."""

    #: Size of the scanned area (None when the metadata does not say, or says nonsense).
    x_length: float | None
    y_length: float | None
    x_offset: float
    y_offset: float
    lateral_unit: str
    height_unit: str
    #: Whether the metadata named the height unit, or gave lengths (so the TrueMap default applies).
    height_known: bool
    #: The key each unit came from (``"lateral_unit"``/``"height_unit"``, ``"units"``), or None
    #: when the TrueMap default applies: for messages that name the key.
    lateral_key: str | None = None
    height_key: str | None = None

    @property
    def known(self) -> bool:
        """Whether the lengths are known (positive), so the map can be drawn in physical units."""
        return self.x_length is not None and self.y_length is not None

    def spacing(self, shape: tuple[int, int]) -> tuple[float, float] | None:
        """``(x spacing, y spacing)`` = length / pixels, in ``lateral_unit``; None if unknown."""
        if self.x_length is None or self.y_length is None:
            return None
        return self.x_length / shape[1], self.y_length / shape[0]


def physical(meta: Mapping[str, Any]) -> Physical:
    """The :class:`Physical` description of ``meta`` (a metadata dict, with or without ``"height_map"``).

    Lengths that are not positive finite numbers count as unknown; offsets default to 0; units
    that are not strings count as absent (the TrueMap default, millimetres, applies); an empty
    unit string means the values have no unit (a Gwyddion channel of counts, say).
    """
    x_length, y_length = _number(meta.get("x_length")), _number(meta.get("y_length"))
    if x_length is not None and x_length <= 0:
        x_length = None
    if y_length is not None and y_length <= 0:
        y_length = None
    lateral_key = _unit_key(meta, "lateral_unit")
    height_key = _unit_key(meta, "height_unit")
    lateral = meta[lateral_key] if lateral_key else None
    height = meta[height_key] if height_key else None
    return Physical(
        x_length=x_length,
        y_length=y_length,
        x_offset=_number(meta.get("x_offset")) or 0.0,
        y_offset=_number(meta.get("y_offset")) or 0.0,
        lateral_unit=lateral.strip() if isinstance(lateral, str) else DEFAULT_UNIT,
        height_unit=height.strip() if isinstance(height, str) else DEFAULT_UNIT,
        height_known=isinstance(height, str) or (x_length is not None and y_length is not None),
        lateral_key=lateral_key,
        height_key=height_key,
    )


def _unit_key(meta: Mapping[str, Any], key: str) -> str | None:
    """``key`` if it holds a unit string, else ``"units"`` if that does, else None."""
    for candidate in (key, "units"):
        if isinstance(meta.get(candidate), str):
            return candidate
    return None


def check_unit_types(meta: Mapping[str, Any]) -> None:
    """``TypeError`` naming the key when a unit key holds something other than a string (or None).

    :func:`physical` reads such a unit as absent, so a writer would silently apply the default
    (``b"um"`` would be written as millimetres): writers refuse it instead.
    """
    for key in UNIT_KEYS:
        value = meta.get(key)
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"{key} must be a unit name (str) such as 'um', not {type(value).__module__}."
                f"{type(value).__qualname__} {value!r}"
            )


def written(meta: Mapping[str, Any]) -> Physical:
    """:func:`physical` for a writer that stores lengths in another unit (X3P, Gwyddion), after checking.

    :func:`physical` reads a length it cannot use as unknown and an offset as 0, which suits a
    preview; a file written that way would show other software another size than the metadata
    says. Here a given ``x_length``/``y_length`` must be a positive finite real number and a
    given ``x_offset``/``y_offset`` a finite one (``TypeError``/``ValueError`` naming the key),
    and unit keys must be strings (:func:`check_unit_types`).
    """
    check_unit_types(meta)
    for key in ("x_length", "y_length", "x_offset", "y_offset"):
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or (not isinstance(value, int | float) and not _is_real_scalar(value)):
            raise TypeError(f"{key} must be a real number, not {type(value).__module__}.{type(value).__qualname__}")
        number = _number(value)
        if number is None:
            raise ValueError(f"{key} must be a finite number, not {_shown(value)}")
        if key.endswith("length") and number <= 0:
            raise ValueError(f"{key} must be positive (the size of the scanned area), not {_shown(value)}")
    return physical(meta)


def in_si(key: str, value: float, unit: str, factor: float) -> float:
    """``value`` (of ``key``, in ``unit``) times ``factor``; ``ValueError`` naming the key if that overflows,
    or if a length underflows to 0."""
    scaled = value * factor
    if not math.isfinite(scaled):
        raise ValueError(f"{key} {_shown(value)} {unit} is beyond float64 range in SI units, so it cannot be written")
    if key.endswith("length") and scaled == 0 and value != 0:
        raise ValueError(f"{key} {_shown(value)} {unit} is too small for float64 in SI units: it rounds to 0")
    return scaled


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unit_factor(unit: str, key: str | None) -> float:
    """Metres per ``unit``; ``ValueError`` naming ``key`` (the key it came from) and the known units."""
    factor = metres_per(unit)
    if factor is None:
        raise ValueError(
            f"{key or 'unit'} {unit!r} is not a length unit tmd_nb knows; "
            f"use one of {', '.join(repr(u) for u in LENGTHS)}"
        )
    return factor


def factors(meta: Mapping[str, Any]) -> tuple[float, float]:
    """``(metres per lateral unit, metres per height unit)`` of ``meta``.

    Raises ``ValueError`` naming the key (``lateral_unit``, ``height_unit`` or ``units``) and the
    known units when a unit is not a length tmd_nb knows, and ``TypeError`` when a unit key
    holds no string: a writer that stores metres or millimetres calls this before touching the file.
    """
    check_unit_types(meta)
    phys = physical(meta)
    return unit_factor(phys.lateral_unit, phys.lateral_key), unit_factor(phys.height_unit, phys.height_key)


def convert(values: Any, unit: str, target: str) -> Any:
    """``values`` (a float or float64 array) in ``unit`` expressed in ``target``, both known lengths.

    Scaled by an exact power of ten (multiplied, or divided: ``1e-3`` is not exact, ``1000`` is),
    so each result is the correctly rounded value; the same unit returns ``values`` untouched.
    """
    step = _EXPONENTS[canonical(unit)] - _EXPONENTS[canonical(target)]
    if step == 0:
        return values
    return values * 10.0**step if step > 0 else values / 10.0**-step
