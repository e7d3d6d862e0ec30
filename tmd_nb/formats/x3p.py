"""X3P files (ISO 25178-72), read and written through the ``x3pio`` library.

What :func:`export_to_x3p` writes
---------------------------------
A standard X3P container (Amd 1:2020 revision) that ``x3pio.read`` with checksum verification,
MountainsMap, Gwyddion and R's x3ptools open:

``main.xml`` Record1
    A surface (``SUR``) on a regular grid: ``CX``/``CY`` incremental with the pixel spacing in
    metres (``x_length / width`` times the metres of ``lateral_unit``; on an axis without a
    length, one lateral unit per pixel) and offsets ``x_offset``/``y_offset`` in metres; a length
    or offset that cannot be written as given (not positive, not finite, beyond range in metres)
    is a ValueError or TypeError naming the key. ``CZ`` absolute with
    increment = the metres of ``height_unit`` (so the stored numbers are the heights in their own
    unit) and data type ``F`` for float16/float32 heights, ``D`` for other floats, complex (real
    part) and 32/64-bit unsigned and 64-bit integers, ``L`` for uint16/int32, ``I`` for bool and 8/16-bit
    integers. Units come from ``lateral_unit``/``height_unit``, else ``units``, else millimetres
    (``docs/FORMAT.md``, "Physical keys"); a unit that is no known length is a ValueError.
``main.xml`` Record2
    ``date`` (a ``datetime``; else now), ``creator``, ``instrument`` (a dict of manufacturer,
    model, serial, version; else tmd_nb as the software), ``calibration_date``,
    ``probing_system`` (a dict of type ``Contacting``/``NonContacting``/``Software`` and
    identification) and ``comment`` from the metadata, where they have those types.
``bindata/data.bin``
    The heights as they are, in their own unit, cast to the data type (little-endian): no
    conversion, so a float32 or float64 map is stored once and byte for byte; readers multiply
    by the Z increment to get metres (x3pio and Gwyddion do, for ``F``/``D`` as for ``I``/``L``).
    NaN and infinite heights are X3P's invalid points; integer maps have none, so no
    ``bindata/valid.bin`` is written.
Vendor extension files, IDs ``https://pypi.org/project/tmd-nb/<name>``
    tmd_nb's record (:mod:`tmd_nb.storage.embedded`, version 3, read from the stored numbers):
    ``record.json`` with every metadata key, typed, and ``<name>.npy`` for each array, plus
    ``height_map.npy`` only when the stored numbers do not give back the exact array (complex,
    64-bit integers, NaN payloads, infinities). Other software ignores them.

x3pio builds and checks ``main.xml`` (its data MD5 included); tmd_nb writes the zip itself
(:func:`tmd_nb.storage.archive.write_zip`): members deflated in parallel at the ``level`` NPZ
takes, ``main.xml`` first, then ``md5checksum.hex``, ``bindata/data.bin`` and the vendor files
in name order.

A Dask height map is streamed into ``bindata/data.bin`` block row by block row, as NPZ streams
it (at most two block rows in memory, besides the chunks being deflated): the MD5 that
``main.xml`` states and the record's fingerprint are gathered from the stored bytes as they are
written, so ``data.bin`` comes first and ``main.xml``, its checksum file and the vendor files
follow. Each member holds the same bytes, deflated alike, as the same map in memory gives. A
map whose stored numbers do not give it back bit for bit, so that the record needs a patch or an
exact copy (complex maps with an imaginary part, 64-bit integers beyond 2**53, float128), is
computed whole instead, once a block shows it: a stream cannot hold those members.

What :func:`load_x3p` reads
---------------------------
A file tmd_nb wrote comes back exactly as it was saved: x3pio checks ``main.xml`` (and its
checksum), and the heights are inflated in parallel, CRC checked and checked against the record's
fingerprint, without conversion. Any other X3P surface or profile loads
as ``{"height_map": float64 metres (CZ offset added), "x_length", "y_length", "x_offset",
"y_offset" (metres), "lateral_unit": "m", "height_unit": "m"}`` plus the Record2 fields present,
under the keys above (dates as ``datetime``, instrument and probing system as dicts). NaN marks
invalid points. A file whose heights, increments or offsets (z offset included) changed after
tmd_nb wrote it (edited by other software) loads its own heights and lengths in metres, with a
warning, keeping the other tmd_nb metadata keys; the record's fingerprint covers all of them.

Files that deviate from the standard load: a sub-folder holding the whole content, junk members
(``__MACOSX/``, ``.DS_Store``), unknown elements (x3pio ignores them); the ISO 5436-2000 root
element ``<ISO5436>`` (renamed to ``ISO5436_2`` in an in-memory copy of the container before
x3pio reads it); an MD5 checksum that does not match (a warning naming the file, then read
without verification).

Safety: before anything is decompressed, the zip's central directory is checked: at most
:data:`MAX_MEMBERS` members, stored or deflated only, each declared size within deflate's
largest ratio of its compressed size and within :data:`MAX_MEMBER_SIZE` (``main.xml``:
:data:`MAX_XML_SIZE`; ``record.json``: ``embedded.MAX_RECORD``), and no two entries sharing
bytes (one stream read as many members). ``main.xml`` is then read and refused if it declares an
encoding Python does not know or holds more than :data:`MAX_XML_ELEMENTS` elements and
attributes (x3pio builds the whole element tree); x3pio parses it with defusedxml and checks the
data size against the dimensions. x3pio reads the open file (not a copy of it) through a wrapper
that makes each large read once: x3pio reads a vendor file's bytes once per ``VendorSpecificID``
naming it. Of tmd_nb's vendor files only those the record refers to are inflated, one at a time.
Anything malformed raises :class:`~tmd_nb.errors.FormatError` naming the file. The writer
refuses (before writing) what the reader would refuse: see :mod:`tmd_nb.storage.limits`.
"""

from __future__ import annotations

import collections
import datetime as dt
import errno
import hashlib
import io
import itertools
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import (
    ChecksumWarning,
    DroppedContentWarning,
    FormatError,
    LegacyFormatWarning,
    ModifiedFileWarning,
    renamed_keyword,
    warn,
)
from ..heightmap import in_memory, is_dask_array, split_height_map
from ..storage import embedded, limits, metadata, units
from ..storage._io import Progress, open_file
from ..storage.archive import ZIP_MAGIC, write_zip
from ..storage.atomic import atomic_write
from ..storage.deflate import Level, level_problem
from .base import Format, PathLike

__all__ = ["FORMAT", "VENDOR", "check", "export_to_x3p", "load_from_x3p", "load_x3p", "looks_like_x3p"]

#: The vendor under which tmd_nb's record is registered (a URI the project owns: its PyPI page).
VENDOR = "https://pypi.org/project/tmd-nb"
MAX_MEMBERS = 10_000
MAX_MEMBER_SIZE = 16 << 30
#: ``main.xml``: at most this many bytes, and elements + attributes. x3pio builds the whole
#: document tree (about 150 bytes an element or attribute), so a long ``DataList`` or a tag with
#: millions of attributes is bounded by its items, not its text.
MAX_XML_SIZE = 32 << 20
MAX_XML_ELEMENTS = 500_000
#: Longest text written in a Record2 field (display only: the record keeps the whole value).
MAX_RECORD2_TEXT = 65_536
#: Metadata arrays an X3P file holds: one zip member each, beside the few of the format.
MAX_ARRAYS = MAX_MEMBERS - 16
_MAX_RATIO = 1032  # deflate's largest expansion
_RATIO_SLACK = 1 << 16
_XML_FORBIDDEN = re.compile(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_JUNK = re.compile(r"(^|/)(__macosx/|\._[^/]*$|\.ds_store$|thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
_ROOT = re.compile(rb"<(?![?!])([^\s>/]+)")
_ENCODING = re.compile(rb"(?:\xef\xbb\xbf)?\s*<\?xml\s[^>]*?encoding\s*=\s*([\"'])([^\"'>]*)\1")
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_OLD_ROOT = re.compile(rb"(</?)((?:[A-Za-z_][\w.-]*:)?)ISO5436(?=[\s>/])")


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Non-junk file members, by name with ``/`` separators. Not ``ZipInfo.is_dir``: it indexes the
    name, and zipfile cuts a name at its first NUL, so a hostile entry's name can be empty."""
    out = {}
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        # An empty name (a damaged length field) is no member: zipfile's is_dir() raises IndexError on it.
        if name and not name.endswith("/") and not _JUNK.search(name):
            out[name] = info
    return out


def _main_name(names: Mapping[str, Any]) -> str | None:
    """``main.xml`` at the root, or in the one sub-folder that holds it, as x3pio finds it."""
    if "main.xml" in names:
        return "main.xml"
    nested = [n for n in names if n.endswith("/main.xml") and n.count("/") == 1]
    return nested[0] if len(nested) == 1 else None


def looks_like_x3p(head: bytes, path: PathLike) -> bool:
    """Whether the file is a zip archive holding ``main.xml`` (at its root or in one sub-folder)."""
    if not head.startswith(ZIP_MAGIC):
        return False
    try:
        with open_file(path, repr(os.fspath(path))) as fp, zipfile.ZipFile(fp) as zf:
            return _main_name(_members(zf)) is not None
    except _NOT_RECOGNISED:  # a damaged zip is not recognisably X3P
        return False


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _z_type(dtype: np.dtype) -> str:
    """The X3P data type that holds heights of ``dtype`` best (``D``, ``F``, ``L``, ``I``)."""
    if dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize == 1) or (dtype.kind == "i" and dtype.itemsize == 2):
        return "I"
    if (dtype.kind == "u" and dtype.itemsize == 2) or (dtype.kind == "i" and dtype.itemsize == 4):
        return "L"
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return "F"
    return "D"


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or _XML_FORBIDDEN.search(value):
        return None
    return value if len(value) <= MAX_RECORD2_TEXT else value[:MAX_RECORD2_TEXT] + "..."


def _date(value: Any) -> dt.datetime | None:
    if type(value) is not dt.datetime:
        return None
    try:  # X3P dates carry an offset: a naive one is written as local time, if it can be
        offset = value.utcoffset() if value.tzinfo is not None else value.astimezone().utcoffset()
    except (ValueError, OverflowError, OSError):
        return None
    if offset is None or offset.total_seconds() % 60 or abs(offset) > dt.timedelta(hours=14):
        return None
    return value


def _record2(meta: Mapping[str, Any]) -> Any:
    """X3P Record2 from the metadata keys that fit it; tmd_nb as the software for the rest."""
    import x3pio

    instrument = x3pio.Instrument("tmd_nb", "tmd_nb", "", __version__)
    given = meta.get("instrument")
    if isinstance(given, Mapping):
        fields = [_text(given.get(k)) for k in ("manufacturer", "model", "serial", "version")]
        if all(v is not None for v in fields):
            instrument = x3pio.Instrument(*[str(v) for v in fields])
    probing = x3pio.ProbingSystem(x3pio.ProbingType.SOFTWARE, "tmd_nb")
    given = meta.get("probing_system")
    if isinstance(given, Mapping):
        kinds = {t.value.lower(): t for t in x3pio.ProbingType}
        kind = kinds.get(str(given.get("type", "")).lower())
        ident = _text(given.get("identification", ""))
        if kind is not None and ident is not None:
            probing = x3pio.ProbingSystem(kind, ident)
    return x3pio.Metadata(
        date=_date(meta.get("date")) or dt.datetime.now(dt.UTC),
        creator=_text(meta.get("creator")),
        instrument=instrument,
        calibration_date=_date(meta.get("calibration_date")),
        probing_system=probing,
        comment=_text(meta.get("comment")),
    )


def check(data: Any) -> None:
    """Raise ``TypeError``/``ValueError`` if :func:`export_to_x3p` would refuse ``data`` (cheap: no heights copied)."""
    _, meta = split_height_map(data, lazy=True)  # checked, not computed
    units.written(meta)  # lengths and offsets written as given, or refused
    units.factors(meta)  # X3P holds metres: a unit must be a known length
    limits.check_lengths(units.physical(meta), "an X3P file")
    limits.check_record(meta, "an X3P file", max_arrays=MAX_ARRAYS)


#: The little-endian type of ``bindata/data.bin`` for each X3P data type.
_RAW_TYPES = {"I": "<i2", "L": "<i4", "F": "<f4", "D": "<f8"}


def _stored(shown: np.ndarray, z_type: str) -> np.ndarray:
    """The numbers ``bindata/data.bin`` holds: the heights in their own unit, in the X3P type.

    No copy when the map already has that type and byte order (a float32 or float64 map).
    Non-finite heights stay NaN/infinite, which X3P readers take as invalid points.
    """
    values = shown.real if shown.dtype.kind == "c" else shown
    with np.errstate(invalid="ignore", over="ignore"):
        return np.ascontiguousarray(values, dtype=_RAW_TYPES[z_type])


class _Plan:
    """What the heights of a map are written as, checked before anything is written."""

    def __init__(self, array: Any, meta: dict[str, Any]) -> None:
        """Validate the map (numpy or Dask) and its metadata; ValueError/TypeError naming the key.

        x3pio builds ``main.xml`` from a one-point stand-in surface with the real axes, so that
        the heights are never converted; they are stored as they are, in their own unit, with the
        Z increment saying how many metres that unit is.
        """
        import x3pio

        phys = units.written(meta)  # TypeError/ValueError naming a length or offset that cannot be written as given
        lateral, height = units.factors(meta)  # ValueError naming the key of a unit that is no known length
        limits.check_lengths(phys, "an X3P file")
        limits.check_record(meta, "an X3P file", max_arrays=MAX_ARRAYS)
        rows, cols = array.shape if array.size else (1, 1)  # an empty map is written as one missing point
        # Each axis on its own: a length given for one axis only is kept; a missing one is 1 unit per pixel.
        x_length, y_length = phys.x_length or float(cols), phys.y_length or float(rows)
        unit = phys.lateral_unit
        units.in_si("x_length", x_length, unit, lateral)  # ValueError naming a length beyond range in metres
        units.in_si("y_length", y_length, unit, lateral)
        x_scale, y_scale = x_length / cols * lateral, y_length / rows * lateral
        x_offset, y_offset = (
            units.in_si("x_offset", phys.x_offset, unit, lateral),
            units.in_si("y_offset", phys.y_offset, unit, lateral),
        )
        self.meta, self.height, self.shape = meta, height, (rows, cols)
        self.z_type = _z_type(array.dtype)
        try:
            self.file = x3pio.Surface.from_array(
                np.zeros((1, 1)),
                x_scale=x_scale,
                y_scale=y_scale,
                z_type=x3pio.DataType(self.z_type),
                z_scale=height,
                metadata=_record2(meta),
                placement=x3pio.Placement.translation(x_offset, y_offset, 0.0),
                coordinate_system=x3pio.CoordinateSystem.VIEW,
            )
        except x3pio.X3pFormatError as exc:
            raise ValueError(f"cannot write this height map as X3P: {exc}") from None

    def members(self, record: Mapping[str, bytes], digest: str) -> list[tuple[str, bytes, np.ndarray]]:
        """``main.xml`` (stating the data's MD5 ``digest``), its checksum file and the record's members."""
        import x3pio
        from x3pio.codec.archive import format_checksum_file, md5_hex
        from x3pio.codec.xml import DataLink, build_main
        from x3pio.model.extensions import content_of
        from x3pio.model.naming import CHECKSUM_FILE, DATA_FILE, MAIN_XML
        from x3pio.model.validation import validate

        file = self.file
        try:
            for name, content in record.items():
                file.extensions[f"{VENDOR}/{name if name == embedded.RECORD else name + '.npy'}"] = content
            validate(file)
            vendor_ids, extension_files = file.extensions._parts()
            main = build_main(
                header=file.header,
                revision=file.revision,
                placement=file.placement,
                feature_type=file.feature_type,
                metadata=file.metadata,
                size=(self.shape[1], self.shape[0], 1),
                count=None,
                datums=None,
                link=DataLink(DATA_FILE, digest, None, None),
                vendor_ids=vendor_ids,
            )
        except x3pio.X3pFormatError as exc:
            raise ValueError(f"cannot write this height map as X3P: {exc}") from None
        none = np.empty(0, np.uint8)
        return [
            (MAIN_XML, main, none),
            (CHECKSUM_FILE, format_checksum_file(md5_hex(main)), none),
            *sorted((name, content_of(content), none) for name, content in extension_files.items()),
        ]


def _build(array: np.ndarray, meta: dict[str, Any]) -> list[tuple[str, bytes, np.ndarray]]:
    """The members of the X3P container of a map in memory: ``(name, head, array)``, ``main.xml`` first.

    ValueError/TypeError before anything is written. The x3pio functions used below its public
    API (``build_main``, ``validate``, the extensions' members) are those of x3pio 2.0; every X3P
    test goes through them.
    """
    from x3pio.model.naming import DATA_FILE

    plan = _Plan(array, meta)
    shown = embedded.grid(array)
    if plan.height > 1.0:  # only a unit above a metre can take a finite height beyond float64 range in metres
        embedded.standard_heights(shown, plan.height)  # ValueError naming it: readers would see a missing point
    stored = _stored(shown, plan.z_type)
    raw = stored.reshape(-1).view(np.uint8)
    # main.xml states the MD5 of the heights: one pass over them, on a thread of its own while
    # the record is made (hashlib releases the GIL).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmd_nb-md5") as pool:
        digest = pool.submit(lambda: hashlib.md5(raw.data, usedforsecurity=False).hexdigest())
        record = embedded.pack(array, meta, stored, plan.height, fields=_fields(plan.file), stored=True)
        members = plan.members(record, digest.result())
    return [members[0], members[1], (DATA_FILE, b"", raw), *members[2:]]


class _NeedsExactCopy(Exception):
    """A block of a streamed map that its stored numbers do not give back bit for bit: the record
    needs a patch or an exact copy of the map, made of the whole map."""


def _stored_block(block: np.ndarray, z_type: str, height: float, block_info: Any = None) -> np.ndarray:
    """One block's stored numbers, checked as :func:`_build` checks the whole map.

    Pure (it may run on a Dask worker): what the record needs of the numbers is gathered where
    they are written.
    """
    (row, _), (col, _) = block_info[None]["array-location"]
    if height > 1.0:
        embedded.standard_heights(block, height, origin=(row, col))
    stored = _stored(block, z_type)
    if not embedded.restores(block, stored):
        raise _NeedsExactCopy(f"block at {(row, col)}")
    return stored


class _Digests:
    """The MD5 of ``data.bin`` and the record's fingerprint, over the stored bytes as they are
    written (in order), on a thread of their own: at most a few pieces wait for it."""

    _AHEAD = 4

    def __init__(self, gathered: embedded.Gathered) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.gathered = gathered
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmd_nb-md5")
        self.pending: collections.deque[Future[None]] = collections.deque()

    def __call__(self, piece: memoryview) -> None:
        self.pending.append(self.pool.submit(self._update, piece))
        while len(self.pending) > self._AHEAD:
            self.pending.popleft().result()

    def _update(self, piece: memoryview) -> None:
        self.md5.update(piece)
        self.gathered.add_stored(piece)

    def hexdigest(self) -> str:
        while self.pending:
            self.pending.popleft().result()
        return self.md5.hexdigest()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _write_streamed(fp: Any, array: Any, plan: _Plan, level: Level, progress: Progress | None) -> None:
    """Write the X3P container of a Dask map, block row by block row: ``data.bin`` first, then
    ``main.xml`` (its MD5 known only then) and the record, gathered as the blocks went by."""
    from x3pio.model.naming import DATA_FILE

    raw_type = np.dtype(_RAW_TYPES[plan.z_type])
    gathered = embedded.Gathered(array.dtype, array.shape, raw_type)
    stored = array.map_blocks(
        _stored_block,
        plan.z_type,
        plan.height,
        dtype=raw_type,
        meta=np.empty((0, 0), raw_type),
    )
    digests = _Digests(gathered)

    def then() -> list[tuple[str, bytes, np.ndarray]]:
        digest = digests.hexdigest()
        record = embedded.pack_gathered(gathered, plan.meta, plan.height, fields=_fields(plan.file))
        return plan.members(record, digest)

    try:
        write_zip(
            fp, [(DATA_FILE, b"", stored)], level=level, progress=progress, observe={DATA_FILE: digests}, then=then
        )
    finally:
        digests.close()


def _fields(file: Any) -> dict[str, float]:
    """What a reader sees of an X3P surface besides its heights: increments and offsets, in metres."""
    header = file.header
    x_offset, y_offset, z_offset = (float(v) for v in file.placement.offset)
    return {
        "x_increment": float(header.x.increment),
        "y_increment": float(header.y.increment),
        "z_increment": float(header.z.increment),
        "x_offset": x_offset,
        "y_offset": y_offset,
        "z_offset": z_offset,
    }


def export_to_x3p(
    data: np.ndarray | Mapping[str, Any],
    output_path: PathLike,
    *,
    level: Level = None,
    progress: Progress | None = None,
) -> str:
    """Save a height map and its metadata as an X3P file (ISO 25178-72).

    Other software reads the heights and lengths in metres (converted from ``height_unit`` and
    ``lateral_unit``, millimetres by default) and the Record2 fields; tmd_nb reads back exactly
    what was saved (the layout is in the module docstring).

    Parameters
    ----------
    data : numpy.ndarray or mapping
        A 2-D height map, or a dict with a ``"height_map"`` array and metadata (any value
        :func:`tmd_nb.export_to_npz` stores).
        A Dask height map is streamed block row by block row (a map larger than memory is
        saved in bounded memory, as NPZ saves it), unless the record needs a patch or an exact
        copy of it (see the module docstring): then it is computed whole. Dask metadata values
        are computed.
    output_path : str or os.PathLike
        Where to write; the file is replaced atomically.
    level : str or int, optional
        How hard to compress the zip members, as for :func:`tmd_nb.export_to_npz`: ``"fastest"``
        (``None``, the default), ``"balanced"``, ``"smallest"``, or ``0``-``9`` as in zlib
        (``0`` stores them); :mod:`tmd_nb.storage.deflate` says what each one means.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the heights are written.

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
        ``lateral_unit``, ``height_unit`` or ``units`` is not a known length unit (the message
        names the key and the known units), or ``level`` is unknown; raised before anything is
        written. A height beyond float64 range in metres is found as the heights are read (in a
        Dask map, as its blocks stream); whatever is raised, a file at ``output_path`` stays as
        it was.
    """
    problem = level_problem(level)
    if problem is not None:
        raise ValueError(problem)
    array, meta = split_height_map(data, lazy=True)
    if is_dask_array(array):
        meta = in_memory(meta)  # metadata values are small: computed, as a map in memory has them
        if array.size:  # an empty map is written as one missing point, and a copy of it
            plan = _Plan(array, meta)
            try:
                with atomic_write(output_path) as fp:
                    _write_streamed(fp, array, plan, level, progress)
                return os.path.abspath(output_path)
            except _NeedsExactCopy:
                pass  # the temporary file is gone: the map is computed and written whole below
        array, meta = split_height_map({**meta, "height_map": np.asarray(array.compute())})
    else:
        array, meta = split_height_map(in_memory(data))
    members = _build(array, meta)
    with atomic_write(output_path) as fp:
        write_zip(fp, members, level=level, progress=progress)
    return os.path.abspath(output_path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _check_layout(fp: Any, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], where: str) -> None:
    """Refuse entries whose bytes overlap: one compressed stream read as many members (a zip bomb)."""
    spans = []
    for info in infos:
        what = f"{where} member {info.filename!r}"
        if info.header_offset < 0:
            raise FormatError(f"{what} starts before the archive")
        fp.seek(info.header_offset)
        head = fp.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size or not head.startswith(b"PK\x03\x04"):
            raise FormatError(f"{what}: no local header where the central directory says it is")
        _, name_length, extra_length = _LOCAL_HEADER.unpack(head)
        data_end = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + info.compress_size
        spans.append((info.header_offset, data_end, info.filename))
    spans.sort()
    for (_, first_end, first), (second_start, _, second) in itertools.pairwise(spans):
        if first_end > second_start:
            raise FormatError(f"{where}: zip members {first!r} and {second!r} overlap")
    if spans and spans[-1][1] > zf.start_dir:
        raise FormatError(f"{where} member {spans[-1][2]!r} runs into the zip's central directory")


def _checked_zip(fp: Any, where: str) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo], str]:
    """Open the zip and bound every declared size before anything is decompressed."""
    from x3pio.model.naming import vendor_extension_path

    try:
        zf = zipfile.ZipFile(fp)
    # NotImplementedError: zipfile's answer to a "version needed" it does not know (a damaged field).
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise FormatError(f"{where} is not an X3P file: not a readable zip archive ({exc})") from None
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise FormatError(f"{where} has {len(infos)} zip members, more than the {MAX_MEMBERS} allowed")
    for info in infos:
        what = f"{where} member {info.filename!r}"
        if info.flag_bits & 0x1:
            raise FormatError(f"{what} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(f"{what} uses compression method {info.compress_type}; only stored and deflate are read")
        bound = info.compress_size if info.compress_type == zipfile.ZIP_STORED else info.compress_size * _MAX_RATIO
        if info.file_size > bound + _RATIO_SLACK * (info.compress_type == zipfile.ZIP_DEFLATED):
            raise FormatError(f"{what} claims {info.file_size} bytes from {info.compress_size} stored bytes")
        if info.file_size > MAX_MEMBER_SIZE:
            raise FormatError(f"{what} claims {info.file_size} bytes, more than the {MAX_MEMBER_SIZE} allowed")
    _check_layout(fp, zf, infos, where)
    seen: set[str] = set()
    for info in infos:  # readers differ in which of two same-named members they take: refused, as in NPZ
        name = info.filename.replace("\\", "/")
        if name in seen:
            raise FormatError(f"{where} has duplicate member names ({info.filename!r})")
        seen.add(name)
    members = _members(zf)
    main = _main_name(members)
    if main is None:
        raise FormatError(f"{where} is not an X3P file: its zip archive holds no main.xml")
    if members[main].file_size > MAX_XML_SIZE:
        raise FormatError(
            f"{where}: its main.xml claims {members[main].file_size:,} bytes, more than the {MAX_XML_SIZE:,} allowed"
        )
    folder = main[: -len("main.xml")]
    record = members.get(folder + vendor_extension_path(f"{VENDOR}/{embedded.RECORD}").replace("\\", "/"))
    if record is not None and record.file_size > embedded.MAX_RECORD:
        raise FormatError(
            f"{where}: its tmd_nb record claims {record.file_size:,} bytes, "
            f"more than the {embedded.MAX_RECORD:,} allowed"
        )
    return zf, members, main


def _check_xml(text: bytes, where: str) -> None:
    """Refuse a ``main.xml`` whose encoding Python does not know, or with too many elements to build."""
    import codecs

    declared = _ENCODING.match(text)
    if declared is not None:
        name = declared.group(2).decode("ascii", "backslashreplace")
        try:
            codecs.lookup(name)
        except (LookupError, ValueError):
            raise FormatError(f"{where}: its main.xml declares the encoding {name!r}, which is not known") from None
    # Start tags and attributes, at most: a '<' or '=' in text, CDATA or a comment counts too, which
    # only errs on the safe side. Each costs the element tree some 150 bytes.
    items = text.count(b"<") - text.count(b"</") - text.count(b"<?") - text.count(b"<!") + text.count(b"=")
    if items > MAX_XML_ELEMENTS:
        raise FormatError(
            f"{where}: its main.xml holds about {items:,} elements and attributes, more than the "
            f"{MAX_XML_ELEMENTS:,} read (a long DataList: such data belong in a binary data file)"
        )


def _repack_old_root(
    text: bytes, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], main: str, where: str
) -> bytes | None:
    """An in-memory copy of an ISO 5436-2000 container with its ``<ISO5436>`` root renamed, or None.

    x3pio reads the ``ISO5436_2`` root only. The checksum file is updated when it matched the
    original ``main.xml``, so that a mismatch (warned about) stays one. Only the members that
    ``main.xml`` names (the data and validity files) and the checksum file are copied: they are
    inflated to be copied, and vendor files are no use in a file of that age.
    """
    import hashlib

    found = _ROOT.search(text)
    if found is None or found.group(1).split(b":")[-1] != b"ISO5436":
        return None
    fixed = _OLD_ROOT.sub(rb"\1\2ISO5436_2", text)
    folder = main[: -len("main.xml")]
    checksum = folder + "md5checksum.hex"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for name, info in members.items():
            if name != main and name != checksum and name[len(folder) :].encode("utf-8", "replace") not in text:
                continue
            content = fixed if name == main else zf.read(info)
            if name == checksum:
                digest = content.decode("ascii", "replace").split()[:1]
                if digest and digest[0].lower() == hashlib.md5(text, usedforsecurity=False).hexdigest():
                    content = f"{hashlib.md5(fixed, usedforsecurity=False).hexdigest()} *main.xml\n".encode()
            out.writestr(name, content)
    warn(f"{where} uses the ISO 5436-2000 root element <ISO5436>; read as ISO 25178-72", LegacyFormatWarning)
    return buffer.getvalue()


#: What zipfile raises on a damaged entry (as opposed to what the system raises, like EIO).
_ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    NotImplementedError,  # zipfile: an unknown "version needed" or compression in a damaged entry
    zlib.error,
    EOFError,
    ValueError,
    UnicodeError,  # a member name that is not valid in its encoding
)
#: What x3pio lets through from the libraries it uses on a hostile file, beyond X3pFormatError
#: (a ValueError): zipfile's errors, expat's LookupError for an encoding it cannot use and
#: RuntimeError from zipfile's encrypted-member path. A KeyError, IndexError, TypeError or
#: AttributeError is a bug (x3pio's or tmd_nb's) and is not turned into a "damaged file" message.
_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (*_ZIP_ERRORS, LookupError, RuntimeError, OverflowError)
_NOT_RECOGNISED: tuple[type[BaseException], ...] = (*_ZIP_ERRORS, zipfile.LargeZipFile, OSError)


class _ReadOnce:
    """A read-only file whose large reads are each made once: x3pio reads the stored bytes of a
    vendor file once for every ``VendorSpecificID`` that names it, which a file can repeat (time
    quadratic in its size). Zip entries do not overlap (checked first), so what is kept is at
    most the file's size."""

    _LARGE = 1 << 16

    def __init__(self, fp: Any) -> None:
        self.fp = fp
        self.kept: dict[tuple[int, int], bytes] = {}

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < self._LARGE:
            return bytes(self.fp.read(n))
        key = (self.fp.tell(), n)
        data = self.kept.get(key)
        if data is None:
            data = self.kept[key] = self.fp.read(n)
        else:
            self.fp.seek(key[0] + len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.fp.seek(offset, whence))

    def tell(self) -> int:
        return int(self.fp.tell())

    def seekable(self) -> bool:
        return True


def _problem(exc: BaseException, named: bool) -> str | None:
    """What a library's exception says about the file's damage; None for the system's (re-raised)."""
    import x3pio

    if isinstance(exc, OSError):  # EINVAL: a damaged entry made zipfile seek before the file's start
        return "an entry points outside the file" if exc.errno == errno.EINVAL else None
    if isinstance(exc, x3pio.X3pFormatError) or not named:
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


#: Caught around zipfile and x3pio (OSError: see :func:`_problem`); the FormatError is raised
#: after the handler, so that no chain of exceptions is kept.
_CAUGHT: tuple[type[BaseException], ...] = (*_LIBRARY_ERRORS, OSError)
_ZIP_OR_SYSTEM: tuple[type[BaseException], ...] = (*_ZIP_ERRORS, OSError)


#: What makes :func:`_read_own` leave a file to ``x3pio.read`` (x3pio's errors are ValueErrors).
_NOT_OWN: tuple[type[BaseException], ...] = (*_LIBRARY_ERRORS, OSError)


def _read_file(path: PathLike, where: str) -> Any:
    import x3pio

    with open_file(path, where) as fp:
        if not stat.S_ISREG(os.fstat(fp.fileno()).st_mode):
            raise FormatError(f"{where} is not a regular file")
        zf, members, main = _checked_zip(fp, where)
        problem = None
        try:
            text = zf.read(members[main])
        except _ZIP_OR_SYSTEM as exc:
            if (problem := _problem(exc, named=False)) is None:
                raise
        if problem is not None:
            raise FormatError(f"{where} is not a readable X3P file: {problem}")
        _check_xml(text, where)
        try:
            repacked = _repack_old_root(text, zf, members, main, where)
            del text
        except _ZIP_OR_SYSTEM as exc:
            if (problem := _problem(exc, named=False)) is None:
                raise
        if problem is not None:
            raise FormatError(f"{where} is not a readable X3P file: {problem}")
        source: Any = _ReadOnce(io.BytesIO(repacked) if repacked is not None else fp)  # read, seek, tell

        def read(verify: bool) -> Any:
            # parse_file, as x3pio.read does for a path: x3pio.read(stream) would read the stream whole.
            from x3pio.model.files import parse_file

            source.seek(0)
            return parse_file(source, verify=verify)

        checksum = None
        try:
            return read(True)
        except x3pio.X3pChecksumError as exc:
            checksum = str(exc)
            checksum = checksum[:1].lower() + checksum[1:]  # one style: "'f.x3p': the MD5 ...", not ": The MD5"
        except _CAUGHT as exc:
            if (problem := _problem(exc, named=True)) is None:
                raise
        if checksum is not None:
            warn(f"{where}: {checksum}; loaded anyway (edited after it was written?)", ChecksumWarning)
            try:
                return read(False)
            except _CAUGHT as exc:
                if (problem := _problem(exc, named=True)) is None:
                    raise
        raise FormatError(f"{where} is not a readable X3P file: {problem}")


def _referenced(text: bytes) -> set[str]:
    """The members tmd_nb's record refers to: its exact height map and the metadata's arrays.

    Only these are inflated; a record that is not even JSON refers to none (:func:`embedded.unpack`
    then says what is wrong with it).
    """
    try:
        obj = metadata.loads(text.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and InvalidJSON included
        return set()
    if type(obj) is not dict:
        return set()
    names: set[str] = set()
    height = obj.get("height")
    if type(height) is dict:
        names.update(height[k] for k in ("exact", "missing") if type(height.get(k)) is str)
        patch = height.get("patch")
        if type(patch) is list:
            names.update(n for n in patch if type(n) is str)
    meta = obj.get("metadata")
    stack = list(meta.values()) if type(meta) is dict else []
    while stack:
        value = stack.pop()
        if type(value) is list:
            stack.extend(value)
        elif type(value) is dict:
            tag = value.get(metadata.TAG)
            if tag == "ndarray":
                if type(value.get("member")) is str:
                    names.add(value["member"])
            elif tag == "dict" and type(value.get("items")) is dict:
                stack.extend(value["items"].values())  # a user's dict: its keys are not tags
            else:
                stack.extend(value.values())
    return names


class _RecordMembers(Mapping[str, bytes]):
    """tmd_nb's record and the members it refers to, each inflated only when asked for (and not kept)."""

    def __init__(self, extensions: Any, text: bytes, where: str) -> None:
        self.extensions, self.text, self.where = extensions, text, where
        wanted = _referenced(text)
        self.names = [embedded.RECORD, *sorted(n for n in wanted if f"{VENDOR}/{n}.npy" in extensions)]

    def __getitem__(self, name: str) -> bytes:
        import x3pio

        if name == embedded.RECORD:
            return self.text
        if name not in self.names:
            raise KeyError(name)
        errors: tuple[type[BaseException], ...] = (x3pio.X3pFormatError, *_ZIP_ERRORS)
        try:
            content = self.extensions[f"{VENDOR}/{name}.npy"]
        except errors as exc:
            raise FormatError(f"{self.where}: its tmd_nb member {name!r} is damaged: {exc}") from None
        return b"" if content is None else content

    def __contains__(self, name: object) -> bool:  # Mapping's own would inflate the member
        return name in self.names

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def _record2_keys(record: Any) -> dict[str, Any]:
    """The Record2 fields as typed metadata keys (only those the file states)."""
    if record is None:
        return {}
    out: dict[str, Any] = {}
    if record.date is not None:
        out["date"] = record.date
    if record.creator is not None:
        out["creator"] = record.creator
    inst = record.instrument
    out["instrument"] = {
        "manufacturer": inst.manufacturer,
        "model": inst.model,
        "serial": inst.serial,
        "version": inst.version,
    }
    if record.calibration_date is not None:
        out["calibration_date"] = record.calibration_date
    probe = record.probing_system
    out["probing_system"] = {
        "type": None if probe.type is None else probe.type.value,
        "identification": probe.identification,
    }
    if record.comment is not None:
        out["comment"] = record.comment
    return out


def _record_members(zf: zipfile.ZipFile, members: Mapping[str, zipfile.ZipInfo]) -> dict[str, bytes]:
    """tmd_nb's record and the vendor-extension files it refers to (only those are inflated)."""
    from x3pio.model.naming import vendor_extension_path

    prefix = vendor_extension_path(f"{VENDOR}/{embedded.RECORD}").replace("\\", "/")[: -len(embedded.RECORD)]
    if prefix + embedded.RECORD not in members:
        return {}
    text = zf.read(members[prefix + embedded.RECORD])
    out = {embedded.RECORD: text}
    for name in sorted(_referenced(text)):
        if prefix + name + ".npy" in members:
            out[name] = zf.read(members[prefix + name + ".npy"])
    return out


def _read_own(path: PathLike, where: str) -> tuple[Any, np.ndarray, dict[str, bytes]] | None:
    """A file as tmd_nb writes it (version 3 record, heights stored as they are): its description,
    the numbers ``bindata/data.bin`` holds and the record's members; None for any other file.

    x3pio reads and checks ``main.xml`` (with its checksum) but not the heights: they are inflated
    as NPZ members are (in parallel, CRC checked) and never converted. Whatever is unusual goes
    the general way, through ``x3pio.read``, which reports it (a checksum warning, an error).
    """
    import json

    import x3pio
    from x3pio.model.naming import DATA_FILE, MAIN_XML

    from ..storage.archive import checked_members, member_bytes

    with open_file(path, where) as fp:
        if not stat.S_ISREG(os.fstat(fp.fileno()).st_mode):
            return None
        zf, members, main = _checked_zip(fp, where)
        if (
            main != MAIN_XML
            or DATA_FILE not in members
            or len(members) != len(zf.infolist())
            or any(n.endswith("/" + embedded.RECORD) and i.file_size > embedded.MAX_RECORD for n, i in members.items())
        ):
            return None  # a record longer than allowed goes x3pio's way, which reports it
        try:
            record = _record_members(zf, members)
            head = json.loads(record[embedded.RECORD]) if embedded.RECORD in record else None
            if not (
                isinstance(head, dict)
                and type(head.get("tmd_nb")) is int
                and head["tmd_nb"] >= 3
                and isinstance(head.get("height"), dict)
                and head["height"].get("stored") is True
            ):
                return None
            fp.seek(0)
            info = x3pio.info(fp, verify=True)
        except _NOT_OWN:
            return None  # the general way says what is wrong
        z_type = info.header.z.data_type.value
        if (
            info.feature_type is not x3pio.FeatureType.SURFACE
            or info.layer_count != 1
            or len(info.shape) != 2
            or info.storage is not x3pio.DataStorage.BINARY
            or not (info.header.x.is_incremental and info.header.y.is_incremental)
            or z_type not in _RAW_TYPES
        ):
            return None
        dtype = np.dtype(_RAW_TYPES[z_type])
        entry = {m.name: m for m in checked_members(fp, where, npy=False)}.get(DATA_FILE)
        if entry is None or entry.usize != dtype.itemsize * info.shape[0] * info.shape[1]:
            return None
        raw = member_bytes(fp, entry, f"{where} member {DATA_FILE!r}")
    return info, raw.view(dtype).reshape(info.shape), record


def _metres(raw: np.ndarray, increment: float) -> np.ndarray:
    """The heights X3P readers see in stored numbers: metres, NaN where invalid."""
    with np.errstate(invalid="ignore", over="ignore"):
        values = raw.astype(np.float64) * increment
    values[~np.isfinite(values)] = np.nan
    return values


@renamed_keyword("path", "file_path")
def load_from_x3p(file_path: PathLike, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load a height map and its metadata from an X3P file (ISO 25178-72).

    A file written by :func:`export_to_x3p` comes back exactly as saved; other files give their
    heights and lengths in metres with their Record2 fields (see the module docstring).

    ``load_x3p`` is this function under its former name, kept as an alias; ``path=`` still
    works for ``file_path=``, with a :class:`~tmd_nb.TmdNbDeprecationWarning`.

    Parameters
    ----------
    file_path : str or os.PathLike
        The ``.x3p`` file.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called when the file is read.

    Returns
    -------
    dict
        ``{"height_map": array, **metadata}``.

    Raises
    ------
    FormatError
        The file is not a readable X3P surface or profile, or is hostile (sizes beyond the limits).
    OSError
        The file cannot be opened.

    Warns
    -----
    UserWarning
        A checksum does not match, the root element is the older ``<ISO5436>``, layers or a
        rotation are left out, or the heights were changed after tmd_nb wrote the file.
    """
    import x3pio
    from x3pio.model.datatypes import encode_raw, get_data_type

    where = repr(os.fspath(file_path))
    own = _read_own(file_path, where)
    if own is not None:
        info, raw, record = own
        increment = float(info.header.z.increment)
        rec = embedded.unpack(record, lambda: _metres(raw, increment), where, fields=_fields(info), stored=raw)
        if rec.current:
            if progress is not None:
                size = os.path.getsize(file_path)
                progress(size, size)
            return {"height_map": rec.height_map, **rec.metadata}
    file = _read_file(file_path, where)
    if isinstance(file, x3pio.PointCloud):
        raise FormatError(f"{where} holds a point cloud, not a height map on a grid")
    if not file.is_regular_grid:
        raise FormatError(f"{where} stores x/y coordinates for each point (an irregular grid), not a height map")
    if len(file.layers) > 1:
        warn(f"{where} holds {len(file.layers)} layers; only the first is loaded", DroppedContentWarning)
    seen = np.asarray(file.layers[0].z, dtype=np.float64)
    if seen.ndim == 1:
        seen = seen.reshape(1, -1)
    placement = file.placement
    if placement.has_rotation:
        warn(f"{where} places its data with a rotation, which is not applied", DroppedContentWarning)
    x_off, y_off, z_off = (float(v) for v in placement.offset)
    rows, cols = seen.shape
    header = file.header
    standard: dict[str, Any] = {
        "x_length": float(header.x.increment) * cols,
        "y_length": float(header.y.increment) * rows,
        "x_offset": x_off,
        "y_offset": y_off,
        "lateral_unit": "m",
        "height_unit": "m",
    }
    out: dict[str, Any]
    text = None
    uri = f"{VENDOR}/{embedded.RECORD}"
    errors: tuple[type[BaseException], ...] = (x3pio.X3pFormatError, *_ZIP_ERRORS)
    try:  # extension files are unpacked (and their damage found) only now, and only those used
        text = file.extensions.get(uri)
    except errors as exc:
        raise FormatError(f"{where}: its tmd_nb record is damaged: {exc}") from None
    if text is not None:
        # A file read this way is not as tmd_nb wrote it: its stored numbers, as well as they can
        # be told from the metres, decide whether the record still describes it.
        z_info = get_data_type(file.header.z.data_type)
        with np.errstate(invalid="ignore", over="ignore"):
            try:
                guess = encode_raw(seen, z_info, float(file.header.z.increment))
            except x3pio.X3pFormatError:
                guess = np.full(seen.shape, np.nan)
        members = _RecordMembers(file.extensions, text, where)
        rec = embedded.unpack(members, seen, where, fields=_fields(file), stored=guess)
        if rec.current:
            out = {"height_map": rec.height_map, **rec.metadata}
        else:
            warn(
                f"{where}: its heights changed after tmd_nb wrote it, or its increments or offsets did "
                "(edited by other software?); loaded the file's heights and lengths in metres, with the other "
                "tmd_nb metadata",
                ModifiedFileWarning,
            )
            kept = {k: v for k, v in rec.metadata.items() if k not in units.PHYSICAL_KEYS}
            out = {"height_map": seen + z_off if z_off else seen, **kept, **standard}
    else:
        out = {"height_map": seen + z_off if z_off else seen, **standard, **_record2_keys(file.metadata)}
    if progress is not None:
        size = os.path.getsize(file_path)
        progress(size, size)
    return out


#: The former name of :func:`load_from_x3p`, kept as an alias (the same function).
load_x3p = load_from_x3p


FORMAT = Format(
    name="x3p",
    title="X3P",
    extensions=(".x3p",),
    summary="ISO 25178-72 surface: heights in metres + Record2, tmd_nb metadata kept",
    recognise=looks_like_x3p,
    load=load_x3p,
    save=export_to_x3p,
    check=check,
    within="npz",
    options=frozenset({"level"}),
    label="ISO 25178-72",
    library="x3pio",
)
