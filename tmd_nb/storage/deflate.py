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
    :mod:`tmd_nb.storage.archive` stores in an extra field. At levels 4-9 each chunk is primed with the 32 KiB
    before it (as pigz does), which costs (almost) no compression but leaves no restart points.
    At ``"balanced"`` and ``"smallest"`` the libdeflate part is compressed first (it is the
    longest job) and written last; it starts from scratch, so its start is the one restart point.

Inflate: :mod:`tmd_nb.storage.inflate`; the libraries and their import-time checks:
:mod:`tmd_nb.storage.libraries`.
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np

from ..heightmap import is_dask_array
from . import libraries
from ._io import Reporter, WriteBehind
from .libraries import crc32_combine, crc32_of
from .npyfile import data_pieces

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
# Restart points kept per member; any subset of them is still a valid index.
MAX_INDEX = 256
_WINDOW = 1 << 15


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
            if libraries.libdeflate is None:
                self.final = None
        assert isinstance(level, int)
        self.level = level
        # Level 0 means "stored" (write_npz never deflates with it): ISA-L's own level 0 uses
        # static Huffman codes only, and grows float data by 3-20%.
        if level <= 3 and libraries.isal_zlib is not None:
            self.module: Any = libraries.isal_zlib
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
        assert libraries.libdeflate is not None and self.final is not None
        return [libraries.libdeflate.deflate_compress(data, self.final)]


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
        observe: Callable[[memoryview], None] | None = None,
    ) -> int:
        """Deflate ``header`` + ``array`` into ``fp`` (see :func:`_deflate_member`); ``observe`` is
        called with the array's bytes in order, as their CRC-32 is computed."""
        split = self.codec.final is not None and array.nbytes >= SPLIT_MIN
        if self.workers > 1 and self.pool is None and (array.nbytes > DEFLATE_CHUNK or split):
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tmd_nb-deflate")
        return _deflate_member(
            fp, header, array, self.codec, self.pool, self.workers, reporter, behind, index, crcs, observe
        )

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
    observe: Callable[[memoryview], None] | None = None,
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
    skip = len(header)  # bytes of the header not yet passed to observe

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
            if observe is not None:  # the array's bytes only, in order: the header is skipped
                if skip >= len(p):
                    skip -= len(p)
                    continue
                observe(p[skip:])
                skip = 0
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
        if observe is not None:
            observe(final_data)
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
