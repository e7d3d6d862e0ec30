"""Inflate the members of a zip archive: whole, streamed piece by piece, or in parallel pieces.

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

The libraries (ISA-L, libdeflate, zlib) and their checks are :mod:`.libraries`; how the chunks and
their restart points are made, :mod:`.deflate`.
"""

from __future__ import annotations

import collections
import io
import itertools
import mmap
import os
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Protocol

import numpy as np

from ..errors import FormatError
from . import _io, libraries
from .libraries import crc32_of

__all__ = ["MAX_DEFLATE_RATIO", "MemberStream", "inflate_bound", "inflate_rest", "inflate_whole"]

# Inflate in pieces of this many output bytes (they are copied into the result, cache-warm).
INFLATE_PIECE = 1 << 21
# Compressed bytes read to inflate a member's NPY header (which may yet be inflated again, whole).
HEADER_FEED = 1 << 14
# Deflate cannot expand data by more than about 1032:1; anything claiming more is lying.
MAX_DEFLATE_RATIO = 1100
_SYNC_MARK = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with
_PROBE = b"\x03\x00"  # an empty final block: ends the stream only if it comes where a block may start


class _MemberData(Protocol):
    """Where a member's compressed bytes lie and what they inflate to (from the zip directory)."""

    start: int  # file offset of the member's data
    csize: int
    usize: int
    crc: int
    index: list[tuple[int, int]]  # restart points: (compressed, uncompressed) offsets

    @property
    def deflated(self) -> bool: ...


def inflate_bound(csize: int) -> int:
    """The most bytes ``csize`` bytes of deflate stream can honestly inflate to."""
    return csize * MAX_DEFLATE_RATIO + 1024


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
            mod = libraries.isal_zlib if libraries.isal_zlib is not None else zlib
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
        libraries.whole_inflater is None
        or libraries.libdeflate is None
        or not m.deflated
        or m.usize > WHOLE_INFLATE_MAX
        or (m.index and threads > 1 and hasattr(libraries.isal_zlib, "crc32_combine"))
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
    libraries.whole_inflater(data, out, where)
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
        m.index
        and m.deflated
        and threads > 1
        and hasattr(os, "pread")
        and hasattr(libraries.isal_zlib, "crc32_combine")
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
    isal = libraries.isal_zlib
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
