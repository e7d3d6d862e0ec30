"""What the X3P and Gwyddion writers refuse because their readers would refuse it.

Both formats carry tmd_nb's record (:mod:`tmd_nb.storage.embedded`), whose JSON text a reader
accepts up to :data:`~tmd_nb.storage.embedded.MAX_RECORD` bytes; an X3P file also holds at most
:data:`tmd_nb.formats.x3p.MAX_MEMBERS` zip members, one per metadata array. A save checks both
before anything is written, so that whatever tmd_nb writes, tmd_nb loads. Both store lengths and
offsets in metres, which must be finite numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from . import embedded, metadata, units

__all__ = ["RECORD_OVERHEAD", "check_lengths", "check_record"]

#: Bytes the record adds around the metadata JSON (version, dtype, factor, fingerprint), at most.
RECORD_OVERHEAD = 256


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=True, allow_nan=False))


def check_record(meta: Mapping[str, Any], fmt: str, *, max_arrays: int | None = None) -> None:
    """Raise ``TypeError``/``ValueError`` (naming a key) if ``meta`` cannot go in the record of ``fmt``.

    ``fmt`` is said in the message: ``"an X3P file"``.
    """
    encoded, arrays = metadata.encode(meta, reserved=set(embedded.RESERVED))
    size = _json_size(encoded) + RECORD_OVERHEAD
    if size > embedded.MAX_RECORD:
        key = max(encoded, key=lambda k: _json_size({k: encoded[k]}))
        raise ValueError(
            f"metadata key {key!r} is too large: the metadata take about {size:,} bytes as JSON text, "
            f"more than the {embedded.MAX_RECORD:,} the tmd_nb record in {fmt} may hold; "
            "store large values (long text, big lists) as numpy arrays"
        )
    if max_arrays is not None and len(arrays) > max_arrays:
        name = list(arrays)[max_arrays]
        raise ValueError(
            f"metadata array {name!r} is one of {len(arrays):,} arrays; {fmt} holds at most "
            f"{max_arrays:,} (one member each): gather them into fewer arrays"
        )


def check_lengths(phys: units.Physical, fmt: str) -> None:
    """Raise ``ValueError`` naming the key if a length or offset is not a finite number of metres."""
    factor = units.metres_per(phys.lateral_unit) or 1.0
    for key in ("x_length", "y_length", "x_offset", "y_offset"):
        value = getattr(phys, key)
        if value is not None and not math.isfinite(value * factor):
            raise ValueError(
                f"{key} {value!r} {phys.lateral_unit} is not a finite number of metres, which {fmt} cannot hold"
            )
