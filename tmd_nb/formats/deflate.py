"""Deflate and inflate the members of an NPZ archive: ISA-L or zlib, on every core.

Levels (``level`` of :func:`tmd_nb.formats.archive.write_npz` and :func:`tmd_nb.export_to_npz`)
    ``None``
        :data:`DEFAULT_LEVEL`, 2: fast.
    ``0``
        No compression, as in zlib: the members are stored (like ``compress=False``). ISA-L's
        own level 0 uses static Huffman codes only and grows float data by 3-20%.
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

Inflate
    Sequentially, ISA-L where installed and zlib otherwise, straight into the result; or, for a
    member with a chunk index, given more than one thread and an ISA-L with ``crc32_combine``,
    piece by piece on several threads. A piece must end with a sync-flush mark and end the
    stream exactly when an empty final block follows it, so the parallel result is exactly what
    a sequential inflater produces. The CRC-32 is checked either way (the pieces' CRCs combined),
    and no member or piece may claim to inflate to more than :data:`MAX_DEFLATE_RATIO` times its
    compressed size (plus 1 KiB).
"""

from __future__ import annotations

import collections
import io
import itertools
import math
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from types import ModuleType
from typing import Any, BinaryIO, Protocol

import numpy as np

from ..errors import FormatError
from . import _io
from ._io import Reporter, WriteBehind
from .npy import data_pieces

_isal_zlib: ModuleType | None
try:  # ISA-L: the same deflate format, several times faster. A declared dependency, but optional here.
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised by monkeypatching _isal_zlib to None
    _isal_zlib = None

__all__ = ["DEFAULT_LEVEL", "MAX_THREADS"]

# The fast default: ISA-L level 2 (see the top of this module for what every level means).
DEFAULT_LEVEL = 2
MAX_THREADS = 8
# Unit of parallel compression: each chunk becomes an independent, byte-aligned run of deflate
# blocks. Small enough to bound memory (a few chunks are in flight), large enough that the
# boundaries cost nothing measurable in size.
DEFLATE_CHUNK = 1 << 22
# Inflate in pieces of this many output bytes (they are copied into the result, cache-warm).
INFLATE_PIECE = 1 << 21
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


def inflate_bound(csize: int) -> int:
    """The most bytes ``csize`` bytes of deflate stream can honestly inflate to."""
    return csize * MAX_DEFLATE_RATIO + 1024


# --------------------------------------------------------------------------------------------
# Deflate, in parallel chunks
# --------------------------------------------------------------------------------------------


class Codec:
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
            if zdict:
                c = zlib.compressobj(self.lib_level, zlib.DEFLATED, -15, 9, zdict=zdict)
            else:
                c = zlib.compressobj(self.lib_level, zlib.DEFLATED, -15, 9)
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
    for piece in data_pieces(array, DEFLATE_CHUNK):
        if pending_data:
            yield pending, pending_data, False
            pending, pending_data = [], 0
        pending.append(piece)
        pending_data += len(piece)
    yield pending, pending_data, True


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
    ) -> int:
        if self.workers > 1 and self.pool is None and array.nbytes > DEFLATE_CHUNK:
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tmd_nb-deflate")
        return _deflate_member(fp, header, array, self.codec, self.pool, self.workers, reporter, behind, index)

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
) -> int:
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

    def emit(out: bytes, n: int) -> None:
        fp.write(out)
        behind.wrote(len(out))
        reporter.add(n)
        written.append(len(out))

    for pieces, data_bytes, final in _jobs(header, array):
        for p in pieces:  # the main thread computes the CRC while the workers compress
            crc = crc32_of(p, crc)
        zdict = _tail(previous, _WINDOW) if codec.prime and previous else None
        previous = pieces
        if done_in and not codec.prime:  # where this chunk starts: the previous one ended flushed
            index.append((-1, done_in))  # compressed offset filled in once it is written
        done_in += sum(len(p) for p in pieces)
        if pool is None:
            emit(codec.compress(pieces, zdict, final), data_bytes)
            continue
        in_flight.append((pool.submit(codec.compress, pieces, zdict, final), data_bytes))
        while len(in_flight) > workers:
            future, n = in_flight.popleft()
            emit(future.result(), n)
    while in_flight:
        future, n = in_flight.popleft()
        emit(future.result(), n)
    if index:
        ends = list(itertools.accumulate(written))
        assert fp.tell() - start == ends[-1] and len(index) == len(ends) - 1
        index[:] = [(ends[i], u) for i, (_, u) in enumerate(index)]
        if len(index) > MAX_INDEX:  # any subset of restart points is still valid
            step = math.ceil(len(index) / MAX_INDEX)
            index[:] = index[step - 1 :: step]
    return crc


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
        f.seek(m.start)
        self.d: Any = None
        if m.deflated:
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
