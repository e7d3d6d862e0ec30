"""Attacks on the block pool every reader and writer shares (:mod:`tmd_nb.storage.blockwise`).

``map_blocks`` has the calling thread take blocks beside a pool of one thread fewer, all taking
the next block from a shared iterator. Attacked here: callers on many threads at once, a helper
queued behind another caller's busy pool thread, nesting from the calling thread and from the
pool, errors (and ``BaseException``) in either, which error is raised, the thread's "inside" mark
after an error, the pool made from several threads at once, ``fork`` while the pool is busy, a
save or load at interpreter exit, ``scratch`` buffers, edge sizes, and GWY/X3P/NPZ saves and
loads from several threads at once checked against independent readers.

Blocks are made small and the machine two cores wide, so that a small map takes many blocks and
both threads; each test has a pool of its own.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gwyfile
import numpy as np
import pytest
import x3pio

import tmd_nb
from tmd_nb.storage import blockwise

WAIT = 10  # seconds: only a broken pool waits this long


@pytest.fixture(autouse=True)
def own_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(blockwise, "BLOCK_BYTES", 64)
    monkeypatch.setattr(blockwise, "_threads", lambda: 2)
    monkeypatch.setattr(blockwise, "_pool", None)
    yield
    if blockwise._pool is not None:
        blockwise._pool.shutdown(wait=False, cancel_futures=True)


def in_pool() -> bool:
    return threading.current_thread().name.startswith("tmd_nb-blocks")


def holding_the_pool(in_block: threading.Event, release: threading.Event) -> Callable[[int, int], int]:
    """A job whose block on the pool's thread sets ``in_block`` and waits for ``release``; the
    calling thread's blocks wait until the pool's thread is held so."""

    def held(start: int, stop: int) -> int:
        if in_pool():
            in_block.set()
            release.wait(WAIT)
        else:
            in_block.wait(WAIT)
        return start

    return held


class Call(threading.Thread):
    """``fn()`` on a thread of its own; ``done`` is set when it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn, self.done = fn, threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as error:
            self.error = error
        finally:
            self.done.set()

    def outcome(self) -> Any:
        assert self.done.wait(WAIT), "the call never ended"
        if self.error is not None:
            raise self.error
        return self.result


def both_threads(job: Callable[[int, int], Any]) -> Callable[[int, int], Any]:
    """``job``, with each thread's first block waiting for the other's: both take blocks."""
    arrived = threading.Barrier(2, timeout=WAIT)
    seen: set[str] = set()
    lock = threading.Lock()

    def wrapped(start: int, stop: int) -> Any:
        with lock:
            new = threading.current_thread().name not in seen
            seen.add(threading.current_thread().name)
        if new:
            arrived.wait()
        return job(start, stop)

    return wrapped


def spans(points: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(s + step, points)) for s in range(0, points, step)]


# --- a helper queued behind a busy pool -------------------------------------------------------


def test_a_caller_does_not_wait_for_its_helper_queued_behind_another_callers_block() -> None:
    """The pool's one thread is in a block of another call that waits for this one (as a job
    loading a file on a thread of its own and waiting for it would): this call takes every block
    itself, and must not then wait for its helper, which can only start after that block."""
    pool_in_block, second_done = threading.Event(), threading.Event()
    first = Call(lambda: blockwise.map_blocks(1000, 8, holding_the_pool(pool_in_block, second_done)))
    assert pool_in_block.wait(WAIT)
    second = Call(lambda: blockwise.map_blocks(1000, 8, lambda start, stop: (start, stop)))
    finished = second.done.wait(3)
    second_done.set()  # frees the pool's block either way, so that nothing is left waiting
    assert finished, "a call waited for a helper that could never start before it returned"
    assert second.outcome() == spans(1000, 8)
    assert first.outcome() == list(range(0, 1000, 8))


# --- errors -------------------------------------------------------------------------------------


def test_the_first_error_is_raised_not_a_later_one_of_the_calling_thread() -> None:
    caller_in_block = threading.Event()

    def job(start: int, stop: int) -> int:
        if in_pool():
            caller_in_block.wait(WAIT)
            raise ZeroDivisionError("first, in the pool")
        caller_in_block.set()
        pool = blockwise._pool
        assert pool is not None
        pool.submit(lambda: None).result(timeout=WAIT)  # runs after the helper raised and ended
        raise ValueError("later, in the calling thread")

    with pytest.raises(ZeroDivisionError, match="first, in the pool"):
        blockwise.map_blocks(1000, 8, job)


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError])
@pytest.mark.parametrize("where", ["calling thread", "pool"])
def test_a_base_exception_in_a_job_is_raised_and_the_thread_maps_blocks_on_the_pool_after(
    error: type[BaseException], where: str
) -> None:
    def job(start: int, stop: int) -> int:
        if in_pool() == (where == "pool"):
            raise error("stop")
        return start

    with pytest.raises(error, match="stop"):
        blockwise.map_blocks(1000, 8, both_threads(job))
    assert not getattr(blockwise._inside, "active", False)
    names: set[str] = set()
    parts = blockwise.map_blocks(1000, 8, both_threads(lambda s, e: names.add(threading.current_thread().name) or s))
    assert parts == list(range(0, 1000, 8)) and any(name.startswith("tmd_nb-blocks") for name in names)


def test_an_error_from_a_nested_map_is_raised_and_leaves_no_thread_marked_inside() -> None:
    def inner(start: int, stop: int) -> int:
        if start == 16:
            raise LookupError(f"inner {threading.current_thread().name}")
        return start

    def outer(start: int, stop: int) -> list[int]:
        return blockwise.map_blocks(100, 8, inner)

    with pytest.raises(LookupError, match="inner"):
        blockwise.map_blocks(1000, 8, both_threads(outer))
    assert not getattr(blockwise._inside, "active", False)
    assert blockwise.map_blocks(1000, 8, both_threads(lambda s, e: s)) == list(range(0, 1000, 8))


# --- nesting and many callers -------------------------------------------------------------------


def test_maps_nested_from_the_calling_thread_and_the_pool_run_in_the_jobs_thread() -> None:
    def inner_of(name: str) -> Callable[[int, int], tuple[int, int]]:
        def inner(start: int, stop: int) -> tuple[int, int]:
            assert threading.current_thread().name == name
            return start, stop

        return inner

    def outer(start: int, stop: int) -> list[Any]:
        name = threading.current_thread().name
        # three deep
        return blockwise.map_blocks(
            50,
            8,
            lambda s, e: (s, blockwise.map_blocks(e - s, 64, inner_of(name)), name == threading.current_thread().name),
        )

    parts = blockwise.map_blocks(400, 8, both_threads(outer))
    expected = [(s, spans(min(s + 8, 50) - s, 1), True) for s in range(0, 50, 8)]
    assert parts == [expected] * 50
    assert not getattr(blockwise._inside, "active", False)


def test_many_threads_mapping_at_once_each_get_their_own_blocks() -> None:
    callers = 6
    start_all = threading.Barrier(callers, timeout=WAIT)

    def caller(k: int) -> list[tuple[int, int, int]]:
        start_all.wait()
        out = []
        for points in (0, 1, 8, 9, 777 + k, 3000):
            got = blockwise.map_blocks(points, 8, lambda s, e: (k, s, e))
            assert got == [(k, s, e) for s, e in spans(points, 8)], (k, points)
            out.extend(got)
        return out

    calls = [Call(lambda k=k: caller(k)) for k in range(callers)]
    for k, call in enumerate(calls):
        assert all(part[0] == k for part in call.outcome())


def test_a_job_on_the_pool_thread_may_wait_for_a_thread_of_its_own_that_maps_blocks() -> None:
    """A block in the pool's only thread waits for a thread it started that maps blocks: that
    thread's helper cannot start until the block ends, so the thread must not wait for it."""
    ended: list[bool] = []
    waited_in: list[int] = []

    def job(start: int, stop: int) -> int:
        if in_pool() and not ended:
            waited_in.append(start)
            inner = Call(lambda: blockwise.map_blocks(200, 8, lambda s, e: e - s))
            inners.append(inner)
            ended.append(inner.done.wait(3))  # else the pool's thread and ``inner`` wait for each other
            return sum(inner.outcome()) + start if ended[-1] else -1
        return start

    inners: list[Call] = []
    parts = blockwise.map_blocks(1000, 8, both_threads(job))
    assert inners[0].outcome() == [8] * 25  # with the block over, it ends either way
    assert ended == [True], "a thread mapping blocks waited for a helper queued behind the block waiting for it"
    assert parts == [s + 200 * (s in waited_in) for s in range(0, 1000, 8)]


# --- the pool itself --------------------------------------------------------------------------


def test_the_pool_is_made_once_when_several_threads_map_blocks_first(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[ThreadPoolExecutor] = []
    second_checking = threading.Event()
    second: list[threading.Thread] = []

    def threads() -> int:
        if second and threading.current_thread() is second[0]:
            second_checking.set()  # just before it looks for a pool
        return 2

    class Counted(ThreadPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            if len(made) == 1:
                second_checking.wait(WAIT)  # the other thread looks for a pool while this one is made
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(blockwise, "_threads", threads)
    monkeypatch.setattr(blockwise, "ThreadPoolExecutor", Counted)
    first = Call(lambda: blockwise.map_blocks(100, 8, lambda s, e: s))
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(blockwise.map_blocks(100, 8, lambda s, e: s)), daemon=True)
    second.append(t)
    t.start()
    t.join(WAIT)
    assert first.outcome() == list(range(0, 100, 8)) and result == [list(range(0, 100, 8))]
    for pool in made[1:]:
        pool.shutdown(wait=False)
    assert len(made) == 1, f"{len(made)} pools made, each with threads of its own"


def fork_and(check: Callable[[], bool]) -> int:
    """The exit status of a forked child running ``check`` (0 when it held)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            code = 0 if check() else 2
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def child_maps_on_a_pool_of_its_own() -> bool:
    names: set[str] = set()
    parts = blockwise.map_blocks(1000, 8, both_threads(lambda s, e: names.add(threading.current_thread().name) or s))
    buf = blockwise.scratch(100)
    buf[:] = 7
    return parts == list(range(0, 1000, 8)) and any(n.startswith("tmd_nb-blocks") for n in names) and buf.sum() == 700


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_child_forked_while_the_pool_is_in_a_block_maps_blocks_on_a_new_pool() -> None:
    pool_in_block, release = threading.Event(), threading.Event()
    busy = Call(lambda: blockwise.map_blocks(1000, 8, holding_the_pool(pool_in_block, release)))
    try:
        assert pool_in_block.wait(WAIT)
        assert fork_and(child_maps_on_a_pool_of_its_own) == 0
    finally:
        release.set()
    assert busy.outcome() == list(range(0, 1000, 8))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_child_forked_from_a_job_maps_blocks() -> None:
    codes: list[int] = []

    def job(start: int, stop: int) -> int:
        if start == 80:
            codes.append(fork_and(lambda: blockwise.map_blocks(100, 8, lambda s, e: s) == list(range(0, 100, 8))))
        return start

    assert blockwise.map_blocks(400, 8, both_threads(job)) == list(range(0, 400, 8))
    assert codes == [0]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_child_forked_while_another_thread_makes_the_pool_maps_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the pool's making holds in another thread at the fork, the child can make one."""
    making, forked = threading.Event(), threading.Event()

    class Slow(ThreadPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if threading.current_thread() is not threading.main_thread():
                making.set()
                forked.wait(WAIT)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(blockwise, "ThreadPoolExecutor", Slow)
    other = Call(lambda: blockwise.map_blocks(100, 8, lambda s, e: s))
    try:
        assert making.wait(WAIT)
        assert fork_and(lambda: blockwise.map_blocks(100, 8, lambda s, e: s) == list(range(0, 100, 8))) == 0
    finally:
        forked.set()
    assert other.outcome() == list(range(0, 100, 8))


AT_EXIT = """
import atexit, sys
import numpy as np
import tmd_nb
from tmd_nb.storage import blockwise

blockwise.BLOCK_BYTES = 4096
blockwise._threads = lambda: 2
hm = np.linspace(-1, 1, 64 * 64).reshape(64, 64) * 0.37
if sys.argv[2] == "pool made":
    tmd_nb.export_to_gwy(hm, sys.argv[1] + ".before.gwy")

def at_exit():
    tmd_nb.export_to_gwy({"height_map": hm, "height_unit": "mm"}, sys.argv[1])
    back = tmd_nb.load(sys.argv[1])["height_map"]
    print("same" if back.tobytes() == hm.tobytes() else "differs", flush=True)

atexit.register(at_exit)
"""


@pytest.mark.parametrize("pool", ["pool made", "no pool yet"])
def test_a_save_and_load_at_interpreter_exit_work(tmp_path: Path, pool: str) -> None:
    """An ``atexit`` handler (or a daemon thread) saving a large map at exit: the executors take
    no more work then, and the calling thread can do every block itself."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tmd_nb.__file__).parents[1]), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", AT_EXIT, str(tmp_path / "exit.gwy"), pool],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.stdout.strip() == "same", done.stderr[-2000:]


# --- scratch ----------------------------------------------------------------------------------


def test_scratch_is_the_threads_own_and_reused() -> None:
    a = blockwise.scratch(100)
    b = blockwise.scratch(50)
    assert np.shares_memory(a, b)
    big = blockwise.scratch(blockwise.BLOCK_BYTES * 3 + 1)
    assert big.size == blockwise.BLOCK_BYTES * 3 + 1
    others: list[np.ndarray] = []
    t = threading.Thread(target=lambda: others.append(blockwise.scratch(100)))
    t.start()
    t.join(WAIT)
    assert not np.shares_memory(others[0], blockwise.scratch(100))

    def job(start: int, stop: int) -> bool:
        return not np.shares_memory(blockwise.scratch(10), a) or not in_pool()

    assert all(blockwise.map_blocks(1000, 8, both_threads(job)))


def test_a_gwy_file_loaded_inside_a_job_while_the_job_holds_its_scratch(tmp_path: Path) -> None:
    """A job holding its thread's scratch buffer and loading a GWY file (which reads its blocks
    into the same thread's scratch): the load is exact; what the job held is the thread's to lose."""
    hm = np.random.default_rng(5).normal(size=(30, 40)) * 0.37
    path = Path(tmd_nb.export_to_gwy({"height_map": hm, "height_unit": "mm"}, tmp_path / "n.gwy"))

    def job(start: int, stop: int) -> bool:
        held = blockwise.scratch(16)
        held[:] = start % 251
        back = tmd_nb.load(path)["height_map"]
        return back.tobytes() == hm.tobytes()

    assert all(blockwise.map_blocks(400, 8, both_threads(job)))


# --- edge sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("points", [-5, 0, 1, 7, 8, 9, 16, 17])
@pytest.mark.parametrize("itemsize", [0, 1, 8, 64, 65, 1 << 40])
@pytest.mark.parametrize("threads", [1, 2, 3, 50])
def test_edge_sizes_give_every_block_once_in_order(
    monkeypatch: pytest.MonkeyPatch, points: int, itemsize: int, threads: int
) -> None:
    monkeypatch.setattr(blockwise, "_threads", lambda: threads)
    step = max(1, 64 // max(1, itemsize))
    assert blockwise.map_blocks(points, itemsize, lambda s, e: (s, e)) == spans(points, step)


def test_more_threads_than_the_pool_was_made_with(monkeypatch: pytest.MonkeyPatch) -> None:
    blockwise.map_blocks(100, 8, lambda s, e: s)  # the pool: one thread
    monkeypatch.setattr(blockwise, "_threads", lambda: 8)
    assert blockwise.map_blocks(1000, 8, lambda s, e: (s, e)) == spans(1000, 8)


# --- whole files from several threads -----------------------------------------------------------


def npz_heights(path: Path) -> np.ndarray:
    with zipfile.ZipFile(path) as z, z.open("height_map.npy") as f:
        return np.load(io.BytesIO(f.read()), allow_pickle=False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_saves_and_loads_from_several_threads_at_once_are_exact(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(11)
    maps = [(rng.normal(size=(40 + k, 50 - k)) * 0.37).astype(dtype) for k in range(4)]
    for hm in maps[::2]:
        hm[hm > 1.0] = np.nan
    start_all = threading.Barrier(len(maps), timeout=WAIT)

    def worker(k: int) -> bool:
        hm = maps[k]
        start_all.wait()
        for r in range(2):
            paths = {ext: tmp_path / f"m{k}-{r}.{ext}" for ext in ("gwy", "x3p", "npz")}
            for path in paths.values():
                tmd_nb.save({"height_map": hm, "height_unit": "mm", "x_length": 2.0, "y_length": 1.0}, path)
            for path in paths.values():
                back = tmd_nb.load(path)["height_map"]
                assert back.dtype == hm.dtype and back.tobytes() == hm.tobytes(), path
        return True

    calls = [Call(lambda k=k: worker(k)) for k in range(len(maps))]
    assert all(call.outcome() for call in calls)
    for k, hm in enumerate(maps):
        finite = np.isfinite(hm)
        field = gwyfile.load(str(tmp_path / f"m{k}-1.gwy"))["/0/data"]  # metres
        np.testing.assert_array_equal(field.data.reshape(hm.shape)[finite], hm[finite].astype(np.float64) * 1e-3)
        z = x3pio.read(tmp_path / f"m{k}-1.x3p", verify=True).layers[0].z
        np.testing.assert_array_equal(np.asarray(z)[finite], hm[finite].astype(np.float64) * 1e-3)
        npz = npz_heights(tmp_path / f"m{k}-1.npz")
        assert npz.dtype == hm.dtype and npz.tobytes() == hm.tobytes()  # numpy's own reader
