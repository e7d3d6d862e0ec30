"""Deflate and inflate the members of an NPZ archive: ISA-L, libdeflate or zlib, on every core.

This is the one place the compression levels are documented; the docstrings of
:func:`tmd_nb.export_to_npz`, :func:`tmd_nb.save`, ``%tmd_export --level`` and the export panel
refer here. Every level writes a standard NPZ that plain ``numpy.load`` reads.

The ladder (named levels, ``level="fastest"`` etc.)
    ``"fastest"`` (also ``None``, the default, and ``2``)
        ISA-L level 2 on every core. Several times faster than ``numpy.savez_compressed``; on
        quantised heights (the real scans) the file is 3.5-6% larger than numpy's, on
        full-precision floats the same size.
    ``"balanced"``
        Files within 1% of numpy's (measured -0.6% to +0.6% on the real scans and quantised
        heights) at several times its speed: libdeflate level 2 for the last part of each member
        (a whole deflate stream of its own, from scratch: libdeflate can only make whole streams),
        zlib level 6 for the part before it, in chunks on the other cores, primed with the 32 KiB
        before each (as pigz does). The split is chosen so that both finish together
        (:data:`SPLIT_SPEED`), with at most :data:`FINAL_MAX` bytes for libdeflate, whose output
        is held in memory whole; members under :data:`SPLIT_MIN` are libdeflate's alone.
        libdeflate's level 1 is faster still, but up to 2.3% larger than zlib's on some height maps.
    ``"smallest"``
        Files smaller than numpy's (measured -0.5% to -4.3% on the real scans): libdeflate level
        10 (its near-optimal parser; level 12 is slower for at most 0.4% less) for the last part,
        zlib level 9 for the rest, split the same way. About as fast as numpy on 2 cores.

    Without the ``deflate`` package (libdeflate), ``"balanced"`` is ``6`` and ``"smallest"`` is
    ``9`` below: the file is no larger than numpy's either way, only slower to make.

Integer levels (as in zlib)
    ``0``
        No compression: the members are stored (like ``compress=False``). ISA-L's own level 0 uses
        static Huffman codes only and grows float data by 3-20%.
    ``1``-``3``
        ISA-L's levels (1 fastest, 2 its usual balance and the best on height maps, 3 its most
        thorough). Without ``isal`` installed, zlib's fast levels 1-3 stand in: the file is of the
        same kind, only slower to make.
    ``4``-``9``
        zlib's own levels, for when size matters more than time; ``6`` (what
        ``numpy.savez_compressed`` uses) and up give a file no larger than
        ``numpy.savez_compressed``'s.

Parallel deflate
    A member's bytes (NPY header and array data) are cut into chunks of :data:`DEFLATE_CHUNK`
    bytes, compressed on several threads (by default every available core, at most
    :data:`MAX_THREADS`) and written in order. Every chunk but
    the last ends with a sync flush (an empty stored block, ``00 00 FF FF``), so that all of them
    join into one standard raw deflate stream that any inflater reads. At levels 1-3 each chunk is
    compressed from scratch, so every chunk boundary is a point where the stream restarts with no
    reference to earlier data: the (compressed, uncompressed) offsets of those points are the
    member's chunk index (at most :data:`MAX_INDEX` of them, evenly thinned), which
    :mod:`tmd_nb.formats.archive` stores in an extra field. At levels 4-9 each chunk is primed with the 32 KiB
    before it (as pigz does), which costs (almost) no compression but leaves no restart points.
    At ``"balanced"`` and ``"smallest"`` the libdeflate part is compressed first (it is the
    longest job) and written last; it starts from scratch, so its start is the one restart point.

Inflate
    A member without a chunk index (numpy's files, and anything another tool wrote) is one
    deflate stream that only a sequential inflater reads: given libdeflate, its compressed bytes
    are read whole and inflated in one call into the buffer the array is made over (memory: the
    array plus the compressed member); otherwise ISA-L (or zlib) inflates it piece by piece
    straight into the result. A member with a chunk index, given more than one thread and an ISA-L
    with ``crc32_combine``, is inflated piece by piece on several threads. A piece must end with a
    sync-flush mark and end the stream exactly when an empty final block follows it, so the
    parallel result is exactly what a sequential inflater produces. The CRC-32 is checked either
    way (the pieces' CRCs combined), the stream must end exactly at the end of the member, and no
    member or piece may claim to inflate to more than :data:`MAX_DEFLATE_RATIO` times its
    compressed size (plus 1 KiB).
"""

from __future__ import annotations

import collections
import ctypes
import io
import itertools
import math
import mmap
import os
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any, BinaryIO, Protocol

import numpy as np

from ..errors import FormatError
from ..heightmap import is_dask_array
from . import _io
from ._io import Reporter, WriteBehind
from .npy import data_pieces

_isal_zlib: ModuleType | None
try:  # ISA-L: the same deflate format, several times faster. A declared dependency, but optional here.
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised by monkeypatching _isal_zlib to None
    _isal_zlib = None

_libdeflate: ModuleType | None
try:  # libdeflate: whole streams only, but closer to zlib's sizes at several times its speed. Optional here.
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - exercised by monkeypatching _libdeflate to None
    _libdeflate = None

__all__ = ["DEFAULT_LEVEL", "LEVEL_NAMES", "MAX_THREADS", "Level", "level_problem"]

# The fast default: ISA-L level 2 (see the top of this module for what every level means).
DEFAULT_LEVEL = 2
#: The named levels of the ladder, fastest first (see the top of this module).
LEVEL_NAMES = ("fastest", "balanced", "smallest")
#: What ``level`` may be wherever it is accepted.
Level = int | str | None
# Per named level: the integer level standing in for its flushable part (and for all of it without
# libdeflate), and the libdeflate level of its last part (None: none).
_NAMED: dict[str, tuple[int, int | None]] = {"fastest": (2, None), "balanced": (6, 2), "smallest": (9, 10)}
#: libdeflate's speed at its level over zlib's at the level standing in for the rest, per core, on
#: quantised float32 heights (this module's benchmark machine): the share of a member given to
#: libdeflate is chosen so that one thread running it ends with the others running zlib.
SPLIT_SPEED = {2: 2.5, 10: 0.8}
# Members from this size on are split between libdeflate and zlib on several threads; smaller ones are
# libdeflate's alone: on a 0.6 MB scan the restart where libdeflate's stream begins cost 1.2-1.4% in size.
SPLIT_MIN = 1 << 21
# At most this many bytes go to libdeflate, which holds its whole input's compressed output at once:
# a save of a larger member adds no more than about this much memory; the rest is zlib's.
FINAL_MAX = 1 << 26
MAX_THREADS = 8
# Unit of parallel compression: each chunk becomes an independent, byte-aligned run of deflate
# blocks. Small enough to bound memory (a few chunks are in flight), large enough that the
# boundaries cost nothing measurable in size.
DEFLATE_CHUNK = 1 << 22
# Inflate in pieces of this many output bytes (they are copied into the result, cache-warm).
INFLATE_PIECE = 1 << 21
# Compressed bytes read to inflate a member's NPY header (which may yet be inflated again, whole).
HEADER_FEED = 1 << 14
# Deflate cannot expand data by more than about 1032:1; anything claiming more is lying.
MAX_DEFLATE_RATIO = 1100
# Restart points kept per member; any subset of them is still a valid index.
MAX_INDEX = 256
_WINDOW = 1 << 15
_SYNC_MARK = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with
_PROBE = b"\x03\x00"  # an empty final block: ends the stream only if it comes where a block may start

# What inflating a damaged stream can raise (besides ValueError and the like).
INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error,)
if _isal_zlib is not None:
    INFLATE_ERRORS += (_isal_zlib.error,)


class _MemberData(Protocol):
    """Where a member's compressed bytes lie and what they inflate to (from the zip directory)."""

    start: int  # file offset of the member's data
    csize: int
    usize: int
    crc: int
    index: list[tuple[int, int]]  # restart points: (compressed, uncompressed) offsets

    @property
    def deflated(self) -> bool: ...


def thread_count(threads: int | None) -> int:
    if threads is not None:
        if type(threads) is not int or threads < 1:
            raise ValueError(f"threads must be a positive int or None, not {threads!r}")
        return threads
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


def crc32_of(data: Any, crc: int = 0) -> int:
    return (_isal_zlib.crc32 if _isal_zlib is not None else zlib.crc32)(data, crc)


_CRC_POLY = 0xEDB88320  # CRC-32's polynomial, bit-reversed


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo CRC-32's polynomial (zlib's multmodp: bit-reversed, x^0 in the top bit)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial, for k = 0..31
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc1`` of ``a``, ``crc2`` of ``b`` and ``len(b)`` (zlib's algorithm).

    ISA-L's when it has one; Python's zlib module has none, and this is a few microseconds.
    """
    if _isal_zlib is not None and hasattr(_isal_zlib, "crc32_combine"):
        return int(_isal_zlib.crc32_combine(crc1, crc2, len2))
    p, k, n = 1 << 31, 3, len2  # x^(8 * len2): the shift of crc1 past len2 bytes
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


def inflate_bound(csize: int) -> int:
    """The most bytes ``csize`` bytes of deflate stream can honestly inflate to."""
    return csize * MAX_DEFLATE_RATIO + 1024


# --------------------------------------------------------------------------------------------
# Deflate, in parallel chunks
# --------------------------------------------------------------------------------------------


def level_problem(level: object) -> str | None:
    """Why ``level`` is not a compression level, or None if it is one (for ValueError and UsageError alike)."""
    if level is None or (isinstance(level, str) and level in LEVEL_NAMES):
        return None
    if type(level) is int and 0 <= level <= 9:
        return None
    names = ", ".join(repr(n) for n in LEVEL_NAMES)
    return f"compression level must be {names}, an int from 0 to 9 or None, not {level!r}"


class Codec:
    """What a ``level`` means: which library, which of its levels, and whether chunks are primed.

    ``final`` is the libdeflate level of the member's last part, or None: then the flushable
    codec (ISA-L or zlib, ``module`` at ``lib_level``) compresses all of it.
    """

    def __init__(self, level: Level) -> None:
        problem = level_problem(level)
        if problem is not None:
            raise ValueError(problem)
        self.name: str | None = None
        self.final: int | None = None
        if level is None:
            level = DEFAULT_LEVEL
        elif isinstance(level, str):
            self.name = level
            level, self.final = _NAMED[level]
            if _libdeflate is None:
                self.final = None
        assert isinstance(level, int)
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

    def final_bytes(self, array: np.ndarray, workers: int, parallel: bool) -> int:
        """How many of the array's last bytes libdeflate compresses (a contiguous array's only)."""
        if self.final is None or not array.nbytes:
            return 0
        if is_dask_array(array):  # 2-D ones only: their last rows are computed apart
            if array.ndim != 2:
                return 0
        elif not (array.flags.c_contiguous or array.flags.f_contiguous):
            return 0
        if not parallel or workers < 2 or array.nbytes < SPLIT_MIN:
            return min(array.nbytes, FINAL_MAX)
        speed = SPLIT_SPEED[self.final]
        return min(array.nbytes, FINAL_MAX, round(array.nbytes * speed / (workers - 1 + speed)))

    def compress(self, pieces: list[memoryview], zdict: bytes | None, final: bool) -> list[bytes]:
        mod = self.module
        if mod is zlib:
            if zdict:
                c = zlib.compressobj(self.lib_level, zlib.DEFLATED, -15, 9, zdict=zdict)
            else:
                c = zlib.compressobj(self.lib_level, zlib.DEFLATED, -15, 9)
        else:
            c = mod.compressobj(self.lib_level, mod.DEFLATED, -15)
        out = [c.compress(p) for p in pieces]
        out.append(c.flush(mod.Z_FINISH if final else mod.Z_SYNC_FLUSH))
        return out  # written piece by piece: joining would copy every compressed byte once more

    def compress_final(self, data: memoryview) -> list[bytes]:
        """The member's last part as one whole deflate stream, from scratch (libdeflate)."""
        assert _libdeflate is not None and self.final is not None
        return [_libdeflate.deflate_compress(data, self.final)]


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


def _jobs(header: bytes, array: np.ndarray, limit: int, last: bool) -> Iterator[tuple[list[memoryview], int, bool]]:
    """Chunks of the member's bytes up to array byte ``limit``: (pieces, array bytes in them, is it
    the last chunk of the stream). ``last``: whether the stream ends with them."""
    pending: list[memoryview] = [memoryview(header)]
    pending_data = 0
    done = 0
    for piece in data_pieces(array, DEFLATE_CHUNK) if limit else ():
        if done + len(piece) > limit:
            piece = piece[: limit - done]
        if pending_data:
            yield pending, pending_data, False
            pending, pending_data = [], 0
        if piece:
            pending.append(piece)
            pending_data += len(piece)
            done += len(piece)
        if done >= limit:
            break
    yield pending, pending_data, last


def _final_view(array: np.ndarray, n: int) -> memoryview:
    """The last ``n`` bytes of a contiguous array (or 2-D Dask array), in the order its NPY header promises."""
    if is_dask_array(array):  # C order: the last rows, computed (at most FINAL_MAX bytes and a row)
        row = array.shape[1] * array.dtype.itemsize
        rows = -(-n // row)
        lazy: Any = array
        array = np.ascontiguousarray(lazy[lazy.shape[0] - rows :].compute())
    flat = array.reshape(-1) if array.flags.c_contiguous else array.T.reshape(-1)
    raw = flat.view(np.uint8).data
    return raw[len(raw) - n :]


class Deflater:
    """Deflates the members of one archive in turn, on one thread pool made for the first large member."""

    def __init__(self, codec: Codec, workers: int) -> None:
        self.codec, self.workers = codec, workers
        self.pool: ThreadPoolExecutor | None = None

    def member(
        self,
        fp: BinaryIO,
        header: bytes,
        array: np.ndarray,
        reporter: Reporter,
        behind: WriteBehind,
        index: list[tuple[int, int]],
        crcs: list[int],
    ) -> int:
        split = self.codec.final is not None and array.nbytes >= SPLIT_MIN
        if self.workers > 1 and self.pool is None and (array.nbytes > DEFLATE_CHUNK or split):
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tmd_nb-deflate")
        return _deflate_member(fp, header, array, self.codec, self.pool, self.workers, reporter, behind, index, crcs)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _deflate_member(
    fp: BinaryIO,
    header: bytes,
    array: np.ndarray,
    codec: Codec,
    pool: ThreadPoolExecutor | None,
    workers: int,
    reporter: Reporter,
    behind: WriteBehind,
    index: list[tuple[int, int]],
    crcs: list[int],
) -> int:
    """Deflate header + array bytes into ``fp`` as one stream; return the CRC-32 of the input.

    Unless chunks are primed with their predecessor's tail, every chunk boundary is a point where
    the stream restarts from scratch: they are put in ``index`` as (compressed, uncompressed)
    offsets from the start of the member, and the CRC-32 of the uncompressed bytes between them
    (one more than the points) in ``crcs``. So is the start of the libdeflate part, if any: it is
    compressed first, on a thread of its own, while the other threads compress the chunks before it.
    """
    crc = 0  # of the piece since the last restart point
    pieces_crc: list[tuple[int, int]] = []  # (CRC-32, length) of each piece between restart points
    piece_start = 0
    start = fp.tell()
    done_in = 0
    written: list[int] = []
    in_flight: collections.deque[tuple[Future[list[bytes]], int]] = collections.deque()
    previous: list[memoryview] | None = None
    final_n = codec.final_bytes(array, workers, pool is not None)
    final_data = _final_view(array, final_n) if final_n else None
    final_job: Future[list[bytes]] | None = None
    if final_data is not None and pool is not None and final_n < array.nbytes:  # split: both run at once
        final_job = pool.submit(codec.compress_final, final_data)
    width = max(1, workers - 1) if final_job is not None else workers
    restarts: list[tuple[int, int]] = []  # (chunks before it, uncompressed offset): where the stream restarts
    chunks = 0

    def emit(out: list[bytes], n: int) -> None:
        for part in out:
            fp.write(part)
        size = sum(len(part) for part in out)
        behind.wrote(size)
        reporter.add(n)
        written.append(size)

    for pieces, data_bytes, final in _jobs(header, array, array.nbytes - final_n, final_data is None):
        zdict = _tail(previous, _WINDOW) if codec.prime and previous else None
        previous = pieces
        if done_in and not codec.prime:  # where this chunk starts: the previous one ended flushed
            restarts.append((chunks, done_in))
            pieces_crc.append((crc, done_in - piece_start))
            crc, piece_start = 0, done_in
        for p in pieces:  # the main thread computes the CRC while the workers compress
            crc = crc32_of(p, crc)
        done_in += sum(len(p) for p in pieces)
        chunks += 1
        if pool is None:
            emit(codec.compress(pieces, zdict, final), data_bytes)
            continue
        in_flight.append((pool.submit(codec.compress, pieces, zdict, final), data_bytes))
        while len(in_flight) > width:
            future, n = in_flight.popleft()
            emit(future.result(), n)
    while in_flight:
        future, n = in_flight.popleft()
        emit(future.result(), n)
    if final_data is not None:
        if final_job is not None:  # the previous chunk ended flushed, and libdeflate starts from scratch
            restarts.append((chunks, done_in))
            pieces_crc.append((crc, done_in - piece_start))
            crc, piece_start = 0, done_in
        crc = crc32_of(final_data, crc)
        emit(final_job.result() if final_job is not None else codec.compress_final(final_data), final_n)
    pieces_crc.append((crc, done_in + final_n - piece_start))
    if restarts:
        ends = list(itertools.accumulate(written))
        assert fp.tell() - start == ends[-1] and len(ends) == chunks + (final_data is not None)
        points = [(ends[k - 1], u) for k, u in restarts]
        # Any subset of restart points is still valid: keep every step-th, and merge the pieces' CRCs.
        step = math.ceil(len(points) / MAX_INDEX)
        index[:] = points[step - 1 :: step]
        crcs[:] = []
        merged = 0
        for i, (part_crc, part_len) in enumerate(pieces_crc):
            merged = crc32_combine(merged, part_crc, part_len)
            if i % step == step - 1 or i == len(pieces_crc) - 1:
                crcs.append(merged)
                merged = 0
        assert len(crcs) == len(index) + 1
    whole = 0
    for part_crc, part_len in pieces_crc:
        whole = crc32_combine(whole, part_crc, part_len)
    return whole


# --------------------------------------------------------------------------------------------
# Inflate, sequentially or in parallel pieces
# --------------------------------------------------------------------------------------------


class MemberStream:
    """The uncompressed bytes of one member, produced on demand, bounded by its declared sizes."""

    def __init__(self, f: io.FileIO, m: _MemberData, where: str) -> None:
        self.f, self.m, self.where = f, m, where
        self.left_in = m.csize  # compressed bytes not yet read from the file
        self.left_out = m.usize  # uncompressed bytes not yet produced
        self.crc = 0
        self.tail = b""
        self.feed = HEADER_FEED  # compressed bytes read at a time: few for the header, more for the data
        f.seek(m.start)
        self.d: Any = None
        if m.deflated:
            mod = _isal_zlib if _isal_zlib is not None else zlib
            self.d = mod.decompressobj(-15)

    def _feed(self) -> bytes:
        data = self.tail
        if not data and self.left_in:
            data = self.f.read(min(self.left_in, self.feed))
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
        self.feed = INFLATE_PIECE
        if self.d is None:
            while pos < total:
                n = self.f.readinto(buf[pos : pos + _io.CHUNK])
                if not n:
                    raise FormatError(f"{self.where} is truncated: its data is cut off")
                self.crc = crc32_of(buf[pos : pos + n], self.crc)
                self.left_in -= n
                self.left_out -= n
                pos += n
                progress(n)
            return
        while pos < total:
            piece = self._produce(min(INFLATE_PIECE, total - pos))
            n = len(piece)
            buf[pos : pos + n] = piece
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
                    raise FormatError(
                        f"{self.where}: its deflate stream ends after {self.m.usize - self.left_out} "
                        f"of {self.m.usize} bytes"
                    )
                if not data_in:
                    raise FormatError(f"{self.where} is truncated: its deflate stream is cut off")
                return b""
        self.left_out -= len(data)
        self.crc = crc32_of(data, self.crc)
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
            raise FormatError(
                f"{self.where} is corrupt: CRC-32 {self.crc:#010x} does not match the stored {self.m.crc:#010x}"
            )


class _WholeInflater:
    """libdeflate's ``libdeflate_deflate_decompress_ex`` through ctypes, from the ``deflate`` package's own library.

    The package's Python API returns a new buffer and does not say where the stream ended; the C
    call inflates into a buffer we own and reports how many input bytes the stream took, so bytes
    after its end are refused as on the streaming path. The GIL is released during the call.
    Unavailable (None) when the library does not export the symbol (then the streaming path is used).
    """

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        self.alloc = lib.libdeflate_alloc_decompressor
        self.alloc.restype, self.alloc.argtypes = ctypes.c_void_p, []
        self.free = lib.libdeflate_free_decompressor
        self.free.restype, self.free.argtypes = None, [ctypes.c_void_p]
        self.run = lib.libdeflate_deflate_decompress_ex
        self.run.restype = ctypes.c_int
        size_p = ctypes.POINTER(ctypes.c_size_t)
        self.run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
        self.run.argtypes += [size_p, size_p]

    def __call__(self, data: np.ndarray, out: np.ndarray, where: str) -> None:
        """Inflate all of ``data`` into all of ``out`` (contiguous uint8 arrays), or raise FormatError."""
        d = self.alloc()
        if not d:  # pragma: no cover - out of memory
            raise MemoryError("libdeflate could not allocate a decompressor")
        used, made = ctypes.c_size_t(0), ctypes.c_size_t(0)
        try:
            result = self.run(
                d, data.ctypes.data, data.nbytes, out.ctypes.data, out.nbytes, ctypes.byref(used), ctypes.byref(made)
            )
        finally:
            self.free(d)
        if result == 3:  # LIBDEFLATE_INSUFFICIENT_SPACE
            raise FormatError(f"{where} holds more data than its sizes say")
        if result != 0:  # LIBDEFLATE_BAD_DATA: corrupt or cut off
            raise FormatError(f"{where} is corrupt or truncated: its deflate stream does not inflate")
        if made.value != out.nbytes:
            raise FormatError(f"{where}: its deflate stream ends after {made.value} of {out.nbytes} bytes")
        if used.value != data.nbytes:
            raise FormatError(f"{where} has {data.nbytes - used.value} bytes after the end of its deflate stream")


# libdeflate at import: known vectors
# ------------------------------------
# The ``deflate`` package's public API compresses well (``deflate_compress``), but its inflate
# neither says where the stream ended (so bytes after it could not be refused) nor releases the GIL,
# and it allocates the result itself: so the whole-member inflate calls the library inside the
# package's extension module through ctypes, with signatures declared here. pyproject.toml caps the
# package at the releases tested; and at import both directions are checked against known vectors
# (a stream zlib made, a fixed stream, a trailing byte, a short buffer, corrupt data). A release
# that fails any check is not used: named levels fall back to zlib's (see the top of this module),
# and members inflate through ISA-L or zlib, with a warning saying why.

# A fixed raw deflate stream (zlib level 9, fixed Huffman codes) and what it inflates to.
_KNOWN_STREAM = bytes.fromhex("2bc94d89cf4bb2524854c848cd4ccf2851c84d2cd051c84e2d285148ca2c5148cb2f02d17a0a2554560700")
_KNOWN_PLAIN = b"tmd_nb: a height map, kept bit for bit. " * 3
# Varied, partly compressible input (dynamic Huffman codes, short and long matches), 19 KB: a few ms.
_VECTOR = b"".join(i.to_bytes(4, "little") for i in range(2000)) + b"height map " * 1000


def _compressor_problem(lib: Any) -> str | None:
    """Why ``lib.deflate_compress`` does not make raw deflate streams zlib inflates back, or None."""
    for level in sorted({final for _, final in _NAMED.values() if final is not None}):
        try:
            out = lib.deflate_compress(_VECTOR, level)
            d = zlib.decompressobj(-15)
            back = d.decompress(bytes(out))
        except Exception as exc:
            return f"its deflate_compress at level {level} fails the known vector ({type(exc).__name__}: {exc})"
        if back != _VECTOR or not d.eof or d.unused_data:
            return f"its deflate_compress at level {level} makes a stream that does not inflate to its input"
    return None


def _inflater_problem(inflate: Callable[[np.ndarray, np.ndarray, str], None]) -> str | None:
    """Why ``inflate`` (a :class:`_WholeInflater`) does not inflate the known vectors as it should, or None."""

    def run(stream: bytes, size: int) -> bytes:
        out = np.zeros(size, dtype=np.uint8)
        inflate(np.frombuffer(stream, dtype=np.uint8).copy(), out, "known vector")
        return out.tobytes()

    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    made = c.compress(_VECTOR) + c.flush()
    checks: list[tuple[str, bytes, int, bytes | str]] = [
        ("a stream zlib made", made, len(_VECTOR), _VECTOR),
        ("a fixed stream", _KNOWN_STREAM, len(_KNOWN_PLAIN), _KNOWN_PLAIN),
        ("a stream with a byte after its end", made + b"\0", len(_VECTOR), "after the end"),
        ("a stream into a buffer one byte short", made, len(_VECTOR) - 1, "more data than its sizes say"),
        ("a stream into a buffer one byte long", made, len(_VECTOR) + 1, f"ends after {len(_VECTOR)} of"),
        ("corrupt data", b"\xff" * 64, 1000, "does not inflate"),
    ]
    for what, stream, size, expected in checks:
        try:
            got: bytes | str = run(stream, size)
        except FormatError as exc:
            got = str(exc)
        except Exception as exc:
            return f"its decompressor fails on {what} ({type(exc).__name__}: {exc})"
        if got != expected and not (isinstance(expected, str) and isinstance(got, str) and expected in got):
            return f"its decompressor gets {what} wrong"
    return None


def _checked_libdeflate(lib: Any) -> tuple[Any, _WholeInflater | None, str | None]:
    """The ``deflate`` module and the whole-member inflater, each None unless it passes its checks; and why not."""
    if lib is None:
        return None, None, None
    problem = _compressor_problem(lib)
    if problem is not None:
        return None, None, problem
    try:
        inflater: _WholeInflater | None = _WholeInflater(lib._deflate.__file__)
    except (OSError, AttributeError):  # a build that does not export libdeflate's API: streaming inflate
        return lib, None, None
    assert inflater is not None
    problem = _inflater_problem(inflater)
    return lib, (None if problem else inflater), problem


_package = _libdeflate
#: Why the installed ``deflate`` package (libdeflate) is not used, or not all of it; None when it is.
LIBDEFLATE_PROBLEM: str | None
_libdeflate, whole_inflater, LIBDEFLATE_PROBLEM = _checked_libdeflate(_package)
if LIBDEFLATE_PROBLEM is not None:
    warnings.warn(
        f"tmd_nb does not use the installed deflate package {getattr(_package, '__version__', '?')} "
        f"(libdeflate) as it is: {LIBDEFLATE_PROBLEM}; ISA-L and zlib stand in (the same files, made more slowly)",
        RuntimeWarning,
        stacklevel=2,
    )
#: Members larger than this are inflated piece by piece (with progress reports), never whole.
WHOLE_INFLATE_MAX = 1 << 31


# Results from this size on have their pages mapped on another thread while the input is read.
PREFAULT_MIN = 1 << 24


def _touch(buf: np.ndarray) -> None:
    """Write one byte of every page, so that inflating into ``buf`` takes no page faults."""
    buf[:: mmap.PAGESIZE] = 0


def inflate_whole(f: io.FileIO, m: _MemberData, where: str, threads: int) -> np.ndarray | None:
    """The member's bytes (header included) in a new uint8 array, CRC checked; None when another path is better.

    For a deflated member without a chunk index (or read on one thread), with libdeflate available:
    its compressed bytes are read whole and inflated in one call into the array returned, which
    the caller makes the result's buffer (no copy). Memory: the compressed member, then the result.
    """
    if (
        whole_inflater is None
        or _libdeflate is None
        or not m.deflated
        or m.usize > WHOLE_INFLATE_MAX
        or (m.index and threads > 1 and hasattr(_isal_zlib, "crc32_combine"))
    ):
        return None
    out = np.empty(m.usize, dtype=np.uint8)
    prefault: threading.Thread | None = None
    if threads > 1 and m.usize >= PREFAULT_MIN:  # the kernel maps the result's pages while the input is read
        prefault = threading.Thread(target=_touch, args=(out,), name="tmd_nb-prefault", daemon=True)
        prefault.start()
    try:
        data = np.empty(m.csize, dtype=np.uint8)  # not zero-filled, unlike a bytearray
        view = data.data
        f.seek(m.start)
        got = 0
        while got < m.csize:
            n = f.readinto(view[got:])
            if not n:
                raise FormatError(f"{where} is truncated: its compressed data is cut off")
            got += n
        del view
    finally:
        if prefault is not None:
            prefault.join()
    whole_inflater(data, out, where)
    del data
    crc = crc32_of(out)
    if crc != m.crc:
        raise FormatError(f"{where} is corrupt: CRC-32 {crc:#010x} does not match the stored {m.crc:#010x}")
    return out


def inflate_rest(
    f: BinaryIO,
    m: _MemberData,
    stream: MemberStream,
    head: bytes,
    buf: memoryview,
    where: str,
    advance: Callable[[int], None],
    threads: int,
) -> None:
    """Fill ``buf`` with the member's bytes after ``head`` (already read from ``stream``), CRC checked.

    On ``threads`` threads when the member carries a chunk index, sequentially otherwise.
    """
    if (
        m.index and m.deflated and threads > 1 and hasattr(os, "pread") and hasattr(_isal_zlib, "crc32_combine")
    ):  # isal installed, and recent enough
        _inflate_parallel(f, m, head, buf, where, advance, threads)
    else:
        stream.readinto(buf, advance)
        stream.finish()


def _inflate_parallel(
    f: BinaryIO, m: _MemberData, head: bytes, buf: memoryview, where: str, advance: Callable[[int], None], threads: int
) -> None:
    """Inflate the pieces between the restart points of tmd_nb's chunk index on several threads.

    Each piece is inflated from scratch; one that refers to data before its start fails to
    inflate. A piece must end with a sync-flush mark, and an empty final block appended to it must
    end the stream exactly: then a sequential inflater is at the same block boundary there, so the
    result is exactly what any other reader of the archive gets (and the CRC is checked too).
    """
    isal = _isal_zlib
    assert isal is not None  # the caller takes this path only when ISA-L is there
    hlen = len(head)
    bounds = [(0, 0), *m.index, (m.csize, m.usize)]
    bad = f"{where} has a malformed tmd_nb chunk index"
    for (c0, u0), (c1, u1) in itertools.pairwise(bounds):
        if not (c0 < c1 and u0 < u1) or u1 - u0 > inflate_bound(c1 - c0):
            raise FormatError(bad)
    if bounds[1][1] < hlen:
        raise FormatError(bad)
    fd = f.fileno()

    def piece(i: int) -> tuple[int, int]:
        (c0, u0), (c1, u1) = bounds[i], bounds[i + 1]
        last = i == len(bounds) - 2
        if not last and os.pread(fd, 4, m.start + c1 - 4) != _SYNC_MARK:
            raise FormatError(f"{bad}: no flush point at compressed offset {c1}")
        d = isal.decompressobj(-15)
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
                    if out[:k] != head[pos : pos + k]:
                        raise FormatError(f"{bad}: it disagrees with the stream")
                    buf[0 : len(out) - k] = out[k:]
                else:
                    buf[pos - hlen : end - hlen] = out
                crc = isal.crc32(out, crc)
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
        crc = part_crc if crc is None else isal.crc32_combine(crc, part_crc, n)
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
