"""SDF files (ISO 25178-71 surface data files), read and written through the ``sdfio`` library.

An SDF file is three records: a header, the data area and a trailer. Its magic (8 bytes) names the
encoding (``a`` ASCII, ``b`` binary, either letter case) and the revision (``ISO-1.0``,
``ISO-2.0``, or ``BCR-1.0``, the proposal before the standard). The binary header, little-endian::

    magic 8s | ManufacID 10s | CreateDate 12s | ModDate 12s (DDMMYYYYhhmm)
    NumPoints, NumProfiles: uint16 each (ISO-1.0, BCR-1.0) or uint32 each (ISO-2.0)
    Xscale, Yscale, Zscale, Zresolution: float64 | Compression, DataType, CheckType: uint8

(81 bytes, or 85 for ISO-2.0), then ``NumProfiles`` x ``NumPoints`` values of ``DataType`` (0-2
uint8/16/32, 3 float32, 4-6 int8/16/32, 7 float64), row by row, then the trailer to the end of
the file. An ASCII file holds the same fields as ``Name = Value`` lines and whitespace-separated
numbers, each record ended by a line ``*``. A height is the stored number times ``Zscale``, in
metres; the pixel spacing is ``Xscale``/``Yscale`` metres. A missing point is the type's minimum
(ISO: -32768, ..., -DBL_MAX for float64) or maximum (BCR), or ``BAD`` in an ASCII file. BCR-1.0
files store the last row first (as MountainsMap reads them; Gwyddion 2.62 shows them flipped).

What :func:`export_to_sdf` writes
---------------------------------
A binary ISO-1.0 file (ISO-2.0 when a side has more than 65535 points, which the 2-byte
counts of ISO-1.0 cannot hold; Gwyddion 2.62 does not read ISO-2.0 binary files):

Header
    ``ManufacID`` ``tmd_nb``, ``CreateDate`` from the ``date`` key (a ``datetime``; else now),
    ``ModDate`` now, ``Xscale``/``Yscale`` the pixel spacing in metres (``x_length / width``
    times the metres of ``lateral_unit``; without lengths, one lateral unit per pixel),
    ``Zscale`` = the metres of ``height_unit``, so the stored numbers are the heights in their
    own unit; ``Zresolution`` -1 (unknown). Units default to millimetres.
Data type
    int16 for bool and 8/16-bit integer maps, int32 for uint16/int32 maps (the next wider type
    when a value is the type's minimum, the missing-point marker), float64 for everything else
    (complex maps give their real part). NaN and infinite heights are missing points (-DBL_MAX
    in float64: Gwyddion 2.62 masks only NaN there, so it shows them as -1.8e308 x Zscale).
Trailer (``Name = Value`` lines, 7-bit ASCII, as ISO-2.0 requires)
    tmd_nb's record (:mod:`tmd_nb.storage.embedded`): ``TmdNbRecord = <record.json>``,
    ``TmdNbArray<i> = <base64 name> <base64 NPY bytes>`` for each array, and ``TmdNbEnd = <number
    of TmdNb fields before it>`` (so that a cut trailer is noticed). The record's standard heights
    are the stored numbers themselves (its factor is 1), and ``height_map`` is stored only when
    they do not give back the exact array (float64 NaN payloads, infinities, uint64...).
    The fields of an ``sdf_trailer`` dict key (a loaded SDF file's trailer) come first, so that
    other software sees them again. The offsets (``x_offset``, ``y_offset``) have no SDF field.

What :func:`load_sdf` reads
---------------------------
A file tmd_nb wrote comes back exactly as saved. Any other SDF file (every revision, encoding
and data type ``sdfio`` reads) loads as ``{"height_map": float64 metres, "x_length",
"y_length" (metres: Xscale x NumPoints, Yscale x NumProfiles), "x_offset": 0.0,
"y_offset": 0.0, "lateral_unit": "m", "height_unit": "m"}`` plus ``date`` (``CreateDate``, when
recorded), ``sdf_header`` (a dict: ``revision``, ``encoding``, ``manufacturer_id``,
``data_type``, ``z_scale``, ``z_resolution``, ``create_date``, ``mod_date``) and ``sdf_trailer``
(a dict of its ``Name = Value`` fields, or its text; left out, with a warning, past
:data:`MAX_TRAILER_TEXT` characters). A profile loads as a one-row map (its ``Yscale``, which the
standard calls meaningless, is taken when positive, else ``Xscale``). Missing points and
non-finite values are NaN. A file whose heights or Zscale changed after tmd_nb wrote it loads its
own heights and lengths, with a warning, keeping the other tmd_nb metadata keys.

Safety: the file is read whole (it is a regular file of known size); for a binary file the
counts of the header are checked against the bytes that follow it before ``sdfio`` sees it, and
``sdfio`` checks an ASCII file's count of numbers before building the array. Scales that are not
positive finite numbers, empty grids, compressed or checksummed data areas and anything else
malformed raise :class:`~tmd_nb.errors.FormatError` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime as dt
import math
import os
import re
import stat
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import DroppedContentWarning, FormatError, ModifiedFileWarning, renamed_keyword, warn
from ..heightmap import in_memory, split_height_map
from ..storage import embedded, metadata, units
from ..storage._io import Progress, open_file, read_into
from ..storage._io import Reporter as _Reporter
from ..storage.atomic import atomic_write
from .base import Format, PathLike

__all__ = ["FORMAT", "MAGICS", "check", "export_to_sdf", "load_from_sdf", "load_sdf", "looks_like_sdf"]

#: Every magic an SDF file may start with (``sdfio.MAGICS``, without importing sdfio).
MAGICS = tuple(
    f"{prefix}{revision}".encode("ascii") for prefix in "abAB" for revision in ("ISO-1.0", "ISO-2.0", "BCR-1.0")
)
#: Longest trailer (characters) kept as the ``sdf_trailer`` key of a file from other software.
MAX_TRAILER_TEXT = 1 << 20
MANUFACTURER = "tmd_nb"
RECORD_FIELD = "TmdNbRecord"
ARRAY_FIELD = "TmdNbArray"
#: The last field of the record: how many ``TmdNb`` fields precede it (a cut trailer lacks it).
END_FIELD = "TmdNbEnd"
#: Largest side of a grid in the ISO-1.0 binary header (2-byte counts).
MAX_ISO1_SIDE = 0xFFFF
_PREFIX = 8 + 10 + 12 + 12  # magic, ManufacID, CreateDate, ModDate
_TAIL = struct.Struct("<ddddBBB")
_COUNTS = {"ISO-2.0": struct.Struct("<II")}
_COUNTS_SHORT = struct.Struct("<HH")
_ITEM_SIZES = {0: 1, 1: 2, 2: 4, 3: 4, 4: 1, 5: 2, 6: 4, 7: 8}
_TAGGED = re.compile(r"^(\w+)\s*=\s*(.*)$")
_ASCII_COUNT = re.compile(rb"^[ \t]*(NumPoints|NumProfiles)[ \t]*=[ \t]*(-\d+)[ \t]*\r?$", re.MULTILINE | re.IGNORECASE)
_TRAILER_VALUE = re.compile(r"[\x20-\x7e]*")


def _strip_bom(head: bytes) -> bytes:
    return head[len(codecs.BOM_UTF8) :] if head.startswith(codecs.BOM_UTF8) else head


def looks_like_sdf(head: bytes, path: PathLike) -> bool:
    """Whether the file starts with an SDF magic (after a UTF-8 byte order mark, which some tools write)."""
    return _strip_bom(head)[:8] in MAGICS


def _counts(revision: str) -> struct.Struct:
    return _COUNTS.get(revision, _COUNTS_SHORT)


def header_size(revision: str) -> int:
    """Bytes of the binary header of ``revision`` (``"ISO-1.0"``, ``"ISO-2.0"``, ``"BCR-1.0"``)."""
    return _PREFIX + _counts(revision).size + _TAIL.size


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _factor(unit: str, key: str, what: str) -> float:
    factor = units.metres_per(unit)
    if factor is None:
        raise ValueError(
            f"{key} {unit!r} is not a length unit, so {what} cannot be stored in metres; "
            f"use one of {', '.join(repr(u) for u in units.LENGTHS)}"
        )
    return factor


def _scales(meta: Mapping[str, Any], shape: tuple[int, int]) -> tuple[float, float, float]:
    """``(Xscale, Yscale, Zscale)`` in metres; ``ValueError`` for a unit or size SDF cannot hold."""
    phys = units.physical(meta)
    lateral = _factor(phys.lateral_unit, "lateral_unit", "the lengths")
    height = _factor(phys.height_unit, "height_unit", "the heights")
    spacing = phys.spacing(shape) or (1.0, 1.0)
    x_scale, y_scale = spacing[0] * lateral, spacing[1] * lateral
    for key, value in (("x_length", x_scale), ("y_length", y_scale)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(
                f"{key} {meta.get(key)!r} {phys.lateral_unit} gives a pixel spacing of {value!r} m, "
                "which SDF cannot hold (a positive finite number)"
            )
    return x_scale, y_scale, height


def _data_type(array: np.ndarray) -> int:
    """The SDF data type code (5 int16, 6 int32, 7 float64) that holds ``array`` exactly, if any does."""
    kind, size = array.dtype.kind, array.dtype.itemsize
    if kind == "b" or (kind in "iu" and size == 1) or (kind == "i" and size == 2):
        return 6 if array.size and kind == "i" and size == 2 and array.min() == -(2**15) else 5
    if (kind == "u" and size == 2) or (kind == "i" and size == 4):
        return 7 if array.size and kind == "i" and size == 4 and array.min() == -(2**31) else 6
    return 7


_RAW_DTYPES: dict[int, np.dtype[Any]] = {5: np.dtype("<i2"), 6: np.dtype("<i4"), 7: np.dtype("<f8")}


def _raw(shown: np.ndarray, code: int, factor: float) -> np.ndarray:
    """The numbers of the data area: the heights in their own unit, missing points as the ISO marker."""
    dtype = _RAW_DTYPES[code]
    if code != 7:
        return np.ascontiguousarray(shown, dtype=dtype)
    values = embedded.standard_heights(shown, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        bad = ~np.isfinite(values * factor)  # a height too large for metres is missing, as NaN is
    if bad.any():
        values = np.where(bad, np.finfo(np.float64).min, values)
    return np.ascontiguousarray(values, dtype=dtype)


def _decode(raw: np.ndarray, revision: Any) -> np.ndarray:
    """The stored numbers as float64, NaN where the revision's marker (or NaN) says a point is missing."""
    seen = raw.astype(np.float64)
    invalid = revision.rules.sentinel.is_invalid(raw, raw.dtype)
    seen[invalid] = np.nan
    return seen


def _date(value: Any) -> dt.datetime | None:
    """``value`` if it is a datetime an SDF header can hold (year 1900-9999, convertible to UTC)."""
    if type(value) is not dt.datetime or not 1900 <= value.year <= 9999:
        return None
    try:
        value.astimezone(dt.UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return value


def _text_fields(meta: Mapping[str, Any]) -> list[str]:
    """The ``sdf_trailer`` fields that an SDF trailer can hold again, as ``Name = Value`` lines."""
    given = meta.get("sdf_trailer")
    if not isinstance(given, Mapping):
        return []
    lines = []
    for name, value in given.items():
        if (
            isinstance(name, str)
            and isinstance(value, str)
            and re.fullmatch(r"\w+", name, re.ASCII)
            and not name.startswith("TmdNb")
            and _TRAILER_VALUE.fullmatch(value)
        ):
            lines.append(f"{name} = {value.strip()}")
    return lines


def _trailer(record: Mapping[str, bytes], meta: Mapping[str, Any]) -> bytes:
    lines = _text_fields(meta)
    lines.append(f"{RECORD_FIELD} = {record[embedded.RECORD].decode('ascii')}")
    arrays = [(n, c) for n, c in record.items() if n != embedded.RECORD]
    for i, (name, content) in enumerate(arrays, 1):
        encoded = base64.b64encode(name.encode("utf-8", "surrogatepass")).decode("ascii")
        lines.append(f"{ARRAY_FIELD}{i} = {encoded} {base64.b64encode(content).decode('ascii')}")
    lines.append(f"{END_FIELD} = {len(arrays) + 1}")
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def check(data: Any) -> None:
    """Raise ``TypeError``/``ValueError`` if :func:`export_to_sdf` would refuse ``data`` (cheap: no heights copied)."""
    array, meta = split_height_map(data, lazy=True)  # checked, not computed
    rows, cols = array.shape
    _scales(meta, (max(rows, 1), max(cols, 1)))
    metadata.encode(meta, reserved={"height_map", embedded.RECORD})


def _build(data: Any) -> bytes:
    """Validate ``data`` and serialize the whole file; ValueError/TypeError before anything is written."""
    import sdfio

    array, meta = split_height_map(in_memory(data))  # a Dask array is computed: the file is written whole
    shown = embedded.grid(array)
    x_scale, y_scale, factor = _scales(meta, shown.shape)
    revision = sdfio.Revision.ISO_1_0 if max(shown.shape) <= MAX_ISO1_SIDE else sdfio.Revision.ISO_2_0
    code = _data_type(shown)
    raw = _raw(shown, code, factor)
    seen = _decode(raw, revision)  # what the reader will see, missing points as NaN
    record = embedded.pack(array, meta, seen, 1.0)
    trailer = _trailer(record, meta)
    now = dt.datetime.now(dt.UTC)
    try:
        file = sdfio.SdfFile.from_array(
            seen * factor,
            x_scale=x_scale,
            y_scale=y_scale,
            z_scale=factor,
            format=sdfio.FileFormat.BINARY,
            metadata=sdfio.Metadata(
                revision=revision,
                manufacturer_id=MANUFACTURER,
                create_date=_date(meta.get("date")) or now,
                mod_date=now,
                data_type=sdfio.DataType(code),
            ),
            trailer=trailer,
        )
        content = bytearray(file.dumps())
    except (sdfio.SdfError, ValueError, OverflowError) as exc:
        raise ValueError(f"cannot write this height map as SDF: {exc}") from None
    # sdfio codes the heights from metres (divided by Zscale, which can be one ulp off); the data
    # area gets the exact numbers instead, so that the heights come back bit for bit.
    start = header_size(str(revision))
    if len(content) != start + raw.nbytes + len(trailer):
        raise RuntimeError(f"sdfio wrote {len(content)} bytes, not the {start + raw.nbytes + len(trailer)} expected")
    content[start : start + raw.nbytes] = raw.tobytes()
    return bytes(content)


def export_to_sdf(
    data: np.ndarray | Mapping[str, Any], output_path: PathLike, *, progress: Progress | None = None
) -> str:
    """Save a height map and its metadata as an SDF file (ISO 25178-71, binary).

    Other software (MountainsMap, Gwyddion, sdfio) reads the heights and lengths in metres
    (converted from ``height_unit`` and ``lateral_unit``, millimetres by default); tmd_nb reads
    back exactly what was saved (the layout is in the module docstring).

    Parameters
    ----------
    data : numpy.ndarray or mapping
        A 2-D height map, or a dict with a ``"height_map"`` array and metadata (any value
        :func:`tmd_nb.export_to_npz` stores). A Dask array is computed first: SDF files are
        written whole.
    output_path : str or os.PathLike
        Where to write; the file is replaced atomically.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called when the file is written.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    TypeError
        A metadata value cannot be stored (the message names its key), or the height map is not
        a numeric 2-D array.
    ValueError
        ``lateral_unit`` or ``height_unit`` is not a length unit, or the lengths give a pixel
        spacing that is not a positive finite number of metres; raised before anything is written.
    """
    content = _build(data)
    with atomic_write(output_path) as fp:
        fp.write(content)
    if progress is not None:
        progress(len(content), len(content))
    return os.path.abspath(output_path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    UnicodeError,
    struct.error,
    MemoryError,
    RecursionError,
)


def _read_bytes(path: PathLike, where: str, progress: Progress | None) -> bytes:
    with open_file(path, where) as fp:
        st = os.fstat(fp.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{where} is not a regular file")
        buf = bytearray(st.st_size)
        read_into(fp, memoryview(buf), where, _Reporter(progress, st.st_size))
    return bytes(buf)


def _check_binary_claims(body: bytes, where: str) -> None:
    """Refuse a binary header whose counts claim more data than the file holds, before sdfio reads it."""
    revision = body[1:8].decode("ascii", "replace").upper()
    counts = _counts(revision)
    size = _PREFIX + counts.size + _TAIL.size
    if len(body) < size:
        raise FormatError(f"{where} is truncated: {len(body)} bytes, less than the {size}-byte SDF header")
    points, profiles = counts.unpack_from(body, _PREFIX)
    code = body[size - 2]
    if code not in _ITEM_SIZES:
        raise FormatError(f"{where} has an unknown SDF data type code {code}")
    claimed = points * profiles * _ITEM_SIZES[code]
    if claimed > len(body) - size:
        raise FormatError(
            f"{where} is truncated or its header lies: {profiles} x {points} points of {_ITEM_SIZES[code]} "
            f"bytes need {claimed} bytes, but {len(body) - size} follow the header"
        )


def _parse(body: bytes, where: str) -> Any:
    import sdfio

    if body[:1] in (b"b", b"B"):
        _check_binary_claims(body, where)
    else:  # numpy would refuse the shape with a message about reshaping
        negative = _ASCII_COUNT.search(body, 0, 1 << 16)
        if negative is not None:
            field, value = (g.decode("ascii") for g in negative.groups())
            raise FormatError(f"{where} has {field} = {value}; a count cannot be negative")
    try:
        return sdfio.SdfFile.loads(body)
    except sdfio.SdfError as exc:
        problem = str(exc)
    except _LIBRARY_ERRORS as exc:
        problem = f"{type(exc).__name__}: {exc}"
    # Raised outside the handler: no chain keeps sdfio's exception (and its frames) alive.
    raise FormatError(f"{where} is not a readable SDF file: {problem}")


def _positive(value: float, name: str, where: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise FormatError(f"{where} has {name} = {value!r}; it must be a positive finite number")
    return float(value)


def _raw_seen(file: Any, body: bytes) -> np.ndarray:
    """The stored numbers as float64 (NaN where missing), as the record's fingerprint was taken."""
    import sdfio

    header = file.header
    revision = header.revision
    rows, cols = file.data.shape
    if header.format is sdfio.FileFormat.BINARY:
        dtype = np.dtype(
            {0: "<u1", 1: "<u2", 2: "<u4", 3: "<f4", 4: "<i1", 5: "<i2", 6: "<i4", 7: "<f8"}[int(header.data_type)]
        )
        raw = np.frombuffer(body, dtype=dtype, count=rows * cols, offset=header_size(str(revision)))
        return revision.rules.order_rows(_decode(raw, revision).reshape(rows, cols))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        values = file.data / header.z_scale
    if int(header.data_type) not in (3, 7):
        values = np.rint(values)
    return values


def _tagged(text: str) -> dict[str, str] | None:
    """The trailer's ``Name = Value`` fields, or None if a line is not one."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        found = _TAGGED.match(line)
        if found is None:
            return None
        fields[found.group(1)] = found.group(2).strip()
    return fields


def _numbers_as_stored(meta: Mapping[str, Any]) -> float:
    """The factor of tmd_nb's record: the data area holds the heights in their own unit."""
    return 1.0


def _record_members(trailer: str, where: str) -> dict[str, bytes] | None:
    """tmd_nb's record from the trailer, as :func:`embedded.unpack` takes it; None if there is none."""
    members: dict[str, bytes] = {}
    fields, end = 0, None
    for line in trailer.splitlines():
        name, _, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not name.startswith("TmdNb"):
            continue
        if name == END_FIELD:
            end = value
            break
        fields += 1
        if name == RECORD_FIELD:
            members[embedded.RECORD] = value.encode("ascii", "replace")
        elif name.startswith(ARRAY_FIELD) and name[len(ARRAY_FIELD) :].isdigit():
            parts = value.split(" ")
            try:
                key = base64.b64decode(parts[0], validate=True).decode("utf-8", "surrogatepass")
                content = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else None
            except (binascii.Error, ValueError):
                content = None
            if content is None:
                raise FormatError(f"{where}: its tmd_nb trailer field {name} is not two base64 texts")
            members[key] = content
    if not fields and end is None:
        return None
    if end != str(fields) or embedded.RECORD not in members:
        raise FormatError(f"{where}: its tmd_nb record in the trailer is cut short or damaged")
    return members


def _header_keys(file: Any, trailer: str, where: str) -> dict[str, Any]:
    header = file.header
    out: dict[str, Any] = {}
    if header.create_date is not None:
        out["date"] = header.create_date
    out["sdf_header"] = {
        "revision": str(header.revision),
        "encoding": header.format.name.lower(),
        "manufacturer_id": header.manufacturer_id,
        "data_type": header.data_type.name.lower(),
        "z_scale": float(header.z_scale),
        "z_resolution": float(header.z_resolution),
        "create_date": header.create_date,
        "mod_date": header.mod_date,
    }
    text = trailer.strip()
    if len(text) > MAX_TRAILER_TEXT:
        warn(
            f"{where}: its trailer of {len(text)} characters is not kept (more than {MAX_TRAILER_TEXT})",
            DroppedContentWarning,
        )
    elif text:
        out["sdf_trailer"] = _tagged(text) or text
    return out


@renamed_keyword("path", "file_path")
def load_from_sdf(file_path: PathLike, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load a height map and its metadata from an SDF file (ISO 25178-71).

    A file written by :func:`export_to_sdf` comes back exactly as saved; other files give their
    heights and lengths in metres with their header fields and trailer (see the module docstring).

    ``load_sdf`` is this function under its former name, kept as an alias; ``path=`` still
    works for ``file_path=``, with a :class:`~tmd_nb.TmdNbDeprecationWarning`.

    Parameters
    ----------
    file_path : str or os.PathLike
        The ``.sdf`` file: ISO-1.0, ISO-2.0 or BCR-1.0, ASCII or binary.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the file is read.

    Returns
    -------
    dict
        ``{"height_map": array, **metadata}``.

    Raises
    ------
    FormatError
        The file is not a readable SDF file, or its header claims more than the file holds.
    OSError
        The file cannot be opened.

    Warns
    -----
    UserWarning
        The heights were changed after tmd_nb wrote the file, or a long trailer is left out.
    """
    where = repr(os.fspath(file_path))
    body = _strip_bom(_read_bytes(file_path, where, progress))
    if body[:8] not in MAGICS:
        raise FormatError(f"{where} is not an SDF file: it starts with {bytes(body[:8])!r}")
    file = _parse(body, where)
    header = file.header
    rows, cols = file.data.shape
    if rows < 1 or cols < 1:
        raise FormatError(f"{where} holds {rows} profiles of {cols} points; an SDF grid needs at least one of each")
    x_scale = _positive(header.x_scale, "Xscale", where)
    z_scale = _positive(header.z_scale, "Zscale", where)
    if rows == 1:  # a profile: the standard calls Yscale meaningless
        y_scale = header.y_scale if math.isfinite(header.y_scale) and header.y_scale > 0 else x_scale
    else:
        y_scale = _positive(header.y_scale, "Yscale", where)
    heights = np.asarray(file.data, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        if not np.isfinite(heights).all():
            heights = np.where(np.isfinite(heights), heights, np.nan)
    standard: dict[str, Any] = {
        "x_length": x_scale * cols,
        "y_length": y_scale * rows,
        "x_offset": 0.0,
        "y_offset": 0.0,
        "lateral_unit": "m",
        "height_unit": "m",
    }
    trailer = file.trailer if isinstance(file.trailer, str) else bytes(file.trailer).decode("utf-8", "replace")
    members = _record_members(trailer, where)
    binary = _strip_bom(body[:16]).startswith(b"b")  # sdfio hands an ASCII file's trailer over stripped
    if str(file.header.manufacturer_id).strip() == MANUFACTURER and (
        members is None or (binary and not trailer.endswith("\r\n"))
    ):
        # tmd_nb always ends its files with the record's last line: without it the file was cut short
        raise FormatError(f"{where} was written by tmd_nb but is cut short: its trailer does not end with {END_FIELD}")
    if members is None:
        return {"height_map": heights, **standard, **_header_keys(file, trailer, where)}
    seen = _raw_seen(file, body)
    rec = embedded.unpack(members, seen, where, standard=_numbers_as_stored)
    if rec.current and units.metres_per(units.physical(rec.metadata).height_unit) == z_scale:
        return {"height_map": rec.height_map, **rec.metadata}
    warn(
        f"{where}: its heights changed after tmd_nb wrote it (edited by other software?); "
        "loaded the file's heights and lengths in metres, with the other tmd_nb metadata",
        ModifiedFileWarning,
    )
    kept = {k: v for k, v in rec.metadata.items() if k not in units.PHYSICAL_KEYS}
    return {"height_map": heights, **kept, **standard}


#: The former name of :func:`load_from_sdf`, kept as an alias (the same function).
load_sdf = load_from_sdf


FORMAT = Format(
    name="sdf",
    title="SDF",
    extensions=(".sdf",),
    summary="ISO 25178-71 surface data file: heights in metres, tmd_nb metadata kept in the trailer",
    recognise=looks_like_sdf,
    load=load_sdf,
    save=export_to_sdf,
    check=check,
    label="ISO 25178-71",
    library="sdfio",
)
