"""Physical units of a height map: one convention for every format (``docs/FORMAT.md``, "Physical keys").

The keys, all optional, in the metadata beside ``"height_map"``:

``x_length``, ``y_length``
    The size of the scanned area along the columns (x) and the rows (y), in ``lateral_unit``.
``x_offset``, ``y_offset``
    Where the scanned area starts (the outer edge of the first pixel), in ``lateral_unit``.
``lateral_unit``, ``height_unit``
    The units of the four keys above and of the heights: ``"m"``, ``"mm"``, ``"um"`` (or
    ``"µm"``), ``"nm"``, ... (:data:`LENGTHS`). When absent, the TrueMap convention applies:
    millimetres for both, as in ``.tmd`` files.

The pixel spacing is ``x_length / width`` and ``y_length / height`` (a pixel covers the area
it stands for, as in TrueMap and Gwyddion), everywhere: the X3P sampling interval, the
Gwyddion ``xreal``/``yreal``, the axes of the previews. Converting between formats scales
lengths and heights by the exact unit factor and nothing else.

This module imports only the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_UNIT",
    "LENGTHS",
    "PHYSICAL_KEYS",
    "Physical",
    "metres_per",
    "physical",
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
#: Every key of the convention.
PHYSICAL_KEYS = ("x_length", "y_length", "x_offset", "y_offset", "lateral_unit", "height_unit")


def metres_per(unit: str) -> float | None:
    """How many metres one ``unit`` is (``"mm"`` -> 0.001), or None for a unit that is not a length."""
    return LENGTHS.get(unit.strip())


def _number(value: Any) -> float | None:
    """A finite real number as float (numpy scalars included), else None."""
    if isinstance(value, bool) or (not isinstance(value, int | float) and not _is_real_scalar(value)):
        return None
    number = float(value)
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
    lateral = meta.get("lateral_unit")
    height = meta.get("height_unit")
    return Physical(
        x_length=x_length,
        y_length=y_length,
        x_offset=_number(meta.get("x_offset")) or 0.0,
        y_offset=_number(meta.get("y_offset")) or 0.0,
        lateral_unit=lateral.strip() if isinstance(lateral, str) else DEFAULT_UNIT,
        height_unit=height.strip() if isinstance(height, str) else DEFAULT_UNIT,
        height_known=isinstance(height, str) or (x_length is not None and y_length is not None),
    )
