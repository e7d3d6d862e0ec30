"""NPY files and NPZ (zip) archives of NPY members: streamed, fast, and read defensively.

This layer knows nothing about height maps or metadata: it moves named numpy arrays.

Speed
    The NPZ writer streams each array into its zip member in chunks (no copy of the array is
    made), deflates them with Intel ISA-L (``isal``) where it is installed and plain ``zlib``
    otherwise, on every core for large members (chunks are compressed in parallel and joined into
    one valid deflate stream), and writes the zip structures itself (Zip64 where needed). The
    readers inflate (ISA-L where installed) or read straight into the preallocated result; the
    members tmd_nb writes also carry an index of the points where their deflate stream restarts
    (an extra field other zip readers skip), so they are inflated on every core too.
    Whatever the writer produces is an ordinary NPZ that plain ``numpy.load`` opens.

Safety
    No pickle is ever loaded and object dtypes are refused; a header's claimed size is compared
    with the bytes actually stored before anything is allocated for it (deflate members are
    bounded by :data:`MAX_DEFLATE_RATIO` of their compressed size); member names must be unique
    ``.npy`` names; encrypted members and compression methods other than stored/deflate are
    refused; local headers must agree with the central directory, members must not overlap,
    CRCs are verified, and bytes after the data (of a member or of the archive) are refused.
    Every malformed input raises :class:`~tmd_nb.errors.FormatError` naming the file (and member)
    and the problem; ``OSError`` subclasses pass through.
"""

from __future__ import annotations

import collections
import io
import itertools
import math
import os
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npformat

from .errors import FormatError

try:  # ISA-L: the same deflate format, several times faster. A declared dependency, but optional here.
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised by monkeypatching _isal_zlib to None
    _isal_zlib = None

__all__ = ["Progress", "read_npy", "read_npz", "write_npy", "write_npz", "NPY_MAGIC", "ZIP_MAGIC",
           "DEFAULT_LEVEL"]

Progress = Callable[[int, int], None]

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# dtype kinds a member may have: bool, integers, floats, complex, str, bytes, datetime64, timedelta64.
ALLOWED_KINDS = frozenset("biufcUSMm")
MAX_HEADER_SIZE = 10_000
# Deflate cannot expand data by more than about 1032:1; anything claiming more is lying.
MAX_DEFLATE_RATIO = 1100
# Unit of I/O and of progress reports when reading and writing uncompressed data.
CHUNK = 1 << 23
# Unit of parallel compression: each chunk becomes an independent, byte-aligned run of deflate
# blocks. Small enough to bound memory (a few chunks are in flight), large enough that the
# boundaries cost nothing measurable in size.
DEFLATE_CHUNK = 1 << 22
# Inflate in pieces of this many output bytes (they are copied into the result, cache-warm).
INFLATE_PIECE = 1 << 21
# Zip fields of 32 bits hold values below this; larger values go into Zip64 extra fields. Tests
# lower it to exercise the Zip64 structures without writing 4 GiB.
ZIP64_LIMIT = 0xFFFFFFFF
ZIP64_COUNT_LIMIT = 0xFFFF
# Large saves start writing back to disk every this many bytes, while they go on (see _WriteBehind).
WRITE_BEHIND = 1 << 24
# The fast default: ISA-L level 2 (see write_npz for what every level means).
DEFAULT_LEVEL = 2
MAX_THREADS = 8

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
_METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstandard",
                 95: "xz", 98: "ppmd", 99: "AES encryption"}
_ZIP64_EXTRA = 0x0001
# tmd_nb's own extra field (central directory only; other readers skip it): where the deflate
# stream of a member restarts from scratch (after a sync flush, no reference to earlier data),
# as pairs of (compressed, uncompressed) offsets, so that the pieces can be inflated in parallel.
_INDEX_EXTRA = 0x746E
MAX_INDEX = 256
_WINDOW = 1 << 15

# Everything a hostile or damaged archive can make the parsing and inflating code raise.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    zlib.error, struct.error, ValueError, OverflowError, MemoryError, EOFError, RecursionError,
    IndexError, KeyError, TypeError, UnicodeDecodeError, SyntaxError)
if _isal_zlib is not None:
    _DECODE_ERRORS += (_isal_zlib.error,)


def _describe(path: str | os.PathLike[str]) -> str:
    return repr(os.fspath(path))


def _open(path: str | os.PathLike[str], where: str) -> BinaryIO:
    """Open for unbuffered reading; refuse a FIFO or socket, whose open or read could block forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0  # let open() raise the proper OSError
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise FormatError(f"{where} is not a regular file (a pipe or socket)")
    return open(path, "rb", buffering=0)  # type: ignore[return-value]


def _crc32(data: Any, crc: int = 0) -> int:
    return (_isal_zlib.crc32 if _isal_zlib is not None else zlib.crc32)(data, crc)


def _threads(threads: int | None) -> int:
    if threads is not None:
        if type(threads) is not int or threads < 1:
            raise ValueError(f"threads must be a positive int or None, not {threads!r}")
        return threads
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


class _WriteBehind:
    """Start the disk write-back of a large save while it is still being written.

    The caller fsyncs at the end for durability (tmd_nb saves through ``atomic_write``); by then
    most of the data is already on disk, because a helper thread has been calling ``fdatasync``
    every :data:`WRITE_BEHIND` bytes, overlapping the disk with the compression. Files without a
    descriptor, and small saves, are left alone. Errors here are ignored: the final fsync is the
    one that reports them.
    """

    def __init__(self, fp: BinaryIO, total: int) -> None:
        self.fp = fp
        self.pending = 0
        self.thread: threading.Thread | None = None
        self.fd = -1
        if total < 2 * WRITE_BEHIND:
            return
        try:
            self.fd = fp.fileno()
        except (AttributeError, OSError, ValueError):
            return
        self.wake = threading.Event()
        self.stop = False
        self.requested = False
        self.thread = threading.Thread(target=self._run, name="tmd_nb-write-behind", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.requested:
                self.requested = False
                try:
                    sync(self.fd)
                except OSError:
                    return
            if self.stop:
                return

    def wrote(self, n: int) -> None:
        if self.thread is None:
            return
        self.pending += n
        if self.pending >= WRITE_BEHIND:
            self.pending = 0
            self.fp.flush()
            self.requested = True
            self.wake.set()

    def close(self) -> None:
        if self.thread is not None:
            self.stop = True
            self.wake.set()
            self.thread.join()
            self.thread = None


# --------------------------------------------------------------------------------------------
# NPY headers and array bytes
# --------------------------------------------------------------------------------------------

def _parse_header(fp: BinaryIO, where: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Read an NPY header from ``fp``; return dtype, shape, fortran order and header length."""
    magic = fp.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise FormatError(f"{where} is not an NPY array (bad magic bytes {magic[:8]!r})")
    try:
        fp.seek(0)
        version = npformat.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp, max_header_size=MAX_HEADER_SIZE)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fp, max_header_size=MAX_HEADER_SIZE)
        else:
            raise FormatError(f"{where} uses unsupported NPY format version {version}")
    except (FormatError, OSError):
        raise
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError...
        raise FormatError(f"{where} has a malformed NPY header: {exc}") from None
    if dtype.hasobject:
        raise FormatError(f"{where} holds Python objects (dtype {dtype}); loading them would need pickle, which is refused")
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise FormatError(f"{where} has unsupported dtype {dtype}")
    if any(n < 0 for n in shape):
        raise FormatError(f"{where} has a negative dimension in its shape {shape}")
    return dtype, tuple(int(n) for n in shape), bool(fortran), fp.tell()


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize


def _header_bytes(array: np.ndarray, what: str) -> bytes:
    """The NPY header numpy itself would write for ``array`` (format 1.0, or 2.0 if it must)."""
    dtype = array.dtype
    if dtype.hasobject:
        raise ValueError(f"{what} has dtype {dtype}: Python objects cannot be saved without pickle, which is refused")
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(f"{what} has unsupported dtype {dtype}; use a bool, numeric, str, bytes or datetime dtype")
    header = npformat.header_data_from_array_1_0(array)
    buf = io.BytesIO()
    try:
        npformat.write_array_header_1_0(buf, header)
    except ValueError:  # header longer than 64 KiB (a huge number of dimensions)
        buf = io.BytesIO()
        npformat.write_array_header_2_0(buf, header)
    return buf.getvalue()


def _data_pieces(array: np.ndarray, piece: int) -> Iterator[memoryview]:
    """The bytes of ``array`` in the order its NPY header promises, in pieces of at most ``piece``.

    Contiguous arrays (C or Fortran order) are sliced without copying; other layouts are copied
    one piece at a time, never as a whole.
    """
    if array.nbytes == 0:
        return
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
    elif array.flags.f_contiguous:
        flat = array.T.reshape(-1)
    else:
        flat = None
    if flat is not None:
        raw = memoryview(flat.view(np.uint8))
        for start in range(0, len(raw), piece):
            yield raw[start:start + piece]
        return
    step = max(1, piece // array.itemsize)
    for block in np.nditer(array, flags=["external_loop", "buffered", "zerosize_ok"], buffersize=step, order="C"):
        yield memoryview(block.tobytes())  # nditer reuses its buffer: this copy is one piece only


# --------------------------------------------------------------------------------------------
# NPY
# --------------------------------------------------------------------------------------------

def write_npy(fp: BinaryIO, array: np.ndarray, progress: Progress | None = None) -> None:
    """Write ``array`` to ``fp`` in NPY format (no pickle), streamed in pieces without a copy.

    ``progress(done_bytes, total_bytes)`` is called after each piece of array data.
    """
    array = np.asanyarray(array)
    fp.write(_header_bytes(array, "array"))
    total = array.nbytes
    done = 0
    behind = _WriteBehind(fp, total)
    try:
        for piece in _data_pieces(array, CHUNK):
            fp.write(piece)
            behind.wrote(len(piece))
            done += len(piece)
            if progress is not None:
                progress(done, total)
    finally:
        behind.close()
    if progress is not None and total == 0:
        progress(0, 0)


def read_npy(path: str | os.PathLike[str], *, mmap: bool = False, progress: Progress | None = None) -> np.ndarray:
    """Read an NPY file; with ``mmap`` the result is a read-only memory map.

    The data are read straight into the result (no intermediate buffer), in pieces that drive
    ``progress(done_bytes, total_bytes)``.
    """
    where = _describe(path)
    with _open(path, where) as fp:
        size = os.fstat(fp.fileno()).st_size
        dtype, shape, fortran, offset = _parse_header(fp, where)  # type: ignore[arg-type]
        expected = offset + _nbytes(dtype, shape)
        if expected != size:
            raise FormatError(
                f"{where}: header claims {expected - offset} data bytes but the file stores {size - offset}")
        if mmap and math.prod(shape) > 0:
            array: np.ndarray = np.memmap(fp, dtype=dtype, mode="r", offset=offset, shape=shape,
                                          order="F" if fortran else "C")
            if progress is not None:
                progress(array.nbytes, array.nbytes)
            return array
        array = _empty(dtype, shape, fortran, where)
        buf = _bytes_of(array)
        total = len(buf)
        done = 0
        while done < total:
            n = fp.readinto(buf[done:done + CHUNK])
            if not n:
                raise FormatError(f"{where} is truncated: {done} of {total} data bytes present")
            done += n
            if progress is not None:
                progress(done, total)
        if progress is not None and total == 0:
            progress(0, 0)
        return array


def _empty(dtype: np.dtype, shape: tuple[int, ...], fortran: bool, where: str) -> np.ndarray:
    try:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    except (MemoryError, ValueError) as exc:
        raise FormatError(f"{where}: cannot allocate an array of shape {shape} and dtype {dtype}: {exc}") from None


def _bytes_of(array: np.ndarray) -> memoryview:
    """A writable byte view of a freshly allocated (hence contiguous) array."""
    if array.nbytes == 0:
        return memoryview(bytearray())
    return memoryview(array.reshape(-1, order="A").view(np.uint8))


# --------------------------------------------------------------------------------------------
# Deflate, in parallel chunks
# --------------------------------------------------------------------------------------------

class _Codec:
    """What a ``level`` means: which library, which of its levels, and whether chunks are primed."""

    def __init__(self, level: int | None) -> None:
        if level is None:
            level = DEFAULT_LEVEL
        if type(level) is not int or not 0 <= level <= 9:
            raise ValueError(f"compression level must be an int from 0 to 9 or None, not {level!r}")
        self.level = level
        # Level 0 means "stored" (write_npz never deflates with it): ISA-L's own level 0 uses
        # static Huffman codes only, and grows float data by 3-20%.
        if level <= 3 and _isal_zlib is not None:
            self.module: Any = _isal_zlib
            self.lib_level = level
            self.prime = False
        elif level <= 3:
            self.module, self.lib_level, self.prime = zlib, max(level, 1), False
        else:
            # zlib's levels, each chunk primed with the 32 KiB before it (as pigz does), so that
            # splitting the stream costs (almost) no compression; memLevel 9 gives zlib larger
            # blocks, which more than pays for the few extra block headers at chunk boundaries.
            self.module, self.lib_level, self.prime = zlib, level, True

    def compress(self, pieces: list[memoryview], zdict: bytes | None, final: bool) -> bytes:
        mod = self.module
        if mod is zlib:
            c = zlib.compressobj(self.lib_level, zlib.DEFLATED, -15, 9, **({"zdict": zdict} if zdict else {}))
        else:
            c = mod.compressobj(self.lib_level, mod.DEFLATED, -15)
        out = [c.compress(p) for p in pieces]
        out.append(c.flush(mod.Z_FINISH if final else mod.Z_SYNC_FLUSH))
        return b"".join(out)


def _tail(pieces: list[memoryview], n: int) -> bytes:
    """The last ``n`` bytes of the concatenation of ``pieces``."""
    out: list[bytes] = []
    need = n
    for p in reversed(pieces):
        if need <= 0:
            break
        take = p[-need:] if len(p) > need else p
        out.append(bytes(take))
        need -= len(take)
    return b"".join(reversed(out))


def _jobs(header: bytes, array: np.ndarray) -> Iterator[tuple[list[memoryview], int, bool]]:
    """Chunks of the member's bytes: (pieces, array bytes in them, is it the last chunk)."""
    pending: list[memoryview] = [memoryview(header)]
    pending_data = 0
    for piece in _data_pieces(array, DEFLATE_CHUNK):
        if pending_data:
            yield pending, pending_data, False
            pending, pending_data = [], 0
        pending.append(piece)
        pending_data += len(piece)
    yield pending, pending_data, True


# --------------------------------------------------------------------------------------------
# NPZ writer
# --------------------------------------------------------------------------------------------

def _dos_time() -> tuple[int, int]:
    t = time.localtime()
    year = min(max(t.tm_year, 1980), 2107)
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday


class _Entry:
    __slots__ = ("name", "flags", "method", "crc", "csize", "usize", "offset", "zip64", "index")

    def __init__(self, name: bytes, flags: int, method: int, usize: int, offset: int, zip64: bool) -> None:
        self.name, self.flags, self.method, self.usize, self.offset, self.zip64 = name, flags, method, usize, offset, zip64
        self.crc = 0
        self.csize = 0
        self.index: list[tuple[int, int]] = []


def write_npz(fp: BinaryIO, members: Mapping[str, np.ndarray], *, compress: bool = True, level: int | None = None,
              progress: Progress | None = None, threads: int | None = None) -> None:
    """Write ``members`` as ``<name>.npy`` entries of a zip archive that ``numpy.load`` opens.

    Each array is streamed into its member in chunks (no copy of the array is made). ``fp`` must
    be seekable: sizes and CRCs are patched into the local headers once a member is written.

    ``compress=False`` stores the bytes as they are. With ``compress=True``, ``level`` is:

    * ``None`` (the default, :data:`DEFAULT_LEVEL` = 2): fast. Levels ``1``-``3`` are ISA-L's
      levels (1 fastest, 2 its usual balance and the best on height maps, 3 its most thorough);
      without ``isal`` installed, zlib's fast levels 1-3 stand in, so the file is of the same
      kind, only slower to make.
    * ``0``: no compression, as in zlib (the members are stored, like ``compress=False``).
    * ``4``-``9``: zlib's own levels, for when size matters more than time; ``6`` (what
      ``numpy.savez_compressed`` uses) and up give a file no larger than ``numpy.savez_compressed``'s.

    Either way members larger than one chunk (:data:`DEFLATE_CHUNK`) are compressed on ``threads``
    threads (default: every available core, at most :data:`MAX_THREADS`) and joined into one
    standard deflate stream. ``progress(done_bytes, total_bytes)`` counts array data bytes.
    """
    codec = _Codec(level) if compress else None
    if codec is not None and codec.level == 0:
        codec = None
    items = []
    for name, array in members.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"NPZ member names must be non-empty str, not {name!r}")
        array = np.asanyarray(array)
        items.append((name, array, _header_bytes(array, f"member {name!r}")))
    if len({name for name, _, _ in items}) != len(items):  # pragma: no cover - a Mapping has unique keys
        raise ValueError("duplicate NPZ member names")
    total = sum(array.nbytes for _, array, _ in items)
    reporter = _Reporter(progress, total)
    workers = _threads(threads) if compress else 1
    entries: list[_Entry] = []
    pool: ThreadPoolExecutor | None = None
    behind = _WriteBehind(fp, total)
    try:
        for name, array, header in items:
            if codec is not None and workers > 1 and pool is None and array.nbytes > DEFLATE_CHUNK:
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tmd_nb-deflate")
            entries.append(_write_member(fp, name, header, array, codec, pool, workers, reporter, behind))
        _write_central_directory(fp, entries)
    finally:
        behind.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    reporter.finish()


class _Reporter:
    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def add(self, n: int) -> None:
        if n and self.progress is not None:
            self.done += n
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress is not None and self.total == 0:
            self.progress(0, 0)


def _write_member(fp: BinaryIO, name: str, header: bytes, array: np.ndarray, codec: _Codec | None,
                  pool: ThreadPoolExecutor | None, workers: int, reporter: _Reporter, behind: _WriteBehind) -> _Entry:
    try:
        raw_name = (name + ".npy").encode("ascii")
        flags = 0
    except UnicodeEncodeError:
        raw_name = (name + ".npy").encode("utf-8")
        flags = _FLAG_UTF8
    usize = len(header) + array.nbytes
    # The compressed size is known only at the end; reserve Zip64 room whenever it could be needed
    # (incompressible data grows slightly under deflate).
    zip64 = usize + usize // 8 + (1 << 20) >= ZIP64_LIMIT
    offset = fp.tell()
    entry = _Entry(raw_name, flags, _DEFLATED if codec else _STORED, usize, offset, zip64)
    extra = struct.pack("<HHQQ", _ZIP64_EXTRA, 16, 0, 0) if zip64 else b""
    mtime, mdate = _dos_time()
    fp.write(_LOCAL.pack(_SIG_LOCAL, 45 if zip64 else 20, flags, entry.method, mtime, mdate, 0,
                         0xFFFFFFFF if zip64 else 0, 0xFFFFFFFF if zip64 else 0, len(raw_name), len(extra)))
    fp.write(raw_name)
    fp.write(extra)
    data_start = fp.tell()
    crc = 0
    if codec is None:
        crc = _crc32(header)
        fp.write(header)
        for piece in _data_pieces(array, CHUNK):
            crc = _crc32(piece, crc)
            fp.write(piece)
            behind.wrote(len(piece))
            reporter.add(len(piece))
    else:
        crc = _deflate_member(fp, header, array, codec, pool, workers, reporter, behind, entry.index)
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


def _deflate_member(fp: BinaryIO, header: bytes, array: np.ndarray, codec: _Codec, pool: ThreadPoolExecutor | None,
                    workers: int, reporter: _Reporter, behind: _WriteBehind, index: list[tuple[int, int]]) -> int:
    """Deflate header + array bytes into ``fp`` as one stream; return the CRC-32 of the input.

    Unless chunks are primed with their predecessor's tail, every chunk boundary is a point where
    the stream restarts from scratch: they are appended to ``index`` as (compressed, uncompressed)
    offsets from the start of the member.
    """
    crc = 0
    start = fp.tell()
    done_in = 0
    written: list[int] = []
    in_flight: collections.deque[tuple[Future[bytes], int]] = collections.deque()
    previous: list[memoryview] | None = None
    for pieces, data_bytes, final in _jobs(header, array):
        for p in pieces:  # the main thread computes the CRC while the workers compress
            crc = _crc32(p, crc)
        zdict = _tail(previous, _WINDOW) if codec.prime and previous else None
        previous = pieces
        if done_in and not codec.prime:  # where this chunk starts: the previous one ended flushed
            index.append((-1, done_in))  # compressed offset filled in once it is written
        done_in += sum(len(p) for p in pieces)
        if pool is None:
            out = codec.compress(pieces, zdict, final)
            fp.write(out)
            behind.wrote(len(out))
            reporter.add(data_bytes)
            written.append(len(out))
            continue
        in_flight.append((pool.submit(codec.compress, pieces, zdict, final), data_bytes))
        while len(in_flight) > workers:
            future, n = in_flight.popleft()
            out = future.result()
            fp.write(out)
            behind.wrote(len(out))
            reporter.add(n)
            written.append(len(out))
    while in_flight:
        future, n = in_flight.popleft()
        out = future.result()
        fp.write(out)
        behind.wrote(len(out))
        reporter.add(n)
        written.append(len(out))
    if index:
        ends = list(itertools.accumulate(written))
        assert fp.tell() - start == ends[-1] and len(index) == len(ends) - 1
        index[:] = [(ends[i], u) for i, (_, u) in enumerate(index)]
        if len(index) > MAX_INDEX:  # any subset of restart points is still valid
            step = math.ceil(len(index) / MAX_INDEX)
            index[:] = index[step - 1::step]
    return crc


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
        version = 45 if fields else 20
        out.append(_CENTRAL.pack(_SIG_CENTRAL, (3 << 8) | version, version, e.flags, e.method, mtime, mdate, e.crc,
                                 csize, usize, len(e.name), len(extra), 0, 0, 0, 0o100644 << 16, offset))
        out.append(e.name)
        out.append(extra)
    directory = b"".join(out)
    fp.write(directory)
    count, cd_size = len(entries), len(directory)
    if count >= ZIP64_COUNT_LIMIT or cd_size >= ZIP64_LIMIT or cd_offset >= ZIP64_LIMIT:
        eocd64 = fp.tell()
        fp.write(_EOCD64.pack(_SIG_EOCD64, _EOCD64.size - 12, (3 << 8) | 45, 45, 0, 0, count, count, cd_size,
                              cd_offset))
        fp.write(_LOCATOR64.pack(_SIG_LOCATOR64, 0, eocd64, 1))
    fp.write(_EOCD.pack(_SIG_EOCD, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                        cd_size if cd_size < ZIP64_LIMIT else 0xFFFFFFFF,
                        cd_offset if cd_offset < ZIP64_LIMIT else 0xFFFFFFFF, 0))


# --------------------------------------------------------------------------------------------
# NPZ reader
# --------------------------------------------------------------------------------------------

class _Member:
    __slots__ = ("name", "key", "flags", "method", "crc", "csize", "usize", "offset", "start", "index")

    def __init__(self, name: str, flags: int, method: int, crc: int, csize: int, usize: int, offset: int) -> None:
        self.name, self.flags, self.method, self.crc = name, flags, method, crc
        self.csize, self.usize, self.offset = csize, usize, offset
        self.key = name[:-4]
        self.start = -1
        self.index: list[tuple[int, int]] = []


def _index_values(extra: bytes, where: str) -> list[tuple[int, int]]:
    """tmd_nb's chunk index from a central directory extra field (empty if there is none)."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == _INDEX_EXTRA:
            body = extra[pos + 4:pos + 4 + size]
            if size % 16 or len(body) != size:
                raise FormatError(f"{where} has a malformed tmd_nb chunk index")
            flat = struct.unpack(f"<{size // 8}Q", body)
            return list(zip(flat[::2], flat[1::2]))
        pos += 4 + size
    return []


def _zip64_values(extra: bytes, wanted: list[bool], where: str) -> list[int]:
    """Values of a Zip64 extra field, for each 32-bit field that held the 0xFFFFFFFF sentinel."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4:pos + 4 + size]
        if len(body) != size:
            raise FormatError(f"{where} has a truncated extra field")
        if tag == _ZIP64_EXTRA:
            n = sum(wanted)
            if size < 8 * n:
                raise FormatError(f"{where} has a Zip64 extra field too short for its sizes")
            return list(struct.unpack_from(f"<{n}Q", body))
        pos += 4 + size
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
        raise FormatError(f"{where}: its central directory ({cd_size} bytes at {cd_offset}) does not end where "
                          f"the end record is ({end_of_cd}); truncated or padded?")
    if count * _CENTRAL.size > cd_size:
        raise FormatError(f"{where} claims {count} members in a central directory of {cd_size} bytes")
    cd = _read_exact(f, cd_offset, cd_size, where, "the central directory")
    members: list[_Member] = []
    pos = 0
    for i in range(count):
        if pos + _CENTRAL.size > len(cd):
            raise FormatError(f"{where} has a central directory shorter than its {count} entries")
        (sig, _, _, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, disk_start, _, _,
         offset) = _CENTRAL.unpack_from(cd, pos)
        if sig != _SIG_CENTRAL:
            raise FormatError(f"{where} has a corrupt central directory (entry {i})")
        raw = cd[pos + 46:pos + 46 + nlen]
        extra = cd[pos + 46 + nlen:pos + 46 + nlen + xlen]
        pos += 46 + nlen + xlen + clen
        if pos > len(cd):
            raise FormatError(f"{where} has a central directory entry running past its end")
        try:
            name = raw.decode("utf-8") if flags & _FLAG_UTF8 else raw.decode("cp437")
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
        members[-1].index = _index_values(extra, member)
    if pos != len(cd):
        raise FormatError(f"{where} has {len(cd) - pos} stray bytes in its central directory")
    return members, cd_offset


def _check_member(f: BinaryIO, m: _Member, cd_offset: int, where: str) -> None:
    """Refuse what cannot be read safely, compare the local header with the central directory."""
    if not m.name.endswith(".npy") or len(m.name) <= 4:
        raise FormatError(f"{where} is not an NPY array (only .npy members are read)")
    if m.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION | _FLAG_MASKED_HEADERS):
        raise FormatError(f"{where} is encrypted")
    if m.method not in (_STORED, _DEFLATED):
        label = _METHOD_NAMES.get(m.method, "unknown")
        raise FormatError(f"{where} uses unsupported compression method {m.method} ({label}); "
                          "only stored and deflate members are read")
    if m.offset + _LOCAL.size > cd_offset:
        raise FormatError(f"{where} has a local header offset outside the archive data")
    head = _read_exact(f, m.offset, _LOCAL.size, where, "the local header")
    sig, _, flags, method, _, _, crc, csize, usize, nlen, xlen = _LOCAL.unpack(head)
    if sig != _SIG_LOCAL:
        raise FormatError(f"{where}: no local header where the central directory says it is")
    name_extra = _read_exact(f, m.offset + _LOCAL.size, nlen + xlen, where, "the local header")
    raw_name = name_extra[:nlen]
    try:
        name = raw_name.decode("utf-8") if flags & _FLAG_UTF8 else raw_name.decode("cp437")
    except UnicodeDecodeError:
        name = None
    if name != m.name:
        raise FormatError(f"{where}: the local header names it {raw_name!r}, unlike the central directory")
    if method != m.method or (flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION)) != (
            m.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION)):
        raise FormatError(f"{where}: the local header disagrees with the central directory on method or flags")
    if not flags & _FLAG_DESCRIPTOR:
        wanted = [usize == 0xFFFFFFFF, csize == 0xFFFFFFFF]
        if any(wanted):
            values = iter(_zip64_values(name_extra[nlen:], [True, True], where))  # local Zip64: both sizes
            usize, csize = next(values), next(values)
        if (crc, csize, usize) != (m.crc, m.csize, m.usize):
            raise FormatError(f"{where}: the local header (CRC {crc:#010x}, {csize} stored, {usize} bytes) disagrees "
                              f"with the central directory (CRC {m.crc:#010x}, {m.csize} stored, {m.usize} bytes)")
    m.start = m.offset + _LOCAL.size + nlen + xlen
    if m.start + m.csize > cd_offset:
        raise FormatError(f"{where} claims {m.csize} stored bytes, more than the archive holds before its directory")
    limit = m.csize if m.method == _STORED else m.csize * MAX_DEFLATE_RATIO + 1024
    if m.usize > limit or (m.method == _STORED and m.usize != m.csize):
        raise FormatError(f"{where} claims {m.usize} bytes from {m.csize} stored bytes")


class _MemberStream:
    """The uncompressed bytes of one member, produced on demand, bounded by its declared sizes."""

    def __init__(self, f: BinaryIO, m: _Member, where: str) -> None:
        self.f, self.m, self.where = f, m, where
        self.left_in = m.csize  # compressed bytes not yet read from the file
        self.left_out = m.usize  # uncompressed bytes not yet produced
        self.crc = 0
        self.tail = b""
        f.seek(m.start)
        self.d: Any = None
        if m.method == _DEFLATED:
            mod = _isal_zlib if _isal_zlib is not None else zlib
            self.d = mod.decompressobj(-15)

    def _feed(self) -> bytes:
        data = self.tail
        if not data and self.left_in:
            data = self.f.read(min(self.left_in, INFLATE_PIECE))
            if not data:
                raise FormatError(f"{self.where} is truncated: its compressed data is cut off")
            self.left_in -= len(data)
        return data

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes (``n`` <= what is left), for the header."""
        out = bytearray()
        while len(out) < n:
            piece = self._produce(n - len(out))
            out += piece
        return bytes(out)

    def readinto(self, buf: memoryview, progress: Callable[[int], None]) -> None:
        """Fill ``buf`` (exactly the rest of the member's data), calling ``progress(n)`` on the way."""
        pos = 0
        total = len(buf)
        if self.d is None:
            while pos < total:
                n = self.f.readinto(buf[pos:pos + CHUNK])
                if not n:
                    raise FormatError(f"{self.where} is truncated: its data is cut off")
                self.crc = _crc32(buf[pos:pos + n], self.crc)
                self.left_in -= n
                self.left_out -= n
                pos += n
                progress(n)
            return
        while pos < total:
            piece = self._produce(min(INFLATE_PIECE, total - pos))
            n = len(piece)
            buf[pos:pos + n] = piece
            pos += n
            progress(n)

    def _produce(self, n: int) -> bytes:
        """Between 1 and ``n`` more bytes, with CRC accounting."""
        if n > self.left_out:
            raise FormatError(f"{self.where} holds fewer bytes than its NPY header needs")
        if self.d is None:
            data = self.f.read(n)
            if not data:
                raise FormatError(f"{self.where} is truncated: its data is cut off")
            self.left_in -= len(data)
        else:
            data_in = self._feed()
            data = self.d.decompress(data_in, n)
            self.tail = self.d.unconsumed_tail
            if not data:
                if self.d.eof:
                    raise FormatError(f"{self.where}: its deflate stream ends after {self.m.usize - self.left_out} "
                                      f"of {self.m.usize} bytes")
                if not data_in:
                    raise FormatError(f"{self.where} is truncated: its deflate stream is cut off")
                return b""
        self.left_out -= len(data)
        self.crc = _crc32(data, self.crc)
        return data

    def finish(self) -> None:
        """Check that the stream ends exactly here and that the CRC matches."""
        if self.d is not None:
            while not self.d.eof:
                data_in = self._feed()
                extra = self.d.decompress(data_in, 1)
                self.tail = self.d.unconsumed_tail
                if extra:
                    raise FormatError(f"{self.where} holds more data than its sizes say")
                if not data_in and not self.d.eof:
                    raise FormatError(f"{self.where} is truncated: its deflate stream does not end")
            left = self.left_in + len(self.tail) + len(self.d.unused_data)
            if left:
                raise FormatError(f"{self.where} has {left} bytes after the end of its deflate stream")
        elif self.left_in:
            raise FormatError(f"{self.where} has bytes after the array data")
        if self.crc != self.m.crc:
            raise FormatError(f"{self.where} is corrupt: CRC-32 {self.crc:#010x} does not match the stored "
                              f"{self.m.crc:#010x}")


def read_npz(path: str | os.PathLike[str], *, progress: Progress | None = None,
             threads: int | None = None) -> dict[str, np.ndarray]:
    """Read every ``.npy`` member of a zip archive, in archive order, keyed by name without ``.npy``.

    Deflated members are inflated (ISA-L where installed) straight into the preallocated arrays;
    the members tmd_nb wrote carry an index of restart points in their deflate stream, and are
    inflated on ``threads`` threads (default: every available core). ``progress(done_bytes,
    total_bytes)`` counts uncompressed member bytes.
    """
    where = _describe(path)
    workers = _threads(threads)
    with _open(path, where) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            members, cd_offset = _central_directory(f, size, where)  # type: ignore[arg-type]
        except FormatError:
            raise
        except _DECODE_ERRORS as exc:
            raise FormatError(f"{where} is not a readable NPZ (zip) archive: {exc}") from None
        seen: set[str] = set()
        for m in members:
            if m.name in seen:
                raise FormatError(f"{where} has duplicate member names ({m.name!r})")
            seen.add(m.name)
        for m in members:
            try:
                _check_member(f, m, cd_offset, f"{where} member {m.name!r}")  # type: ignore[arg-type]
            except FormatError:
                raise
            except _DECODE_ERRORS as exc:
                raise FormatError(f"{where} member {m.name!r} is corrupt: {exc}") from None
        ordered = sorted(members, key=lambda m: m.offset)
        for a, b in zip(ordered, ordered[1:]):
            if a.start + a.csize > b.offset:
                raise FormatError(f"{where}: members {a.name!r} and {b.name!r} overlap")
        total = sum(m.usize for m in members)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        out: dict[str, np.ndarray] = {}
        for m in members:
            member = f"{where} member {m.name!r}"
            try:
                out[m.key] = _read_member(f, m, member, advance, workers)  # type: ignore[arg-type]
            except FormatError:
                raise
            except _DECODE_ERRORS as exc:
                raise FormatError(f"{member} is corrupt: {exc}") from None
        if progress is not None and total == 0:
            progress(0, 0)
        return out


def _read_member(f: BinaryIO, m: _Member, where: str, advance: Callable[[int], None], threads: int) -> np.ndarray:
    stream = _MemberStream(f, m, where)
    prefix_len = min(m.usize, 12)
    head = stream.read(prefix_len)
    if not head.startswith(NPY_MAGIC) or len(head) < 10:
        raise FormatError(f"{where} is not an NPY array (bad magic bytes {head[:8]!r})")
    if head[6:8] == b"\x01\x00":
        hlen = 10 + struct.unpack_from("<H", head, 8)[0]
    else:
        hlen = 12 + (struct.unpack_from("<I", head, 8)[0] if len(head) >= 12 else 0)
    if hlen > MAX_HEADER_SIZE + 12:
        raise FormatError(f"{where} has an NPY header of {hlen} bytes, more than the {MAX_HEADER_SIZE} allowed")
    if hlen > m.usize:
        raise FormatError(f"{where} is shorter than its own NPY header")
    head += stream.read(hlen - len(head))
    dtype, shape, fortran, offset = _parse_header(io.BytesIO(head), where)
    nbytes = _nbytes(dtype, shape)
    if offset + nbytes != m.usize:
        raise FormatError(f"{where}: header claims {nbytes} data bytes but the archive stores {m.usize - offset}")
    if offset != len(head):
        raise FormatError(f"{where} has a malformed NPY header")
    advance(len(head))
    array = _empty(dtype, shape, fortran, where)
    buf = _bytes_of(array)
    if (m.index and m.method == _DEFLATED and threads > 1 and hasattr(os, "pread")
            and hasattr(_isal_zlib, "crc32_combine")):  # isal installed, and recent enough
        _inflate_parallel(f, m, head, buf, where, advance, threads)
    else:
        stream.readinto(buf, advance)
        stream.finish()
    return array


_SYNC_MARK = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with
_PROBE = b"\x03\x00"  # an empty final block: ends the stream only if it comes where a block may start


def _inflate_parallel(f: BinaryIO, m: _Member, head: bytes, buf: memoryview, where: str,
                      advance: Callable[[int], None], threads: int) -> None:
    """Inflate the pieces between the restart points of tmd_nb's chunk index on several threads.

    Each piece is inflated from scratch; one that refers to data before its start fails to
    inflate. A piece must end with a sync-flush mark, and an empty final block appended to it must
    end the stream exactly: then a sequential inflater is at the same block boundary there, so the
    result is exactly what any other reader of the archive gets (and the CRC is checked too).
    """
    hlen = len(head)
    bounds = [(0, 0), *m.index, (m.csize, m.usize)]
    bad = f"{where} has a malformed tmd_nb chunk index"
    for (c0, u0), (c1, u1) in zip(bounds, bounds[1:]):
        if not (c0 < c1 and u0 < u1) or u1 - u0 > (c1 - c0) * MAX_DEFLATE_RATIO + 1024:
            raise FormatError(bad)
    if bounds[1][1] < hlen:
        raise FormatError(bad)
    fd = f.fileno()

    def piece(i: int) -> tuple[int, int]:
        (c0, u0), (c1, u1) = bounds[i], bounds[i + 1]
        last = i == len(bounds) - 2
        if not last and os.pread(fd, 4, m.start + c1 - 4) != _SYNC_MARK:
            raise FormatError(f"{bad}: no flush point at compressed offset {c1}")
        d = _isal_zlib.decompressobj(-15)
        cpos, pos, crc, tail = c0, u0, 0, b""
        while True:
            if not tail and cpos < c1:
                n = min(INFLATE_PIECE, c1 - cpos)
                tail = os.pread(fd, n, m.start + cpos)
                if len(tail) != n:
                    raise FormatError(f"{where} is truncated: its compressed data is cut off")
                cpos += n
                if cpos == c1 and not last:
                    tail += _PROBE
            out = d.decompress(tail, INFLATE_PIECE)
            tail = d.unconsumed_tail
            if out:
                end = pos + len(out)
                if end > u1:
                    raise FormatError(f"{bad}: a piece inflates to more than it says")
                if pos < hlen:
                    k = min(hlen - pos, len(out))
                    if out[:k] != head[pos:pos + k]:
                        raise FormatError(f"{bad}: it disagrees with the stream")
                    buf[0:len(out) - k] = out[k:]
                else:
                    buf[pos - hlen:end - hlen] = out
                crc = _isal_zlib.crc32(out, crc)
                pos = end
            elif d.eof or cpos >= c1:
                break
            if d.eof:
                break
        if pos != u1 or not d.eof or d.unused_data or tail or cpos != c1:
            raise FormatError(f"{bad}: a piece does not inflate to exactly its {u1 - u0} bytes")
        return crc, u1 - u0

    crc: int | None = None
    reported = hlen  # the header was reported already

    def collect(future: Future[tuple[int, int]]) -> None:
        nonlocal crc, reported
        part_crc, n = future.result()
        crc = part_crc if crc is None else _isal_zlib.crc32_combine(crc, part_crc, n)
        advance(n - reported)
        reported = 0

    pending: collections.deque[Future[tuple[int, int]]] = collections.deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tmd_nb-inflate") as pool:
        try:
            for i in range(len(bounds) - 1):
                pending.append(pool.submit(piece, i))
                if len(pending) > threads:
                    collect(pending.popleft())
            while pending:
                collect(pending.popleft())
        finally:
            for future in pending:
                future.cancel()
    if crc != m.crc:
        raise FormatError(f"{where} is corrupt: CRC-32 {crc:#010x} does not match the stored {m.crc:#010x}")
