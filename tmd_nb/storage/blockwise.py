"""Several passes over a large map, fused a block at a time and shared between the cores.

Checking a height map on save or load takes a handful of cheap operations over every point (a
CRC-32, a unit conversion, a comparison); done one whole-map pass after another, each streams
the map through memory again and the sum costs several times reading the file. Here the map is
cut into blocks that fit in a core's cache, every operation runs on a block while it is there,
and the blocks are shared among threads (numpy's ufuncs and the CRC release the GIL), so that
the whole costs about one pass. Small maps run in the calling thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from .libraries import crc32_combine

__all__ = ["BLOCK_BYTES", "combine_crcs", "map_blocks", "scratch"]

T = TypeVar("T")

#: Bytes of the widest array a block covers: with the arrays an operation reads and writes, a
#: block stays within a core's cache (2-4 MiB of L2, or a large L3, on today's machines); fewer,
#: larger blocks cost fewer hand-overs between threads.
BLOCK_BYTES = 1 << 21

_pool: ThreadPoolExecutor | None = None
#: Held while the pool is made: threads mapping blocks at once for the first time make one pool.
_making = threading.Lock()
#: Set in the pool's threads: a job that maps blocks itself runs them in its own thread, since
#: waiting there for the pool's other threads could wait forever (all of them waiting likewise).
_inside = threading.local()


def _mark_inside() -> None:
    _inside.active = True


def scratch(nbytes: int) -> np.ndarray:
    """``nbytes`` of a buffer of this thread's own, kept between calls so that a block read into it
    is in the cache and costs no fresh pages; valid until the same thread's next call."""
    buf = getattr(_inside, "scratch", None)
    if buf is None or buf.size < nbytes:
        buf = _inside.scratch = np.empty(max(nbytes, BLOCK_BYTES), dtype=np.uint8)
    return buf[:nbytes]


def _forget_pool() -> None:
    """In a forked child the pool's threads are gone: make a new pool when one is needed (with a
    new lock: a thread of the parent may have held it at the fork, and is gone too)."""
    global _pool, _making
    _pool = None
    _making = threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def map_blocks(points: int, itemsize: int, job: Callable[[int, int], T]) -> list[T]:
    """``[job(start, stop) for each block]`` over ``range(points)``, in order, on every core.

    ``itemsize`` is the widest item size in bytes among the arrays ``job`` touches, so that a
    block of ``BLOCK_BYTES`` holds it. ``job`` must touch only its own block of any output.
    The calling thread takes blocks too, beside the pool's threads, each taking the next block
    not yet taken: nothing waits for a thread to wake up before the work starts (on a virtual
    machine a sleeping thread may take a good part of a millisecond to), and the last block ends
    the call without a hand-over. A helper the pool has not started by then (its threads busy
    with other calls' blocks) is dropped, not waited for; at interpreter exit, when executors
    take no more work, the calling thread takes every block. After a job raises, no further
    block is started; the first error raised is raised.
    """
    step = max(1, BLOCK_BYTES // max(1, itemsize))
    starts = range(0, points, step)
    if len(starts) < 2 or _threads() < 2 or getattr(_inside, "active", False):
        return [job(s, min(s + step, points)) for s in starts]
    pool = _pool if _pool is not None else _make_pool()
    results: list[Any] = [None] * len(starts)
    order = iter(range(len(starts)))  # shared: next() takes one index at a time (the GIL orders it)
    stop = threading.Event()
    errors: list[BaseException] = []  # in the order raised

    def work() -> None:
        try:
            while not stop.is_set():  # checked before taking a block: a block taken is done
                i = next(order, None)
                if i is None:
                    return
                results[i] = job(starts[i], min(starts[i] + step, points))
        except BaseException as error:
            errors.append(error)
            stop.set()

    helpers = []
    for _ in range(min(_threads(), len(starts)) - 1):
        try:
            helpers.append(pool.submit(work))
        except RuntimeError:  # the interpreter is exiting (an atexit handler): this thread does every block
            break
    _inside.active = True  # a job mapping blocks itself runs them in this thread, as in the pool's
    try:
        work()
    finally:
        _inside.active = False
        stop.set()  # every block is taken, or this thread was interrupted: none starts any more
        for helper in helpers:
            # A helper not started yet may be queued behind another call's block, which may even
            # wait for this call: it is dropped. One started ends after at most its current block.
            if not helper.cancel():
                helper.result()
    if errors:
        error = errors[0]
        errors.clear()
        raise error
    return results


def _make_pool() -> ThreadPoolExecutor:
    global _pool
    with _making:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max_workers=_threads() - 1, thread_name_prefix="tmd_nb-blocks", initializer=_mark_inside
            )
        return _pool


def combine_crcs(parts: list[tuple[int, int]], crc: int = 0) -> int:
    """The CRC-32 of consecutive pieces from ``(crc32 of the piece, its length in bytes)``, after ``crc``."""
    for part, length in parts:
        crc = crc32_combine(crc, part, length)
    return crc
