"""NPZ archives: zip archives of NPY members, written and read by tmd_nb's own zip code.

The writer streams each array into its member (no copy of the array is made), compressing with
:mod:`tmd_nb.storage.deflate`, and writes the zip structures itself, with Zip64 where needed; the reader
checks every structure before it trusts it and inflates straight into the preallocated arrays.
Whatever the writer produces is an ordinary NPZ that plain ``numpy.load`` opens.

Archive layout (PKWARE APPNOTE 6.3; all integers little-endian)
    For each member, in the order given:

    * a local file header (``PK\\x03\\x04``): version needed 20 (45 with Zip64), flags 0 (bit 11
      when the name is not ASCII: UTF-8), method 0 (stored) or 8 (deflate), the DOS time of the
      save, the CRC-32 and sizes (patched in once the member is written: the output must be
      seekable, and no data descriptors are written), the name ``<key>.npy``; and, when the member
      could reach 4 GiB, a Zip64 extra field (tag ``0x0001``) holding both sizes, with
      ``0xFFFFFFFF`` in the 32-bit fields;
    * the member's data: an NPY file (see :mod:`tmd_nb.storage.npyfile`), as it is or as one raw deflate
      stream (see :mod:`tmd_nb.storage.deflate`).

    Then the central directory, one entry per member (made by Unix, version 20 or 45, mode
    0644), whose extra fields are: a Zip64 field with those of the uncompressed size, compressed
    size and local header offset that do not fit 32 bits, in that order; then the chunk index, if
    the member has one. When there are 65535 members or more, or the directory or its offset do
    not fit 32 bits, a Zip64 end of central directory record and its locator follow; last comes
    the end of central directory record, with no comment.

The chunk-index extra field
    Tag ``0x746E`` (:data:`_INDEX_EXTRA`), tmd_nb's own, in the central directory entry only
    (other zip readers skip extra fields they do not know). Its body is ``2 n`` unsigned 64-bit
    integers, ``n`` pairs (compressed offset, uncompressed offset), counted from the start of the
    member's data and from the start of its NPY bytes, in increasing order, excluding 0 and the
    ends: the points where the member's deflate stream restarts from scratch (the previous chunk
    ended with a sync flush, and nothing after refers to data before). ``n`` is at most
    :data:`~tmd_nb.storage.deflate.MAX_INDEX`. Stored members, members of one chunk and members deflated
    at zlib's levels (4-9, each chunk primed with the previous one) have no index; members written
    at ``"balanced"`` or ``"smallest"`` on several threads have one point, where the libdeflate part
    starts. With it, the reader inflates the pieces between the points on every core (given ISA-L:
    see :mod:`tmd_nb.storage.deflate`).

The chunk-checksum extra field
    Tag ``0x6374`` (:data:`_CRCS_EXTRA`), written beside every chunk index, in the central
    directory only: ``n + 1`` unsigned 32-bit integers, the CRC-32 of the uncompressed bytes of
    each piece (from the start of the member to the first restart point, between restart points,
    from the last one to the end). Combined (``crc32_combine`` with the pieces' lengths) they must
    give the member's CRC-32, which checks every offset of the index without inflating anything;
    and a window that inflates a piece checks its bytes (:mod:`tmd_nb.chunks`). Archives
    of tmd_nb versions before this field carry the index alone, and still load.

Safety
    No pickle is ever loaded and object dtypes are refused; a header's claimed size is compared
    with the bytes actually stored before anything is allocated for it (deflate members are
    bounded by :data:`~tmd_nb.storage.inflate.MAX_DEFLATE_RATIO` of their compressed size); member names
    must be unique ``.npy`` names; encrypted members and compression methods other than
    stored/deflate are refused; local headers must agree with the central directory, members must
    not overlap, CRCs are verified, and bytes after the data (of a member or of the archive) are
    refused. Every malformed input raises :class:`~tmd_nb.errors.FormatError` naming the file
    (and member) and the problem; ``OSError`` subclasses pass through.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import struct
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np

from ..errors import FormatError
from ..heightmap import is_dask_array
from . import _io
from ._io import Progress, Reporter, WriteBehind, describe, open_file
from .deflate import Codec, Deflater, Level, thread_count
from .inflate import MemberStream, inflate_bound, inflate_rest, inflate_whole
from .libraries import INFLATE_ERRORS, crc32_of
from .npyfile import bytes_of, data_pieces, data_size, empty_array, header_bytes, header_length, parse_header

__all__ = ["ZIP_MAGIC", "checked_members", "member_bytes", "read_npz", "write_npz", "write_zip"]

ZIP_MAGIC = b"PK\x03\x04"
# Zip fields of 32 bits hold values below this; larger values go into Zip64 extra fields. Tests
# lower it to exercise the Zip64 structures without writing 4 GiB.
ZIP64_LIMIT = 0xFFFFFFFF
ZIP64_COUNT_LIMIT = 0xFFFF

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_EOCD = struct.Struct("<IHHHHIIH")
_EOCD64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_SIG_LOCAL = 0x04034B50
_SIG_CENTRAL = 0x02014B50
_SIG_EOCD = 0x06054B50
_SIG_EOCD64 = 0x06064B50
_SIG_LOCATOR64 = 0x07064B50
_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_STRONG_ENCRYPTION = 0x0040
_FLAG_UTF8 = 0x0800
_FLAG_MASKED_HEADERS = 0x2000
_STORED = 0
_DEFLATED = 8
_METHOD_NAMES = {
    1: "shrink",
    6: "implode",
    9: "deflate64",
    12: "bzip2",
    14: "lzma",
    93: "zstandard",
    95: "xz",
    98: "ppmd",
    99: "AES encryption",
}
_ZIP64_EXTRA = 0x0001
# tmd_nb's own extra field (central directory only; other readers skip it): where the deflate
# stream of a member restarts from scratch (after a sync flush, no reference to earlier data),
# as pairs of (compressed, uncompressed) offsets, so that the pieces can be inflated in parallel.
_INDEX_EXTRA = 0x746E
# tmd_nb's other extra field, beside the chunk index: the CRC-32 of the uncompressed bytes of each
# piece between restart points, so that a window read from one piece is checked (and, combined,
# they must give the member's CRC-32, which checks the index itself).
_CRCS_EXTRA = 0x6374

# What a hostile or damaged archive can make the libraries under the parsing and inflating code
# raise: the inflaters' errors, struct's, numpy's ValueError, an allocation refused. Not KeyError,
# IndexError, TypeError or AttributeError: the checks refuse such input before it could raise
# them, so one of those is a bug in tmd_nb, and must surface as one, not as "a corrupt file".
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    *INFLATE_ERRORS,
    struct.error,
    ValueError,  # UnicodeDecodeError too
    OverflowError,
    MemoryError,
)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _dos_time() -> tuple[int, int]:
    t = time.localtime()
    year = min(max(t.tm_year, 1980), 2107)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday


class _Entry:
    __slots__ = ("crc", "crcs", "csize", "flags", "index", "method", "name", "offset", "usize", "zip64")

    def __init__(self, name: bytes, flags: int, method: int, usize: int, offset: int, zip64: bool) -> None:
        self.name, self.flags, self.method, self.usize, self.offset, self.zip64 = (
            name,
            flags,
            method,
            usize,
            offset,
            zip64,
        )
        self.crc = 0
        self.csize = 0
        self.index: list[tuple[int, int]] = []
        self.crcs: list[int] = []


def write_npz(
    fp: BinaryIO,
    members: Mapping[str, np.ndarray],
    *,
    compress: bool = True,
    level: Level = None,
    progress: Progress | None = None,
    threads: int | None = None,
) -> None:
    """Write ``members`` as ``<name>.npy`` entries of a zip archive that ``numpy.load`` opens.

    Each array is streamed into its member in chunks (no copy of the array is made); a Dask array
    is computed one block row at a time, and its member is byte for byte the one the same data in
    memory gives. ``fp`` must be seekable: sizes and CRCs are patched into the local headers once
    a member is written.

    ``compress=False`` stores the bytes as they are. With ``compress=True``, ``level`` is one of
    the ladder's names ``"fastest"`` (= ``None``, the default), ``"balanced"`` or ``"smallest"``,
    or an integer as in zlib (``0`` stored, ``1``-``3`` ISA-L's levels, ``4``-``9`` zlib's): the top
    of :mod:`tmd_nb.storage.deflate` says what each one means.

    Either way members larger than one chunk (:data:`~tmd_nb.storage.deflate.DEFLATE_CHUNK`) are
    compressed on ``threads`` threads (default: every available core, at most
    :data:`~tmd_nb.storage.deflate.MAX_THREADS`) and joined into one standard deflate stream.
    ``progress(done_bytes, total_bytes)`` counts array data bytes.
    """
    codec = Codec(level) if compress else None
    items = []
    for name, array in members.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"NPZ member names must be non-empty str, not {name!r}")
        if not is_dask_array(array):  # a Dask array is streamed block row by block row
            array = np.asanyarray(array)
        items.append((name + ".npy", header_bytes(array, f"member {name!r}"), array))
    _write_archive(fp, items, codec, progress, threads)


def write_zip(
    fp: BinaryIO,
    members: Sequence[tuple[str, bytes, np.ndarray]],
    *,
    level: Level = None,
    progress: Progress | None = None,
    threads: int | None = None,
    observe: Mapping[str, Callable[[memoryview], None]] | None = None,
    then: Callable[[], Sequence[tuple[str, bytes, np.ndarray]]] | None = None,
) -> None:
    """Write a zip archive of ``(name, head, array)`` members, as :func:`write_npz` writes its own.

    Each member holds ``head`` followed by the bytes of ``array`` in C order (a raw binary file
    of another zip-based format, such as X3P's ``bindata/data.bin``; ``head`` alone with an
    empty array for a text member), deflated at ``level`` as NPZ members are, on ``threads``
    threads, with the same chunk index. A Dask array is streamed block row by block row, as
    :func:`write_npz` streams it. ``progress`` counts array data bytes.

    ``observe[name](piece)`` is called with the bytes of member ``name``'s array, in order
    (``head`` left out), as they are written: for what a format states about them (X3P's MD5)
    when the array is never whole. ``then()``, called once ``members`` are written, gives text
    members (empty arrays) to write after them: those that state what ``observe`` found.
    """
    _write_archive(fp, list(members), Codec(level), progress, threads, observe or {}, then)


def _write_archive(
    fp: BinaryIO,
    items: list[tuple[str, bytes, np.ndarray]],
    codec: Codec | None,
    progress: Progress | None,
    threads: int | None,
    observe: Mapping[str, Callable[[memoryview], None]] | None = None,
    then: Callable[[], Sequence[tuple[str, bytes, np.ndarray]]] | None = None,
) -> None:
    if codec is not None and codec.level == 0:
        codec = None
    total = sum(array.nbytes for _, _, array in items)
    reporter = Reporter(progress, total)
    workers = thread_count(threads) if codec is not None else 1
    deflater = Deflater(codec, workers) if codec is not None else None
    entries: list[_Entry] = []
    behind = WriteBehind(fp, total)
    observe = observe or {}
    try:
        for name, header, array in items:
            entries.append(_write_member(fp, name, header, array, deflater, reporter, behind, observe.get(name)))
        for name, header, array in then() if then is not None else ():
            if array.nbytes:
                raise ValueError(f"member {name!r} written after the others must be text only (no array)")
            entries.append(_write_member(fp, name, header, array, deflater, reporter, behind))
        _write_central_directory(fp, entries)
    finally:
        behind.close()
        if deflater is not None:
            deflater.close()
    reporter.finish()


def _write_member(
    fp: BinaryIO,
    name: str,
    header: bytes,
    array: np.ndarray,
    deflater: Deflater | None,
    reporter: Reporter,
    behind: WriteBehind,
    observe: Callable[[memoryview], None] | None = None,
) -> _Entry:
    try:
        raw_name = name.encode("ascii")
        flags = 0
    except UnicodeEncodeError:
        raw_name = name.encode("utf-8")
        flags = _FLAG_UTF8
    usize = len(header) + array.nbytes
    # The compressed size is known only at the end; reserve Zip64 room whenever it could be needed
    # (incompressible data grows slightly under deflate).
    zip64 = usize + usize // 8 + (1 << 20) >= ZIP64_LIMIT
    offset = fp.tell()
    entry = _Entry(raw_name, flags, _DEFLATED if deflater is not None else _STORED, usize, offset, zip64)
    extra = struct.pack("<HHQQ", _ZIP64_EXTRA, 16, 0, 0) if zip64 else b""
    mtime, mdate = _dos_time()
    fp.write(
        _LOCAL.pack(
            _SIG_LOCAL,
            45 if zip64 else 20,
            flags,
            entry.method,
            mtime,
            mdate,
            0,
            0xFFFFFFFF if zip64 else 0,
            0xFFFFFFFF if zip64 else 0,
            len(raw_name),
            len(extra),
        )
    )
    fp.write(raw_name)
    fp.write(extra)
    data_start = fp.tell()
    crc = 0
    if deflater is None:
        crc = crc32_of(header)
        fp.write(header)
        for piece in data_pieces(array, _io.CHUNK):
            crc = crc32_of(piece, crc)
            if observe is not None:
                observe(piece)
            fp.write(piece)
            behind.wrote(len(piece))
            reporter.add(len(piece))
    else:
        crc = deflater.member(fp, header, array, reporter, behind, entry.index, entry.crcs, observe)
    end = fp.tell()
    entry.crc, entry.csize = crc, end - data_start
    if not zip64 and entry.csize >= ZIP64_LIMIT:  # pragma: no cover - deflate never grows data by 1/8
        raise ValueError(f"member {name!r} grew past the zip size limit when compressed; save with compress=False")
    # Patch CRC and sizes into the local header, then carry on at the end of the member.
    fp.seek(offset + 14)
    if zip64:
        fp.write(struct.pack("<I", crc))
        fp.seek(offset + 30 + len(raw_name) + 4)
        fp.write(struct.pack("<QQ", entry.usize, entry.csize))
    else:
        fp.write(struct.pack("<III", crc, entry.csize, entry.usize))
    fp.seek(end)
    return entry


def _write_central_directory(fp: BinaryIO, entries: list[_Entry]) -> None:
    cd_offset = fp.tell()
    mtime, mdate = _dos_time()
    out = []
    for e in entries:
        fields = []
        usize, csize, offset = e.usize, e.csize, e.offset
        if e.zip64 or usize >= ZIP64_LIMIT:
            fields.append(usize)
            usize = 0xFFFFFFFF
        if e.zip64 or csize >= ZIP64_LIMIT:
            fields.append(csize)
            csize = 0xFFFFFFFF
        if offset >= ZIP64_LIMIT:
            fields.append(offset)
            offset = 0xFFFFFFFF
        extra = struct.pack(f"<HH{len(fields)}Q", _ZIP64_EXTRA, 8 * len(fields), *fields) if fields else b""
        if e.index:
            flat = [x for pair in e.index for x in pair]
            extra += struct.pack(f"<HH{len(flat)}Q", _INDEX_EXTRA, 8 * len(flat), *flat)
            extra += struct.pack(f"<HH{len(e.crcs)}I", _CRCS_EXTRA, 4 * len(e.crcs), *e.crcs)
        version = 45 if fields else 20
        out.append(
            _CENTRAL.pack(
                _SIG_CENTRAL,
                (3 << 8) | version,
                version,
                e.flags,
                e.method,
                mtime,
                mdate,
                e.crc,
                csize,
                usize,
                len(e.name),
                len(extra),
                0,
                0,
                0,
                0o100644 << 16,
                offset,
            )
        )
        out.append(e.name)
        out.append(extra)
    directory = b"".join(out)
    fp.write(directory)
    count, cd_size = len(entries), len(directory)
    if count >= ZIP64_COUNT_LIMIT or cd_size >= ZIP64_LIMIT or cd_offset >= ZIP64_LIMIT:
        eocd64 = fp.tell()
        fp.write(
            _EOCD64.pack(_SIG_EOCD64, _EOCD64.size - 12, (3 << 8) | 45, 45, 0, 0, count, count, cd_size, cd_offset)
        )
        fp.write(_LOCATOR64.pack(_SIG_LOCATOR64, 0, eocd64, 1))
    fp.write(
        _EOCD.pack(
            _SIG_EOCD,
            0,
            0,
            min(count, 0xFFFF),
            min(count, 0xFFFF),
            cd_size if cd_size < ZIP64_LIMIT else 0xFFFFFFFF,
            cd_offset if cd_offset < ZIP64_LIMIT else 0xFFFFFFFF,
            0,
        )
    )


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class _Member:
    __slots__ = ("crc", "crcs", "csize", "flags", "index", "key", "method", "name", "offset", "start", "usize")

    def __init__(self, name: str, flags: int, method: int, crc: int, csize: int, usize: int, offset: int) -> None:
        self.name, self.flags, self.method, self.crc = name, flags, method, crc
        self.csize, self.usize, self.offset = csize, usize, offset
        self.key = name[:-4]
        self.start = -1
        self.index: list[tuple[int, int]] = []
        self.crcs: list[int] | None = None  # CRC-32 of each piece between restart points, if stored

    @property
    def deflated(self) -> bool:
        return self.method == _DEFLATED


def _member_name(raw: bytes, flags: int) -> str:
    """A zip entry's name: UTF-8 if flag bit 11 says so, else code page 437 (UnicodeDecodeError if invalid)."""
    return raw.decode("utf-8") if flags & _FLAG_UTF8 else raw.decode("cp437")


def _extra_fields(extra: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(tag, declared size, body) of each field of a zip extra block; the last body may be cut short."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        yield tag, size, extra[pos + 4 : pos + 4 + size]
        pos += 4 + size


def _index_values(extra: bytes, where: str) -> tuple[list[tuple[int, int]], list[int] | None]:
    """tmd_nb's chunk index and its pieces' CRCs from central directory extra fields (empty, None if absent)."""
    index: list[tuple[int, int]] = []
    crcs: list[int] | None = None
    for tag, size, body in _extra_fields(extra):
        if tag == _INDEX_EXTRA:
            if size % 16 or len(body) != size:
                raise FormatError(f"{where} has a malformed tmd_nb chunk index")
            flat = struct.unpack(f"<{size // 8}Q", body)
            index = list(zip(flat[::2], flat[1::2], strict=True))
        elif tag == _CRCS_EXTRA:
            if size % 4 or len(body) != size:
                raise FormatError(f"{where} has malformed tmd_nb chunk checksums")
            crcs = list(struct.unpack(f"<{size // 4}I", body))
    if crcs is not None and len(crcs) != len(index) + 1:
        raise FormatError(f"{where} has {len(crcs)} tmd_nb chunk checksums for {len(index) + 1} pieces")
    return index, crcs


def _zip64_values(extra: bytes, wanted: list[bool], where: str) -> list[int]:
    """Values of a Zip64 extra field, for each 32-bit field that held the 0xFFFFFFFF sentinel."""
    for tag, size, body in _extra_fields(extra):
        if len(body) != size:
            raise FormatError(f"{where} has a truncated extra field")
        if tag == _ZIP64_EXTRA:
            n = sum(wanted)
            if size < 8 * n:
                raise FormatError(f"{where} has a Zip64 extra field too short for its sizes")
            return list(struct.unpack_from(f"<{n}Q", body))
    if any(wanted):
        raise FormatError(f"{where} needs a Zip64 extra field but has none")
    return []


def _read_exact(f: BinaryIO, offset: int, n: int, where: str, what: str) -> bytes:
    f.seek(offset)
    data = f.read(n)
    if len(data) != n:
        raise FormatError(f"{where} is truncated: {what} is cut off")
    return data


def _central_directory(f: BinaryIO, size: int, where: str) -> tuple[list[_Member], int]:
    """Parse the end records and central directory; return the members and where the directory starts."""
    if size < _EOCD.size:
        raise FormatError(f"{where} is not a zip archive: only {size} bytes")
    tail_len = min(size, _EOCD.size + 0xFFFF)
    tail = _read_exact(f, size - tail_len, tail_len, where, "the end record")
    pos = tail.rfind(b"PK\x05\x06")
    found = -1
    while pos >= 0:
        (comment_len,) = struct.unpack_from("<H", tail, pos + 20) if pos + 22 <= len(tail) else (None,)
        if comment_len is not None and pos + 22 + comment_len == len(tail):
            found = pos
            break
        pos = tail.rfind(b"PK\x05\x06", 0, pos)
    if found < 0:
        last = tail.rfind(b"PK\x05\x06")
        if last >= 0:
            raise FormatError(f"{where} has trailing bytes after the end of its zip archive")
        raise FormatError(f"{where} is not a zip archive (no end of central directory record); truncated?")
    eocd_pos = size - tail_len + found
    _, disk, cd_disk, n_disk, count, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, found)
    end_of_cd = eocd_pos
    if eocd_pos >= _LOCATOR64.size:
        loc = _read_exact(f, eocd_pos - _LOCATOR64.size, _LOCATOR64.size, where, "the Zip64 locator")
        sig, _, eocd64_pos, _ = _LOCATOR64.unpack(loc)
        if sig == _SIG_LOCATOR64:
            if eocd64_pos + _EOCD64.size > eocd_pos - _LOCATOR64.size:
                raise FormatError(f"{where} has a Zip64 locator pointing outside the archive")
            rec = _read_exact(f, eocd64_pos, _EOCD64.size, where, "the Zip64 end record")
            sig, rec_size, _, _, disk, cd_disk, n_disk, count, cd_size, cd_offset = _EOCD64.unpack(rec)
            if sig != _SIG_EOCD64 or eocd64_pos + 12 + rec_size != eocd_pos - _LOCATOR64.size:
                raise FormatError(f"{where} has a malformed Zip64 end record")
            end_of_cd = eocd64_pos
    if disk != 0 or cd_disk != 0 or n_disk != count:
        raise FormatError(f"{where} is a multi-disk zip archive, which is not supported")
    if cd_offset + cd_size != end_of_cd:
        raise FormatError(
            f"{where}: its central directory ({cd_size} bytes at {cd_offset}) does not end where "
            f"the end record is ({end_of_cd}); truncated or padded?"
        )
    if count * _CENTRAL.size > cd_size:
        raise FormatError(f"{where} claims {count} members in a central directory of {cd_size} bytes")
    cd = _read_exact(f, cd_offset, cd_size, where, "the central directory")
    members: list[_Member] = []
    pos = 0
    for i in range(count):
        if pos + _CENTRAL.size > len(cd):
            raise FormatError(f"{where} has a central directory shorter than its {count} entries")
        (sig, _, _, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, disk_start, _, _, offset) = (
            _CENTRAL.unpack_from(cd, pos)
        )
        if sig != _SIG_CENTRAL:
            raise FormatError(f"{where} has a corrupt central directory (entry {i})")
        raw = cd[pos + 46 : pos + 46 + nlen]
        extra = cd[pos + 46 + nlen : pos + 46 + nlen + xlen]
        pos += 46 + nlen + xlen + clen
        if pos > len(cd):
            raise FormatError(f"{where} has a central directory entry running past its end")
        try:
            name = _member_name(raw, flags)
        except UnicodeDecodeError:
            raise FormatError(f"{where} has a member name that is not valid UTF-8: {raw!r}") from None
        member = f"{where} member {name!r}"
        wanted = [usize == 0xFFFFFFFF, csize == 0xFFFFFFFF, offset == 0xFFFFFFFF]
        values = iter(_zip64_values(extra, wanted, member)) if any(wanted) else iter(())
        usize = next(values) if wanted[0] else usize
        csize = next(values) if wanted[1] else csize
        offset = next(values) if wanted[2] else offset
        if disk_start not in (0, 0xFFFF):
            raise FormatError(f"{member} lies on another disk of a multi-disk archive")
        members.append(_Member(name, flags, method, crc, csize, usize, offset))
        members[-1].index, members[-1].crcs = _index_values(extra, member)
    if pos != len(cd):
        raise FormatError(f"{where} has {len(cd) - pos} stray bytes in its central directory")
    return members, cd_offset


def _check_member(f: BinaryIO, m: _Member, cd_offset: int, where: str, npy: bool = True) -> None:
    """Refuse what cannot be read safely, compare the local header with the central directory."""
    if npy and (not m.name.endswith(".npy") or len(m.name) <= 4):
        raise FormatError(f"{where} is not an NPY array (only .npy members are read)")
    if m.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION | _FLAG_MASKED_HEADERS):
        raise FormatError(f"{where} is encrypted")
    if m.method not in (_STORED, _DEFLATED):
        label = _METHOD_NAMES.get(m.method, "unknown")
        raise FormatError(
            f"{where} uses unsupported compression method {m.method} ({label}); "
            "only stored and deflate members are read"
        )
    if m.offset + _LOCAL.size > cd_offset:
        raise FormatError(f"{where} has a local header offset outside the archive data")
    head = _read_exact(f, m.offset, _LOCAL.size, where, "the local header")
    sig, _, flags, method, _, _, crc, csize, usize, nlen, xlen = _LOCAL.unpack(head)
    if sig != _SIG_LOCAL:
        raise FormatError(f"{where}: no local header where the central directory says it is")
    name_extra = _read_exact(f, m.offset + _LOCAL.size, nlen + xlen, where, "the local header")
    raw_name = name_extra[:nlen]
    try:
        name = _member_name(raw_name, flags)
    except UnicodeDecodeError:
        name = None
    if name != m.name:
        raise FormatError(f"{where}: the local header names it {raw_name!r}, unlike the central directory")
    if method != m.method or (flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION)) != (
        m.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION)
    ):
        raise FormatError(f"{where}: the local header disagrees with the central directory on method or flags")
    if not flags & _FLAG_DESCRIPTOR:
        wanted = [usize == 0xFFFFFFFF, csize == 0xFFFFFFFF]
        if any(wanted):
            values = iter(_zip64_values(name_extra[nlen:], [True, True], where))  # local Zip64: both sizes
            usize, csize = next(values), next(values)
        if (crc, csize, usize) != (m.crc, m.csize, m.usize):
            raise FormatError(
                f"{where}: the local header (CRC {crc:#010x}, {csize} stored, {usize} bytes) disagrees "
                f"with the central directory (CRC {m.crc:#010x}, {m.csize} stored, {m.usize} bytes)"
            )
    m.start = m.offset + _LOCAL.size + nlen + xlen
    if m.start + m.csize > cd_offset:
        raise FormatError(f"{where} claims {m.csize} stored bytes, more than the archive holds before its directory")
    limit = m.csize if m.method == _STORED else inflate_bound(m.csize)
    if m.usize > limit or (m.method == _STORED and m.usize != m.csize):
        raise FormatError(f"{where} claims {m.usize} bytes from {m.csize} stored bytes")


class _CallbackFailed(Exception):
    """Carries an exception of the caller's ``progress`` callback past :func:`_malformed`."""


@contextlib.contextmanager
def _malformed(message: str) -> Iterator[None]:
    """Turn whatever a hostile archive makes the block raise into a FormatError: ``message: <error>``."""
    try:
        yield
    except FormatError:
        raise
    except _DECODE_ERRORS as exc:
        raise FormatError(f"{message}: {exc}") from None


#: ``check(key, dtype, shape, where, keys)``: may refuse a member from its NPY header (and the keys of
#: every member of the archive), before its data are read.
MemberCheck = Callable[[str, np.dtype, tuple[int, ...], str, frozenset[str]], None]


def checked_members(f: BinaryIO, where: str, *, npy: bool = True) -> list[_Member]:
    """The members of the zip archive open as ``f``, in archive order, every structure checked.

    Each tells where its data lie (``start``, ``csize``), what they inflate to (``usize``,
    ``crc``, ``deflated``) and its restart points (``index``); nothing is inflated. ``npy``:
    refuse members not named ``*.npy`` (an NPZ archive); else any names are listed (X3P).
    """
    size = os.fstat(f.fileno()).st_size
    with _malformed(f"{where} is not a readable NPZ (zip) archive"):
        members, cd_offset = _central_directory(f, size, where)
    seen: set[str] = set()
    for m in members:
        if m.name in seen:
            raise FormatError(f"{where} has duplicate member names ({m.name!r})")
        seen.add(m.name)
    for m in members:
        with _malformed(f"{where} member {m.name!r} is corrupt"):
            _check_member(f, m, cd_offset, f"{where} member {m.name!r}", npy)
    ordered = sorted(members, key=lambda m: m.offset)
    for a, b in itertools.pairwise(ordered):
        if a.start + a.csize > b.offset:
            raise FormatError(f"{where}: members {a.name!r} and {b.name!r} overlap")
    return members


def read_npz(
    path: str | os.PathLike[str],
    *,
    progress: Progress | None = None,
    threads: int | None = None,
    skip: Container[str] = (),
    check: MemberCheck | None = None,
) -> dict[str, np.ndarray]:
    """Read every ``.npy`` member of a zip archive, in archive order, keyed by name without ``.npy``.

    Deflated members are inflated (ISA-L where installed) straight into the preallocated arrays;
    the members tmd_nb wrote carry an index of restart points in their deflate stream, and are
    inflated on ``threads`` threads (default: every available core). ``progress(done_bytes,
    total_bytes)`` counts uncompressed member bytes. Members named in ``skip`` (without ``.npy``)
    are checked in the directory but not read. ``check(key, dtype, shape, where, keys)`` is called
    with each member's header and the keys of all members, before anything is allocated for its
    data, and may raise.
    """
    where = describe(path)
    workers = thread_count(threads)
    with open_file(path, where) as f:
        every = checked_members(f, where)
        keys = frozenset(m.key for m in every)
        members = [m for m in every if m.key not in skip]
        reporter = Reporter(progress, sum(m.usize for m in members))

        def advance(n: int) -> None:
            try:
                reporter.add(n)
            except Exception as exc:  # the caller's own error, not a sign of a corrupt file
                raise _CallbackFailed() from exc

        out: dict[str, np.ndarray] = {}
        try:
            for m in members:
                member = f"{where} member {m.name!r}"
                with _malformed(f"{member} is corrupt"):
                    out[m.key] = _read_member(f, m, member, advance, workers, check, keys)
        except _CallbackFailed as failed:
            raise failed.__cause__ from None  # type: ignore[misc]
        reporter.finish()
        return out


def member_bytes(f: io.FileIO, m: _Member, where: str, threads: int | None = None) -> np.ndarray:
    """The bytes of member ``m`` of :func:`checked_members` as a new writable uint8 array, CRC checked.

    Inflated as NPZ members are: on every core when the member has a chunk index.
    """
    workers = thread_count(threads)
    with _malformed(f"{where} is corrupt"):
        whole = inflate_whole(f, m, where, workers)
        if whole is not None:
            return whole
        out = np.empty(m.usize, dtype=np.uint8)
        inflate_rest(f, m, MemberStream(f, m, where), b"", bytes_of(out), where, lambda n: None, workers)
    return out


def _read_member(
    f: io.FileIO,
    m: _Member,
    where: str,
    advance: Callable[[int], None],
    threads: int,
    check: MemberCheck | None,
    keys: frozenset[str],
) -> np.ndarray:
    stream = MemberStream(f, m, where)
    prefix_len = min(m.usize, 12)
    head = stream.read(prefix_len)
    hlen = header_length(head, where)
    if hlen > m.usize:
        raise FormatError(f"{where} is shorter than its own NPY header")
    head += stream.read(hlen - len(head))
    dtype, shape, fortran, offset = parse_header(io.BytesIO(head), where)
    nbytes = data_size(dtype, shape)
    if offset + nbytes != m.usize:
        raise FormatError(f"{where}: header claims {nbytes} data bytes but the archive stores {m.usize - offset}")
    if offset != len(head):
        raise FormatError(f"{where} has a malformed NPY header")
    if check is not None:
        check(m.key, dtype, shape, where, keys)
    advance(len(head))
    whole = inflate_whole(f, m, where, threads)
    if whole is not None:
        advance(m.usize - len(head))
        if offset % dtype.alignment == 0:  # the array is made over the inflated bytes, past the header
            return np.ndarray(shape, dtype=dtype, buffer=whole, offset=offset, order="F" if fortran else "C")
        array = empty_array(dtype, shape, fortran, where)  # a header of odd length: copy, aligned
        bytes_of(array)[:] = whole.data[offset:]
        return array
    array = empty_array(dtype, shape, fortran, where)
    buf = bytes_of(array)
    inflate_rest(f, m, stream, head, buf, where, advance, threads)
    return array
