"""tmd_nb's own record inside a file of another format (X3P, Gwyddion), so that a round trip is lossless.

A format like X3P or Gwyddion holds heights as floating-point metres (or as scaled integers), which
other tools read; tmd_nb's height map may be of another dtype, unit or byte order, and its metadata
of any type :func:`tmd_nb.export_to_npz` stores. The writer therefore stores, beside the format's
standard fields, a *record*:

``record.json`` (a JSON object, ASCII with ``\\u`` escapes)
    ``{"tmd_nb": 1, "height": {"dtype": "<f4", "factor": 0.001, "exact": null | "height_map"},
    "fingerprint": "<crc32>", "metadata": {...}}``. ``metadata`` is the typed JSON of
    :mod:`tmd_nb.formats.metadata` (as in the NPZ ``metadata`` member); ``height.factor`` is the
    size in metres of the height unit, by which the standard heights were multiplied;
    ``fingerprint`` is the CRC-32 (8 hex digits) of the standard heights as a reader sees them
    (float64, NaN made canonical), so that a file changed by other software afterwards is noticed.
``<name>`` (NPY bytes)
    Each array the metadata refers to, and, under ``height_map``, the exact height map when
    dividing the standard heights by ``factor`` and casting to ``dtype`` does not give it back
    bit for bit (float64 heights scaled by 1e-3, NaN payloads, infinities, complex, uint64...).
    An empty height map (no rows or no columns) is stored there too, the standard grid being
    one missing point.

Where these pieces go is up to the format module (X3P: vendor-extension files; Gwyddion: string
entries of the container). This module imports only numpy and the standard library.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError
from ..heightmap import HEIGHT_MAP, check_height_map_header
from . import metadata
from .npy import data_size, header_bytes, parse_header, write_npy

__all__ = [
    "RECORD",
    "RECORD_VERSION",
    "Record",
    "fingerprint",
    "grid",
    "npy_bytes",
    "pack",
    "restore",
    "standard_heights",
    "unpack",
]

RECORD = "record.json"
RECORD_VERSION = 1
#: Longest record text accepted (the arrays are separate).
MAX_RECORD = 64 << 20


def fingerprint(seen: np.ndarray) -> str:
    """CRC-32 of the float64 heights a reader sees, with every NaN made the same NaN."""
    values = np.ascontiguousarray(seen, dtype=np.float64)
    nan = np.isnan(values)
    if nan.any():
        values = np.where(nan, np.nan, values)
    return f"{zlib.crc32(values.view(np.uint8).reshape(-1).data):08x}"


def restore(seen: np.ndarray, dtype: np.dtype, factor: float) -> np.ndarray:
    """The height map of ``dtype`` that the standard heights ``seen`` (float64, metres) stand for."""
    values = np.asarray(seen, dtype=np.float64)
    if factor != 1.0:
        values = values / factor
    with np.errstate(invalid="ignore", over="ignore"):
        if dtype.kind == "b":
            return np.ascontiguousarray(values != 0)
        if dtype.kind in "iu":
            finite = np.isfinite(values)
            return np.where(finite, np.rint(np.where(finite, values, 0.0)), 0.0).astype(dtype)
        return values.astype(dtype)


def standard_heights(array: np.ndarray, factor: float) -> np.ndarray:
    """The heights in SI units (float64) other software should see; complex maps give their real part."""
    values = array.real if array.dtype.kind == "c" else array
    return np.asarray(values, dtype=np.float64) * factor


def grid(array: np.ndarray) -> np.ndarray:
    """The map to write in a format's standard fields: ``array``, or one missing point if it is empty."""
    return array if array.size else np.full((1, 1), np.nan)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of an NPY file."""
    buf = io.BytesIO()
    write_npy(buf, array)
    return buf.getvalue()


def _array(raw: bytes, where: str) -> np.ndarray:
    """The array of an NPY file's bytes; :class:`FormatError` if they are not exactly one."""
    fp = io.BytesIO(raw)
    dtype, shape, fortran, offset = parse_header(fp, where)
    if offset + data_size(dtype, shape) != len(raw):
        raise FormatError(
            f"{where}: header claims {data_size(dtype, shape)} data bytes but {len(raw) - offset} are stored"
        )
    try:
        array = np.frombuffer(raw, dtype=dtype, offset=offset, count=int(np.prod(shape)))
        return array.reshape(shape, order="F" if fortran else "C").copy(order="K")
    except ValueError as exc:
        raise FormatError(f"{where} is malformed: {exc}") from None


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == b.tobytes()


def pack(height_map: np.ndarray, meta: Mapping[str, Any], seen: np.ndarray, factor: float) -> dict[str, bytes]:
    """The record of ``height_map`` and ``meta``, whose standard heights a reader sees as ``seen``.

    Returns ``{"record.json": JSON bytes, "<array name>": NPY bytes, ...}``. Raises ``TypeError``
    naming the key of a metadata value that cannot be stored, before anything is written.
    """
    encoded, arrays = metadata.encode(meta, reserved={HEIGHT_MAP, RECORD})
    for name, value in arrays.items():
        header_bytes(value, f"metadata array {name!r}")
    exact = not _same_bits(height_map, restore(seen, height_map.dtype, factor))
    record = {
        "tmd_nb": RECORD_VERSION,
        "height": {"dtype": height_map.dtype.str, "factor": factor, "exact": HEIGHT_MAP if exact else None},
        "fingerprint": fingerprint(seen),
        "metadata": encoded,
    }
    # ASCII: a lone surrogate in a key or string survives as a JSON escape.
    out = {RECORD: json.dumps(record, ensure_ascii=True, allow_nan=False).encode("ascii")}
    if exact:
        out[HEIGHT_MAP] = npy_bytes(height_map)
    for name, value in arrays.items():
        out[name] = npy_bytes(value)
    return out


@dataclass
class Record:
    """What :func:`unpack` found: the height map and metadata, or why the record was not used."""

    height_map: np.ndarray | None
    metadata: dict[str, Any]
    #: False when the standard heights changed since tmd_nb wrote the file (other software edited it).
    current: bool


def unpack(members: Mapping[str, bytes], seen: np.ndarray, where: str) -> Record:
    """Read the record ``members`` (as :func:`pack` made them) of a file whose standard heights are ``seen``.

    Raises :class:`FormatError` naming ``where`` for a malformed record.
    """
    text = members[RECORD]
    if len(text) > MAX_RECORD:
        raise FormatError(f"{where}: its tmd_nb record is {len(text)} bytes, more than the {MAX_RECORD} allowed")
    try:
        obj = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"{where}: its tmd_nb record is not valid JSON: {exc}") from None
    if type(obj) is not dict or type(obj.get("tmd_nb")) is not int:
        raise FormatError(f"{where}: its tmd_nb record is not a JSON object with a version")
    if obj["tmd_nb"] > RECORD_VERSION:
        raise FormatError(
            f"{where} holds a tmd_nb record of version {obj['tmd_nb']}; this tmd_nb reads up to "
            f"{RECORD_VERSION}: upgrade tmd_nb"
        )
    try:
        height = obj["height"]
        dtype = np.dtype(str(height["dtype"]))
        factor = float(height["factor"])
        exact = height.get("exact")
        stamp = str(obj["fingerprint"])
        encoded = obj["metadata"]
        if type(encoded) is not dict or (exact is not None and exact != HEIGHT_MAP):
            raise ValueError("malformed fields")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"{where}: its tmd_nb record is malformed: {exc}") from None
    check_height_map_header(dtype, (1, 1), f"{where} tmd_nb record")
    arrays = {name: _array(raw, f"{where} tmd_nb member {name!r}") for name, raw in members.items() if name != RECORD}
    try:
        meta = metadata.decode(encoded, arrays, where=f"{where} tmd_nb metadata")
    except (ValueError, RecursionError) as exc:
        raise FormatError(str(exc)) from None
    if stamp != fingerprint(seen):
        return Record(None, meta, current=False)
    if exact is not None:
        if HEIGHT_MAP not in arrays:
            raise FormatError(f"{where}: its tmd_nb record refers to a missing exact height map")
        array = arrays[HEIGHT_MAP]
        check_height_map_header(array.dtype, array.shape, f"{where} tmd_nb height map")
        if array.shape != seen.shape and not (array.size == 0 and seen.shape == (1, 1)):
            raise FormatError(f"{where}: its tmd_nb height map has shape {array.shape}, the file's data {seen.shape}")
        return Record(array, meta, current=True)
    return Record(restore(seen, dtype, factor), meta, current=True)
