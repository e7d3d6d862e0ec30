"""tmd_nb's own record inside a file of another format (X3P, Gwyddion), so that a round trip is lossless.

A format like X3P or Gwyddion holds heights as floating-point metres (or as scaled integers), which
other tools read; tmd_nb's height map may be of another dtype, unit or byte order, and its metadata
of any type :func:`tmd_nb.export_to_npz` stores. The writer therefore stores, beside the format's
standard fields, a *record*:

``record.json`` (a JSON object, ASCII with ``\\u`` escapes)
    ``{"tmd_nb": 2, "height": {"dtype": "<f4", "factor": 0.001, "exact": null | "height_map",
    "missing": null | "__missing__"}, "fingerprint": "<crc32>", "checksums": {"<name>":
    "<crc32>", ...}, "metadata": {...}}``. ``metadata`` is the typed JSON of
    :mod:`tmd_nb.storage.metadata` (as in the NPZ ``metadata`` member; a ``"height_map"`` key
    there is damage); ``height.factor`` is the size in metres of the height unit, by which the
    standard heights were multiplied; ``checksums`` holds the CRC-32 of each NPY member below,
    so that a changed byte is an error, never a changed height.
``fingerprint``
    The CRC-32 (8 hex digits) of everything a reader of the format's standard fields sees: the
    heights (float64, every NaN the same NaN), any other array shown (Gwyddion's mask), and the
    fields (lengths, offsets, units, z offset and increment) as JSON with sorted keys. A file
    changed by other software afterwards (heights, a rescale, an offset) no longer matches, and
    the reader loads the file's own values instead, with a warning.
``<name>`` (NPY bytes)
    Each array the metadata refers to, and, under ``height_map``, the exact height map when
    dividing the standard heights by ``factor`` and casting to ``dtype`` does not give it back
    bit for bit (float64 heights scaled by 1e-3, NaN payloads, infinities, complex, uint64...).
    An empty height map (no rows or no columns) is stored there too, the standard grid being
    one missing point. ``__missing__`` (bool) marks points that are missing (NaN) although the
    standard heights hold a value there: formats whose other readers need a number everywhere
    (Gwyddion) fill them, and tmd_nb makes them NaN again.

``height.patch`` (version 3): ``null`` or ``["__patch_at__", "__patch_values__"]``
    When the standard heights give back all but a few points bit for bit (a float64 map in
    millimetres stored as float64 metres: ``x * 1e-3 / 1e-3`` differs from ``x`` in the last
    bit for about 2% of values), the record holds those points only instead of a whole exact
    copy: ``__patch_at__`` their flat (C-order) indices, ``__patch_values__`` their values, of
    the map's dtype. A patch is used when it takes at most a quarter of the map's bytes.
``height.stored`` (version 3)
    ``true`` when the format gave the numbers its file stores for the heights (X3P's
    ``data.bin``: the heights in their own unit, the Z increment saying how many metres that
    is) instead of metres: the fingerprint covers those numbers (their little-endian bytes,
    every NaN the same NaN) and the map is restored by casting them to ``dtype``, with no
    division, so that a float64 map in millimetres needs no exact copy. Versions 1 and 2 are
    read with the standard heights, as before.

``seal`` (the record's last key, any version)
    ``"<crc32>"``: the CRC-32 of the record's JSON text as written without it (the text up to
    ``, "seal": ...`` closed with ``}``). It ties the record's own description of the heights
    (dtype, factor, patch, exact map) and its metadata to the fingerprint of the file's data: an
    edit of the record alone is a :class:`FormatError`. Records without a seal (written before
    it) are checked instead by converting the restored map back to the standard heights.

Version 1 records (tmd_nb before physical fields were fingerprinted) have a fingerprint of the
heights only and no checksums or ``missing``: they are read as before, the format passing the
heights as version 1 saw them; an edit of their lengths alone goes unnoticed, as it did then.

Where these pieces go is up to the format module (X3P: vendor-extension files; Gwyddion: string
entries of the container). This module imports only numpy, the standard library and tmd_nb's
CRC-32 (ISA-L's when installed: the same checksum, several times zlib's speed on a large map).
"""

from __future__ import annotations

import io
import json
import math
import re
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import FormatError
from ..heightmap import HEIGHT_MAP, check_height_map_header
from . import metadata
from .blockwise import combine_crcs, map_blocks
from .libraries import crc32_of
from .npyfile import data_size, header_bytes, parse_header, write_npy

__all__ = [
    "MISSING",
    "PATCH_AT",
    "PATCH_VALUES",
    "RECORD",
    "RECORD_VERSION",
    "RESERVED",
    "Blocks",
    "Gathered",
    "Record",
    "Streamed",
    "Survey",
    "fingerprint",
    "from_stored",
    "grid",
    "npy_bytes",
    "pack",
    "pack_gathered",
    "restore",
    "restores",
    "standard_heights",
    "survey",
    "unpack",
    "unrestored",
]

RECORD = "record.json"
RECORD_VERSION = 3
#: The member marking points the standard heights fill although they are missing.
MISSING = "__missing__"
#: The members of a patch: flat indices of the points restored wrong, and their exact values.
PATCH_AT = "__patch_at__"
PATCH_VALUES = "__patch_values__"
#: Names a metadata array cannot have in a record.
RESERVED = frozenset({HEIGHT_MAP, RECORD, MISSING, PATCH_AT, PATCH_VALUES})
#: Longest record text accepted (the arrays are separate).
MAX_RECORD = 64 << 20


def _crc_values(seen: np.ndarray, crc: int = 0) -> int:
    values = np.ascontiguousarray(seen, dtype=np.float64)
    nan = np.isnan(values)
    if nan.any():
        values = np.where(nan, np.nan, values)
    return crc32_of(values.view(np.uint8).reshape(-1).data, crc)


def _crc_stored(stored: np.ndarray) -> int:
    """CRC-32 of stored numbers as they are (no float64 copy), every NaN made the same NaN."""
    values = np.ascontiguousarray(stored, dtype=stored.dtype.newbyteorder("<"))
    if values.dtype.kind == "f":
        nan = np.isnan(values)
        if nan.any():
            values = np.where(nan, np.array(np.nan, values.dtype), values)
    return crc32_of(values.reshape(-1).view(np.uint8).data)


def fingerprint(
    seen: np.ndarray,
    fields: Mapping[str, Any] | None = None,
    extra: tuple[np.ndarray, ...] = (),
    *,
    stored: bool = False,
) -> str:
    """CRC-32 of what a reader of the standard fields sees, every NaN made the same NaN.

    ``seen``: the heights as float64, or (``stored``) the numbers the file stores for them;
    ``extra``: other arrays shown (a mask); ``fields``: lengths, offsets, units... (floats and
    strings). Without ``fields`` and ``extra``, the version 1 fingerprint: the heights alone.
    """
    crc = _crc_stored(seen) if stored else _crc_values(seen)
    if stored:
        crc = zlib.crc32(seen.dtype.newbyteorder("<").str.encode("ascii"), crc)
    if fields is None and not extra:
        return f"{crc:08x}"
    return _stamp(crc, seen.shape, fields, extra)


def _stamp(crc: int, shape: tuple[int, ...], fields: Mapping[str, Any] | None, extra: tuple[np.ndarray, ...]) -> str:
    """The fingerprint from the CRC-32 of the heights: the other arrays shown and the fields added."""
    for array in extra:
        crc = _crc_values(array, zlib.crc32(repr(array.shape).encode("ascii"), crc))
    text = json.dumps(dict(fields or {}), sort_keys=True, ensure_ascii=True, allow_nan=True)
    crc = zlib.crc32(f"{shape!r}{text}".encode("ascii"), crc)
    return f"{crc:08x}"


_SEAL = re.compile(rb', "seal": "([0-9a-f]{8})"\}\Z')


def _sealed(text: str) -> str:
    """The record's JSON ``text`` (an object) with its seal added as its last key: the CRC-32 of
    ``text``. It ties the record's description of the heights (dtype, factor, patch, exact map)
    and its metadata to the fingerprint of the file's data, so that an edit of the record alone is
    found without converting every height back to compare (:func:`_stands_for`)."""
    return f'{text[:-1]}, "seal": "{zlib.crc32(text.encode("ascii")):08x}"}}'


def _seal_holds(raw: bytes) -> bool:
    """Whether the record's bytes end with a seal that is the CRC-32 of the record without it."""
    found = _SEAL.search(raw, max(0, len(raw) - 32))
    if found is None:
        return False
    text = raw[: found.start()] + b"}"
    return f"{zlib.crc32(text):08x}".encode("ascii") == found.group(1)


def _checksum(raw: bytes) -> str:
    return f"{crc32_of(raw):08x}"


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


def from_stored(stored: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The height map of ``dtype`` that a format's stored numbers (in the height unit) stand for."""
    if dtype.kind == "f" and stored.dtype.kind == "f":
        with np.errstate(over="ignore"):
            return stored.astype(dtype, copy=False)  # no copy when the types agree
    return restore(stored, dtype, 1.0)


def standard_heights(array: np.ndarray, factor: float, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The heights in SI units (float64) other software should see; complex maps give their real part.

    ``ValueError`` when a finite height is beyond float64 range in SI units (``1e306`` km): it
    would be written as infinite, which these formats hold as a missing point. ``array`` may be
    a block of a larger map starting at index ``origin``: the message names the map's index.
    """
    values = array.real if array.dtype.kind == "c" else array
    with np.errstate(over="ignore"):
        standard = np.asarray(values, dtype=np.float64) * factor
    infinite = np.isinf(standard)
    if infinite.any() and (overflow := infinite & ~np.isinf(np.asarray(values, dtype=np.float64))).any():
        bad = np.unravel_index(int(np.argmax(overflow)), overflow.shape)
        raise ValueError(
            f"height {values[bad].item()!r} at index {tuple(int(i) + o for i, o in zip(bad, origin, strict=True))} "
            "is beyond float64 range "
            f"in SI units ({factor!r} per unit), so it cannot be written as a height"
        )
    return standard


def grid(array: np.ndarray) -> np.ndarray:
    """The map to write in a format's standard fields: ``array``, or one missing point if it is empty."""
    return array if array.size else np.full((1, 1), np.nan)


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of an NPY file."""
    buf = io.BytesIO()
    write_npy(buf, array)
    return buf.getvalue()


def _array(raw: bytes, where: str, *, copy: bool = True) -> np.ndarray:
    """The array of an NPY file's bytes; :class:`FormatError` if they are not exactly one.

    Without ``copy``, a read-only view of ``raw`` (for arrays only read here, never handed out)."""
    fp = io.BytesIO(raw)
    dtype, shape, fortran, offset = parse_header(fp, where)
    if offset + data_size(dtype, shape) != len(raw):
        raise FormatError(
            f"{where}: header claims {data_size(dtype, shape)} data bytes but {len(raw) - offset} are stored"
        )
    try:
        array = np.frombuffer(raw, dtype=dtype, offset=offset, count=int(np.prod(shape)))
        array = array.reshape(shape, order="F" if fortran else "C")
        return array.copy(order="K") if copy else array
    except ValueError as exc:
        raise FormatError(f"{where} is malformed: {exc}") from None


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a is b:  # the map itself restored (stored with no conversion)
        return True
    flat_a = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return bool(np.array_equal(flat_a, np.ascontiguousarray(b).reshape(-1).view(np.uint8)))


def _differing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flat C-order indices of the points where ``a`` and ``b`` (same dtype and shape) differ in any bit."""
    size = a.dtype.itemsize
    flat_a = np.ascontiguousarray(a).reshape(-1)
    flat_b = np.ascontiguousarray(b).reshape(-1)
    if size in (1, 2, 4, 8):
        return np.flatnonzero(flat_a.view(f"u{size}") != flat_b.view(f"u{size}"))
    bytes_a, bytes_b = flat_a.view(np.uint8).reshape(-1, size), flat_b.view(np.uint8).reshape(-1, size)
    return np.flatnonzero((bytes_a != bytes_b).any(axis=1))


@dataclass
class Survey:
    """What a save needs of a map's standard heights, found in one blockwise pass (:func:`survey`)."""

    #: The standard heights: the map times the factor, as float64, every one finite.
    heights: np.ndarray
    #: CRC-32 of ``heights``' bytes (as :func:`fingerprint` finds it: there is no NaN to make alike).
    crc: int
    #: Flat C-order indices of the points that ``restore`` does not give back bit for bit.
    differing: np.ndarray


class Blocks:
    """Standard heights a reader gives a block at a time instead of whole: float64, native order, C order.

    ``read(start, stop)`` returns the heights of the flat points ``start`` to ``stop``, in a buffer
    that stays valid until the same thread's next call: :func:`unpack` converts each block while
    it is in the cache, and the file's bytes are read once, never held whole.
    """

    def __init__(self, shape: tuple[int, ...], read: Callable[[int, int], np.ndarray]) -> None:
        self.shape, self.read = shape, read


def _native_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" and dtype.isnative and dtype.itemsize in (2, 4, 8)


def _restore_into(out: np.ndarray, standard: np.ndarray, factor: float) -> None:
    """:func:`restore` of a block of float64 heights into ``out``, a block of a float map: the same
    numbers, a division by ``factor`` (none when it is 1) and a cast."""
    if factor == 1.0:
        np.copyto(out, standard, casting="unsafe")
    else:
        np.divide(standard, factor, out=out, casting="unsafe")


def survey(height_map: np.ndarray, factor: float) -> Survey | None:
    """The standard heights of a native float map and what :func:`pack` needs of them, in one pass.

    Each block is converted, checked, fingerprinted and converted back while in cache, the blocks
    shared among threads (:mod:`.blockwise`): several times faster than :func:`standard_heights`
    then :func:`pack` on a large map. ``None`` when the map is of another type or has a height
    that is not finite (missing, or beyond float64 in SI units): the caller takes the general way.
    """
    if not _native_float(height_map.dtype) or height_map.size == 0 or not math.isfinite(factor) or factor == 0:
        return None
    flat = np.ascontiguousarray(height_map).reshape(-1)
    heights = np.empty(height_map.shape, dtype=np.float64)
    out = heights.reshape(-1)
    unsigned = f"u{flat.dtype.itemsize}"

    def job(start: int, stop: int) -> tuple[int, int, np.ndarray] | None:
        block, standard = flat[start:stop], out[start:stop]
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(block, factor, out=standard, dtype=np.float64)
            if not np.isfinite(standard).all():
                return None
            back = np.empty(block.shape, dtype=block.dtype)
            _restore_into(back, standard, factor)
        differing = np.flatnonzero(back.view(unsigned) != block.view(unsigned))
        return crc32_of(standard.data), standard.nbytes, differing + start

    parts = map_blocks(flat.size, 8, job)
    if any(part is None for part in parts):
        return None
    done = [part for part in parts if part is not None]
    crc = combine_crcs([(c, n) for c, n, _ in done])
    return Survey(heights, crc, np.concatenate([d for _, _, d in done]))


def pack(
    height_map: np.ndarray,
    meta: Mapping[str, Any],
    seen: np.ndarray,
    factor: float,
    *,
    fields: Mapping[str, Any] | None = None,
    extra: tuple[np.ndarray, ...] = (),
    filled: np.ndarray | None = None,
    stored: bool = False,
    surveyed: Survey | None = None,
) -> dict[str, bytes]:
    """The record of ``height_map`` and ``meta``, whose standard heights are ``seen`` (NaN where missing).

    With ``stored``, ``seen`` is what the file stores instead: the heights in their own unit,
    which a reader scales by ``factor``; the map is restored from them by a cast (version 3).

    ``fields`` and ``extra`` are the other standard fields and arrays a reader sees (see
    :func:`fingerprint`); ``filled`` is what the file holds instead of ``seen`` when the format
    fills missing points with values (they are recorded under :data:`MISSING`). ``surveyed``,
    :func:`survey`'s findings for ``height_map`` (``seen`` is then its heights), spares the
    passes over the map that they answer.

    Returns ``{"record.json": JSON bytes, "<array name>": NPY bytes, ...}``. Raises ``TypeError``
    naming the key of a metadata value that cannot be stored, before anything is written.
    """
    encoded, arrays = _encoded(meta)
    at: np.ndarray | None = None
    if surveyed is not None and not stored:
        exact = surveyed.differing.size > 0
        at = surveyed.differing
    else:
        candidate = from_stored(seen, height_map.dtype) if stored else restore(seen, height_map.dtype, factor)
        exact = not _same_bits(height_map, candidate)
        if exact and candidate.shape == height_map.shape and height_map.size:
            at = _differing(height_map, candidate)
        del candidate
    patch: tuple[np.ndarray, np.ndarray] | None = None
    if exact and at is not None:
        index = at.astype(np.uint32) if height_map.size <= 1 << 32 else at
        if len(at) * (index.dtype.itemsize + height_map.dtype.itemsize) <= height_map.nbytes // 4:
            patch, exact = (index, np.ascontiguousarray(height_map).reshape(-1)[at]), False
    missing = None
    if filled is not None:
        gaps = np.isnan(seen) & ~np.isnan(filled)
        if gaps.any():
            missing = np.ascontiguousarray(gaps)  # C order whatever the map's: the same bytes for the same map
    shown = seen if filled is None else filled
    if surveyed is not None and not stored and filled is None:
        stamp = _stamp(surveyed.crc, seen.shape, fields or {}, extra)
    else:
        stamp = fingerprint(shown, fields or {}, extra, stored=stored)
    return _assemble(
        height_map.dtype,
        encoded,
        arrays,
        factor,
        stamp,
        exact=height_map if exact else None,
        patch=patch,
        missing=missing,
        stored=stored,
    )


def pack_gathered(
    gathered: Gathered, meta: Mapping[str, Any], factor: float, *, fields: Mapping[str, Any]
) -> dict[str, bytes]:
    """The record :func:`pack` makes with ``stored`` (no ``extra``, no ``filled``), from what
    ``gathered`` saw of a map streamed a block at a time: the same bytes, the map never whole.
    For a map whose stored numbers give it back bit for bit (:func:`restores`, every block): one
    that needs a patch or an exact copy must be packed whole."""
    encoded, arrays = _encoded(meta)
    return _assemble(
        gathered.dtype,
        encoded,
        arrays,
        factor,
        gathered.fingerprint(fields),
        exact=None,
        patch=None,
        missing=None,
        stored=True,
    )


class Streamed:
    """The record :func:`pack` makes (with ``filled``, not ``stored``), for a map a format writes a
    block at a time: the metadata encoded first (``TypeError`` naming a key before anything is
    written), the rest from what the writer gathered of the blocks (:meth:`pack`)."""

    def __init__(self, meta: Mapping[str, Any]) -> None:
        self.encoded, self.arrays = _encoded(meta)

    def pack(
        self,
        dtype: np.dtype,
        shape: tuple[int, int],
        factor: float,
        crc: int,
        *,
        fields: Mapping[str, Any],
        patch: tuple[np.ndarray, np.ndarray] | None,
        missing: int | None,
    ) -> dict[str, bytes | None]:
        """The record's members, the same bytes :func:`pack` gives the whole map.

        ``crc``: the CRC-32 of what a reader sees as :func:`fingerprint` takes it (the filled
        heights, then each other array shown after its shape's ``repr``); ``patch``: the points
        :func:`unrestored` found, as :func:`pack` holds them; ``missing``: the CRC-32 of the
        :data:`MISSING` member's NPY bytes (a bool array of ``shape``), which the caller writes
        itself: its value here is ``None``.
        """
        return _assemble(
            dtype,
            self.encoded,
            self.arrays,
            factor,
            _stamp(crc, shape, fields, ()),
            exact=None,
            patch=patch,
            missing=missing,
            stored=False,
        )


def unrestored(block: np.ndarray, seen: np.ndarray, factor: float) -> np.ndarray:
    """Flat C-order indices of the points of ``block`` (of a map streamed a block at a time) that
    its standard heights ``seen`` (NaN where missing) do not give back bit for bit, as :func:`pack`
    restores them: the points of its patch."""
    candidate = restore(seen, block.dtype, factor)
    if _same_bits(block, candidate):
        return np.empty(0, dtype=np.intp)
    return _differing(block, candidate)


def _encoded(meta: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    encoded, arrays = metadata.encode(meta, reserved=set(RESERVED))
    for name, value in arrays.items():
        header_bytes(value, f"metadata array {name!r}")
    return encoded, arrays


def _assemble(
    dtype: np.dtype,
    encoded: dict[str, Any],
    arrays: Mapping[str, np.ndarray],
    factor: float,
    stamp: str,
    *,
    exact: np.ndarray | None,
    patch: tuple[np.ndarray, np.ndarray] | None,
    missing: np.ndarray | int | None,
    stored: bool,
) -> dict[str, Any]:
    """``{record.json: its bytes, member name: NPY bytes, ...}``; a ``missing`` given as the CRC-32
    of its NPY bytes (a member the caller streams) is listed with ``None``."""
    members: dict[str, bytes | None] = {}
    crcs: dict[str, str] = {}
    if exact is not None:
        members[HEIGHT_MAP] = npy_bytes(exact)
    if patch is not None:
        members[PATCH_AT], members[PATCH_VALUES] = npy_bytes(patch[0]), npy_bytes(patch[1])
    if isinstance(missing, np.ndarray):
        members[MISSING] = npy_bytes(missing)
    elif missing is not None:
        members[MISSING], crcs[MISSING] = None, f"{missing:08x}"
    for name, value in arrays.items():
        members[name] = npy_bytes(value)
    described: dict[str, Any] = {
        "dtype": dtype.str,
        "factor": factor,
        "exact": HEIGHT_MAP if exact is not None else None,
        "missing": MISSING if missing is not None else None,
    }
    if patch is not None:
        described["patch"] = [PATCH_AT, PATCH_VALUES]
    if stored:
        described["stored"] = True
    record = {
        # a version 2 reader reads what needs no more; it would ignore a patch or stored numbers
        "tmd_nb": RECORD_VERSION if stored or patch is not None else 2,
        "height": described,
        "fingerprint": stamp,
        "checksums": {name: crcs[name] if raw is None else _checksum(raw) for name, raw in members.items()},
        "metadata": encoded,
    }
    # ASCII: a lone surrogate in a key or string survives as a JSON escape.
    text = _sealed(json.dumps(record, ensure_ascii=True, allow_nan=False))
    metadata.check_json_text(text, "the metadata")  # what unpack would refuse is refused here
    return {RECORD: text.encode("ascii"), **members}


def restores(block: np.ndarray, stored: np.ndarray) -> bool:
    """Whether ``stored`` (a block of the numbers a format stores) gives back ``block`` of the map bit
    for bit, as :func:`pack` restores it: a map all of whose blocks do needs no patch or exact copy."""
    return _same_bits(block, from_stored(stored, block.dtype))


class Gathered:
    """The fingerprint :func:`pack` gives stored numbers (``stored``), gathered as they stream.

    :meth:`add_stored` takes their little-endian bytes in C order, cut anywhere (even within a
    number): their CRC-32, every NaN made the same NaN, as :func:`fingerprint` computes it over
    the whole, so that a map need never be whole to be fingerprinted.
    """

    def __init__(self, dtype: np.dtype, shape: tuple[int, int], stored_dtype: np.dtype) -> None:
        self.dtype, self.shape, self.stored_dtype = dtype, shape, stored_dtype.newbyteorder("<")
        self.crc = 0
        self._carry = b""

    def add_stored(self, piece: memoryview) -> None:
        data = memoryview(piece).cast("B")
        if self.stored_dtype.kind != "f":
            self.crc = crc32_of(data, self.crc)
            return
        size = self.stored_dtype.itemsize
        if self._carry:
            need = size - len(self._carry)
            self._carry += bytes(data[:need])
            data = data[need:]
            if len(self._carry) < size:
                return
            self._crc_numbers(memoryview(self._carry))
            self._carry = b""
        whole = len(data) - len(data) % size
        self._crc_numbers(data[:whole])
        self._carry = bytes(data[whole:])

    def _crc_numbers(self, data: memoryview) -> None:
        values = np.frombuffer(data, dtype=self.stored_dtype)
        nan = np.isnan(values)
        if nan.any():
            values = np.where(nan, np.array(np.nan, self.stored_dtype), values)
            data = values.view(np.uint8).data
        self.crc = crc32_of(data, self.crc)

    def fingerprint(self, fields: Mapping[str, Any]) -> str:
        """What :func:`fingerprint` gives the whole stored numbers (``stored``), with ``fields``."""
        if self._carry:
            raise ValueError(f"{len(self._carry)} bytes of the stored numbers are not a whole number")
        crc = zlib.crc32(self.stored_dtype.str.encode("ascii"), self.crc)
        return _stamp(crc, self.shape, fields, ())


@dataclass
class Record:
    """What :func:`unpack` found: the height map and metadata, or why the record was not used."""

    height_map: np.ndarray | None
    metadata: dict[str, Any]
    #: False when the standard heights changed since tmd_nb wrote the file (other software edited it).
    current: bool
    #: When not ``current``: the points the writer filled although they were missing (the
    #: ``__missing__`` member, of the file's grid), for a reader that can tell whether they still
    #: stand for no measurement; else None.
    missing: np.ndarray | None = None


def unpack(
    members: Mapping[str, bytes],
    seen: np.ndarray | Callable[[], np.ndarray],
    where: str,
    *,
    fields: Mapping[str, Any] | None = None,
    extra: tuple[np.ndarray, ...] = (),
    legacy: np.ndarray | Callable[[], np.ndarray] | None = None,
    stored: np.ndarray | None = None,
    standard: Callable[[Mapping[str, Any]], float] | None = None,
    blocks: Blocks | None = None,
) -> Record:
    """Read the record ``members`` (as :func:`pack` made them) of a file whose standard heights are ``seen``.

    ``fields`` and ``extra`` are what :func:`pack` was given, as the file's reader sees them now;
    ``legacy`` the heights as a version 1 record fingerprinted them, when that differs from
    ``seen``; ``stored`` the numbers the file stores for the heights, if the format gives them
    (a version 3 record with ``height.stored`` is read from them). ``standard``, for a format whose
    ``seen`` are the map's standard heights (where they are finite), gives the factor of the
    metadata's height unit: a map restored is then checked to give ``seen`` back, in that unit,
    since the fingerprint covers the file's data but not the record's description of it (an edited
    factor or dtype, or a dropped exact map, would change every height). ``seen`` may be a function
    making the heights, called only when they are needed, and so may ``legacy``; ``blocks`` the
    same heights a block at a time (:class:`Blocks`), which a current record with a seal is
    restored from without ``seen`` being called. Raises :class:`FormatError` naming ``where`` for
    a malformed or damaged record.
    """
    text = members[RECORD]
    if len(text) > MAX_RECORD:
        raise FormatError(f"{where}: its tmd_nb record is {len(text)} bytes, more than the {MAX_RECORD} allowed")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where}: its tmd_nb record is not UTF-8 text (byte {exc.start})") from None
    try:  # within the metadata limits (values counted, depth bounded) before anything is built
        obj = metadata.loads(decoded, f"{where}: its tmd_nb record")
    except ValueError as exc:
        raise FormatError(str(exc)) from None
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
        missing = height.get("missing")
        by_stored = obj["tmd_nb"] >= 3 and height.get("stored", False) is True
        patched = obj["tmd_nb"] >= 3 and height.get("patch") is not None
        if patched and height["patch"] != [PATCH_AT, PATCH_VALUES]:
            raise ValueError("malformed patch")
        stamp = str(obj["fingerprint"])
        encoded = obj["metadata"]
        checksums = obj.get("checksums", {})
        if (
            type(encoded) is not dict
            or type(checksums) is not dict
            or (exact is not None and exact != HEIGHT_MAP)
            or (missing is not None and missing != MISSING)
        ):
            raise ValueError("malformed fields")
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # 1e400 as an int: OverflowError
        raise FormatError(f"{where}: its tmd_nb record is malformed: {exc}") from None
    check_height_map_header(dtype, (1, 1), f"{where} tmd_nb record")
    if obj["tmd_nb"] >= 2:
        unlisted = [name for name in members if name != RECORD and name not in checksums]
        absent = [name for name in checksums if name not in members]
        if unlisted or absent:
            raise FormatError(
                f"{where}: its tmd_nb record lists members {sorted(checksums)!r} but the file holds "
                f"{sorted(n for n in members if n != RECORD)!r}"
            )
    arrays = {}
    for name, raw in members.items():  # each member read once: a format may inflate it on demand
        if name == RECORD:
            continue
        if name in checksums and checksums[name] != _checksum(raw):
            raise FormatError(f"{where}: its tmd_nb member {name!r} is damaged (its checksum does not match)")
        # the patch and the missing points are only read here: views of the member's bytes
        inner = name in (MISSING, PATCH_AT, PATCH_VALUES)
        arrays[name] = _array(raw, f"{where} tmd_nb member {name!r}", copy=not inner)
    gaps = arrays.pop(MISSING, None) if missing is not None else None
    patch = (arrays.pop(PATCH_AT, None), arrays.pop(PATCH_VALUES, None)) if patched else None
    try:
        meta = metadata.decode(encoded, arrays, where=f"{where} tmd_nb metadata")
    except (ValueError, RecursionError) as exc:
        raise FormatError(str(exc)) from None
    if HEIGHT_MAP in meta:
        raise FormatError(
            f"{where}: its tmd_nb record's metadata has a 'height_map' key, which would replace the height map"
        )
    whole: np.ndarray | None = None  # the heights, once ``seen`` has been called

    def heights() -> np.ndarray:
        nonlocal whole
        if whole is None:
            whole = seen() if callable(seen) else seen
        return whole

    quick: np.ndarray | None = None  # the map restored by _restore_quickly, when it applies
    if by_stored:
        if stored is None:
            raise FormatError(f"{where}: its tmd_nb record is read from stored numbers this file does not give")
        whole = stored
        current = stamp == fingerprint(stored, fields or {}, extra, stored=True)
    elif obj["tmd_nb"] < 2:
        whole = heights() if legacy is None else legacy() if callable(legacy) else legacy
        current = stamp == fingerprint(whole)
    else:
        found = None
        if exact is None:
            # read a block at a time only where nothing needs the whole heights after (a sealed record)
            source = blocks if blocks is not None and "seal" in obj else heights()
            found = _restore_quickly(source, dtype, factor, gaps if missing is not None else None, patch, where)
        if found is not None and stamp == _stamp(found[1], found[0].shape, fields, extra):
            current, quick = True, found[0]
        else:  # NaNs in the data (the fingerprint makes them alike), or the data changed
            current = stamp == fingerprint(heights(), fields or {}, extra)
    # the heights were read whole, unless a sealed record was restored from the blocks alone
    shape = blocks.shape if whole is None and blocks is not None else heights().shape
    if not current:
        usable = gaps is not None and gaps.dtype == np.bool_ and gaps.shape == shape
        return Record(None, meta, current=False, missing=gaps if usable else None)
    if missing is not None:
        if gaps is None:
            raise FormatError(f"{where}: its tmd_nb record refers to a missing {MISSING!r} member")
        if gaps.dtype != np.bool_ or gaps.shape != shape:
            raise FormatError(f"{where}: its tmd_nb member {MISSING!r} is not a bool array of shape {shape}")
    if exact is not None:
        if HEIGHT_MAP not in arrays:
            raise FormatError(f"{where}: its tmd_nb record refers to a missing exact height map")
        array = arrays[HEIGHT_MAP]
        check_height_map_header(array.dtype, array.shape, f"{where} tmd_nb height map")
        if array.shape != shape and not (array.size == 0 and shape == (1, 1)):
            raise FormatError(f"{where}: its tmd_nb height map has shape {array.shape}, the file's data {shape}")
        return Record(array, meta, current=True)
    if quick is not None and "seal" in obj:
        restored = quick  # restored, missing points and patch included, and nothing else needs the heights
    else:
        seen = heights() if gaps is None else np.where(gaps, np.nan, heights())
        if quick is not None:
            restored = quick
        else:
            restored = from_stored(seen, dtype) if by_stored else restore(seen, dtype, factor)
            if patch is not None:
                _apply(restored, patch, where)
        if by_stored and not _stores(restored, seen):
            raise FormatError(
                f"{where}: its tmd_nb record does not describe the file's heights "
                f"(as {dtype.str} they are other numbers than the file stores)"
            )
        if "seal" not in obj and standard is not None and not _stands_for(restored, factor, seen, standard(meta)):
            # The fingerprint covers the file's data, not the record's own description of it: an edited
            # factor or dtype, or a dropped exact map, would otherwise change every height silently.
            raise FormatError(
                f"{where}: its tmd_nb record does not describe the file's heights "
                f"(as {dtype.str} in units of {factor!r} m they are other numbers)"
            )
    if "seal" in obj and not by_stored and not _seal_holds(text):
        raise FormatError(
            f"{where}: its tmd_nb record does not describe the file's heights "
            "(the record changed after it was written: its seal does not match)"
        )
    return Record(restored, meta, current=True)


def _stores(restored: np.ndarray, stored: np.ndarray, block: int = 1 << 20) -> bool:
    """Whether ``restored`` (its real part) cast to the stored numbers' type gives them back, as
    the writer made them: a record naming another dtype (a float map read as bool) is refused.
    Compared a block at a time, so that no copy of the map is made."""
    if restored is stored:
        return True
    if restored.shape != stored.shape:
        return False
    flat, numbers = restored.reshape(-1), stored.reshape(-1)
    for start in range(0, flat.size, block):
        part = flat[start : start + block]
        part = part.real if part.dtype.kind == "c" else part
        with np.errstate(invalid="ignore", over="ignore"):
            cast = part.astype(numbers.dtype)
        if not np.array_equal(cast, numbers[start : start + block], equal_nan=numbers.dtype.kind == "f"):
            return False
    return True


def _stands_for(restored: np.ndarray, factor: float, seen: np.ndarray, expected: float) -> bool:
    """Whether ``restored`` in units of ``factor`` (the factor of its metadata's unit, ``expected``)
    gives back the standard heights ``seen`` where they are finite, as the writer made them."""
    if factor != expected:
        return False
    try:
        standard = standard_heights(restored, factor)
    except ValueError:
        return False
    if standard.shape != seen.shape:
        return False
    finite = np.isfinite(seen)  # a missing point's height is the record's to give (a patch, the exact map)
    return bool(np.array_equal(standard[finite], seen[finite]))


def _checked_patch(
    patch: tuple[np.ndarray | None, np.ndarray | None], shape: tuple[int, ...], dtype: np.dtype, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """The patch's indices and values; FormatError if they do not fit a map of ``shape`` and ``dtype``."""
    at, values = patch
    if at is None or values is None:
        raise FormatError(f"{where}: its tmd_nb record refers to a missing patch member")
    if (
        at.dtype.kind != "u"
        or at.ndim != 1
        or values.shape != at.shape
        or values.dtype != dtype
        or (at.size and int(at.max()) >= math.prod(shape))
        or (at.size > 1 and not bool(np.all(at[1:] > at[:-1])))  # as written: each point once, in order
    ):
        raise FormatError(f"{where}: its tmd_nb patch does not fit the height map {shape} {dtype}")
    return at, values


def _apply(restored: np.ndarray, patch: tuple[np.ndarray | None, np.ndarray | None], where: str) -> None:
    """Put the patch's exact values into ``restored``; FormatError if the patch does not fit it."""
    at, values = _checked_patch(patch, restored.shape, restored.dtype, where)
    if not restored.flags.c_contiguous:
        raise FormatError(f"{where}: its tmd_nb patch does not fit the height map {restored.shape} {restored.dtype}")
    restored.reshape(-1)[at] = values


def _restore_quickly(
    seen: np.ndarray | Blocks,
    dtype: np.dtype,
    factor: float,
    gaps: np.ndarray | None,
    patch: tuple[np.ndarray | None, np.ndarray | None] | None,
    where: str,
) -> tuple[np.ndarray, int] | None:
    """``restore``, the missing points and the patch in one blockwise pass, with the CRC-32 of ``seen``'s bytes.

    The CRC is the fingerprint's when ``seen`` holds no NaN (a NaN's payload is made alike there).
    ``seen`` may be :class:`Blocks`, read a block at a time within the pass. ``None`` when the map
    is not a native float one, or ``seen`` not contiguous float64: the caller takes the general
    way, which also names what does not fit.
    """
    shape = seen.shape
    size = math.prod(shape)
    if (
        not _native_float(dtype)
        or (
            isinstance(seen, np.ndarray)
            and (seen.dtype != np.float64 or not seen.dtype.isnative or not seen.flags.c_contiguous)
        )
        or size == 0
        or (gaps is not None and (gaps.dtype != np.bool_ or gaps.shape != shape))
    ):
        return None
    at, values = _checked_patch(patch, shape, dtype, where) if patch is not None else (None, None)
    restored = np.empty(shape, dtype=dtype)
    out = restored.reshape(-1)
    if isinstance(seen, np.ndarray):
        flat = seen.reshape(-1)
        seen = Blocks(shape, lambda start, stop: flat[start:stop])
    read = seen.read
    holes = None if gaps is None else np.ascontiguousarray(gaps).reshape(-1)

    def job(start: int, stop: int) -> tuple[int, int]:
        block, back = read(start, stop), out[start:stop]
        with np.errstate(over="ignore", invalid="ignore"):
            _restore_into(back, block, factor)
        if holes is not None:
            np.copyto(back, np.nan, where=holes[start:stop])
        return crc32_of(block.data), block.nbytes

    crc = combine_crcs(map_blocks(size, 8, job))
    if at is not None:  # one scatter: per block, it held the GIL the other thread was waiting for
        out[at] = values
    return restored, crc
