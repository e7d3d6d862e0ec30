"""Batch conversion of scan archives: :func:`convert`, on local processes or a ``dask.distributed`` cluster.

The work is one plain function, :func:`convert_file` (load one file, save it in the target
format through the atomic writer), mapped over the files by an existing engine: a
``concurrent.futures`` process pool on this machine, or a ``dask.distributed.Client`` when one is
given. Tasks carry paths, never arrays, so workers must see the same file system.

Resuming
    Every output is written to a hidden temporary file beside it and renamed into place only
    once complete (:mod:`tmd_nb.formats.atomic`), so an output that exists at its final name is a
    whole file. A run that is interrupted (Ctrl-C, a killed process or worker) leaves finished
    outputs and, at worst, hidden temporary files; running it again skips the finished outputs
    (after checking their structure), removes those temporary files and converts the rest.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import glob
import multiprocessing
import os
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from .errors import FormatError
from .formats import registry
from .formats.base import PathLike
from .formats.chunks import load_metadata

__all__ = ["ConvertReport", "convert", "convert_file", "convert_files", "plan"]

_GLOB_CHARS = re.compile(r"[*?[]")
#: Most files converted by one Dask task (small scans take milliseconds; a task costs about as much).
MAX_BATCH = 16


@dataclass
class ConvertReport:
    """What :func:`convert` did with each file.

    Attributes
    ----------
    converted : list of (str, str)
        ``(source, output)`` of the files written by this run.
    skipped : list of (str, str)
        ``(source, output)`` of the files whose output was already there and complete.
    failed : list of (str, str)
        ``(source, reason)``: the files that could not be converted, each with a one-line reason.
    notes : list of (str, str)
        ``(source, message)``: warnings raised while converting (e.g. metadata a format cannot keep).
    """

    converted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed

    def summary(self) -> str:
        """One line: how many files were converted, skipped and failed."""
        return f"{len(self.converted)} converted, {len(self.skipped)} skipped (already done), {len(self.failed)} failed"

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  failed: {source}: {reason}" for source, reason in self.failed]
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


# --------------------------------------------------------------------------- planning


def _expand(source: PathLike) -> Iterator[tuple[str, str]]:
    """``(file, path relative to the output folder)`` for one source: a folder, a glob or a file."""
    text = os.fspath(source)
    if os.path.isdir(text):
        known = set(registry.extensions())
        for root, dirs, files in os.walk(text):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in known:
                    path = os.path.join(root, name)
                    yield path, os.path.relpath(path, text)
        return
    if _GLOB_CHARS.search(text) and not os.path.exists(text):
        matches = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p))
        if not matches:
            raise FileNotFoundError(f"no file matches {text!r}")
        for path in matches:
            yield path, os.path.basename(path)
        return
    if not os.path.exists(text):
        raise FileNotFoundError(f"no such file or folder: {text!r}")
    yield text, os.path.basename(text)


def plan(sources: PathLike | Iterable[PathLike], out_dir: PathLike, format: str = "npz") -> list[tuple[str, str]]:
    """The ``(source, output)`` pairs :func:`convert` works on, checked before anything is written.

    ``sources`` is a folder (every file with a known extension, sub-folders mirrored; hidden
    files and folders left out), a glob pattern (``**`` for sub-folders), a file, or a list of
    these. Each file becomes ``out_dir/<relative folder>/<stem>.<ext>``.

    Raises
    ------
    ValueError
        The format is unknown, or two sources would be written to the same output.
    FileNotFoundError
        A source does not exist, or a pattern matches no file.
    """
    fmt = registry.by_name(format)
    ext = fmt.extensions[0]
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out_root = os.path.abspath(os.fspath(out_dir))
    pairs: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for source in sources:
        for path, relative in _expand(source):
            path = os.path.abspath(path)
            output = os.path.join(out_root, os.path.splitext(relative)[0] + ext)
            other = seen.get(output)
            if other == path:
                continue  # the same file named twice
            if other is not None:
                raise ValueError(f"{other!r} and {path!r} would both be converted to {output!r}; rename one")
            if path == output:
                raise ValueError(f"{path!r} would be converted onto itself; choose another output folder")
            seen[output] = path
            pairs.append((path, output))
    return pairs


# --------------------------------------------------------------------------- one file


def _complete(output: str, format: str) -> bool:
    """Whether ``output`` is a whole file of ``format`` (its structure checks out; heights are not read)."""
    try:
        if registry.recognise(output).name != format:
            return False
        if format in ("npz", "npy"):
            load_metadata(output)  # directory, headers and sizes
        return True
    except (OSError, FormatError):
        return False


def _remove_stale_temporaries(output: str) -> None:
    """Remove the hidden temporary files an interrupted save of ``output`` left (see tmd_nb.formats.atomic)."""
    directory, name = os.path.split(output)
    pattern = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{8}}\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for candidate in names:
        if pattern.fullmatch(candidate):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, candidate))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def convert_file(source: str, output: str, format: str = "npz", overwrite: bool = False) -> dict[str, Any]:
    """Convert one file; never raises for a bad file. What :func:`convert` runs on every worker.

    Returns
    -------
    dict
        ``{"source", "output", "status", "reason", "notes"}``; ``status`` is ``"converted"``,
        ``"skipped"`` (a complete output is there and ``overwrite`` is false) or ``"failed"``
        (``reason`` says why in one line).
    """
    result: dict[str, Any] = {"source": source, "output": output, "status": "failed", "reason": "", "notes": []}
    try:
        if not overwrite and os.path.exists(output) and _complete(output, format):
            result["status"] = "skipped"
            return result
        _remove_stale_temporaries(output)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            registry.save(registry.load(source), output, format=format)
        result["notes"] = sorted({str(w.message).splitlines()[0] for w in caught})
        result["status"] = "converted"
    except Exception as exc:  # one bad file never stops the batch
        result["reason"] = _reason(exc)
    return result


# --------------------------------------------------------------------------- running


def _bar(total: int, progress: bool, stream: TextIO | None = None) -> Any:
    """A progress bar: tqdm.auto (a widget in a notebook, text in a terminal), or a plain text line."""
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextBar(total, stream or sys.stderr)
    return tqdm(total=total, unit="file", desc="convert", file=stream)


class _TextBar:
    """Stand-in for tqdm when it is not installed: ``convert: 12/100 files`` redrawn on one line."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.n, self.stream = total, 0, stream

    def update(self, n: int = 1) -> None:
        self.n += n
        self.stream.write(f"\rconvert: {self.n}/{self.total} files")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _job_count(jobs: int | None) -> int:
    if jobs is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            return os.cpu_count() or 1
    if type(jobs) is not int or jobs < 1:
        raise ValueError(f"jobs must be a positive int or None, not {jobs!r}")
    return jobs


def _worker_setup() -> None:
    """In each worker process: leave Ctrl-C to the parent, which stops handing out files and waits for these."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_local(tasks: list[tuple[str, str]], format: str, overwrite: bool, jobs: int, done: Callable) -> None:
    """Run the tasks in this process (``jobs=1``) or on a process pool; a pool that breaks is restarted once.

    On Ctrl-C (``KeyboardInterrupt``) no new file is started, the ones in progress are finished
    (each is written atomically either way), and the interrupt goes on to the caller.
    """
    if jobs == 1 or len(tasks) <= 1:
        for source, output in tasks:
            done(convert_file(source, output, format, overwrite))
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    left = list(tasks)
    for attempt in (1, 2):
        finished: set[tuple[str, str]] = set()
        pool = cf.ProcessPoolExecutor(max_workers=min(jobs, len(left)), mp_context=context, initializer=_worker_setup)
        with pool:
            futures = {pool.submit(convert_file, s, o, format, overwrite): (s, o) for s, o in left}
            try:
                for future in cf.as_completed(futures):
                    source, output = futures[future]
                    try:
                        result = future.result()
                    except cf.process.BrokenProcessPool:
                        if attempt == 1:
                            continue  # retried on a fresh pool
                        result = {
                            "source": source,
                            "output": output,
                            "status": "failed",
                            "reason": "the worker process converting it died (out of memory or killed?)",
                            "notes": [],
                        }
                    finished.add((source, output))
                    done(result)
            except BaseException:  # Ctrl-C: the files being converted are finished, the others never started
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        left = [t for t in left if t not in finished]
        if not left:
            return


def convert_files(batch: list[tuple[str, str]], format: str = "npz", overwrite: bool = False) -> list[dict[str, Any]]:
    """:func:`convert_file` over a batch of ``(source, output)`` pairs: one Dask task for several small files."""
    return [convert_file(source, output, format, overwrite) for source, output in batch]


def _batches(tasks: list[tuple[str, str]], workers: int) -> list[list[tuple[str, str]]]:
    """Batches of at most :data:`MAX_BATCH` files, about eight per worker, so that per-task overhead is amortised
    while every worker still gets work until the end."""
    size = max(1, min(MAX_BATCH, len(tasks) // (8 * max(1, workers))))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def _run_dask(tasks: list[tuple[str, str]], format: str, overwrite: bool, client: Any, done: Callable) -> None:
    """Run the tasks on a ``dask.distributed`` client, in batches: paths go to the workers, results come back."""
    from distributed import as_completed

    batches = _batches(tasks, len(client.scheduler_info().get("workers", ())))
    # pure=False: unique keys, so a second run on the same client never reuses the first one's results.
    futures = client.map(convert_files, batches, format=format, overwrite=overwrite, pure=False)
    by_key = {f.key: batch for f, batch in zip(futures, batches, strict=True)}
    try:
        for future in as_completed(futures):
            try:
                results = future.result()
            except Exception as exc:  # a worker died (KilledWorker) or the task could not run
                reason = _reason(exc)
                results = [
                    {"source": s, "output": o, "status": "failed", "reason": reason, "notes": []}
                    for s, o in by_key[future.key]
                ]
            for result in results:
                done(result)
    except BaseException:
        client.cancel(futures)
        raise


def convert(
    sources: PathLike | Iterable[PathLike],
    out_dir: PathLike,
    *,
    format: str = "npz",
    overwrite: bool = False,
    jobs: int | None = None,
    client: Any = None,
    progress: bool = True,
) -> ConvertReport:
    """Convert every scan in ``sources`` to ``format`` in ``out_dir``, in parallel, resumably.

    Parameters
    ----------
    sources : path, glob or list of them
        A folder (every file with an extension tmd_nb reads, sub-folders mirrored in
        ``out_dir``), a glob pattern (``"scans/**/*.tmd"``), a file, or a list of these. Any format
        :func:`tmd_nb.load` reads.
    out_dir : path
        Where the outputs go: ``out_dir/<stem>.<ext>``; created if needed.
    format : str
        The output format's name (``"npz"``, ``"npy"``, ``"tmd"``, ...).
    overwrite : bool
        Convert files whose output is already there too (by default they are skipped, after a
        check that they are complete).
    jobs : int, optional
        Local worker processes (default: every available core; ``1`` converts in this process).
        Ignored when ``client`` is given.
    client : dask.distributed.Client, optional
        Run on this Dask cluster instead: paths are sent to the workers, which must see the same
        files.
    progress : bool
        Show a progress bar (a widget in a notebook, text in a terminal).

    Returns
    -------
    ConvertReport
        The converted, skipped and failed files (each failure with its one-line reason). A bad
        file never stops the others.

    Raises
    ------
    ValueError
        Unknown format, bad ``jobs``, or two sources that would be written to the same output;
        raised before any file is written.
    FileNotFoundError
        A source does not exist or a pattern matches nothing (before any file is written).
    """
    tasks = plan(sources, out_dir, format)
    workers = _job_count(jobs)
    report = ConvertReport()
    bar = _bar(len(tasks), progress)
    lists = {"converted": report.converted, "skipped": report.skipped}

    def done(result: dict[str, Any]) -> None:
        source = result["source"]
        if result["status"] == "failed":
            report.failed.append((source, result["reason"]))
        else:
            lists[result["status"]].append((source, result["output"]))
        report.notes.extend((source, note) for note in result["notes"])
        if bar is not None:
            bar.update(1)

    try:
        if client is not None:
            _run_dask(tasks, format, overwrite, client, done)
        else:
            _run_local(tasks, format, overwrite, workers, done)
    finally:
        if bar is not None:
            bar.close()
    order = {source: i for i, (source, _) in enumerate(tasks)}
    for items in (report.converted, report.skipped, report.failed):
        items.sort(key=lambda item: order[item[0]])
    return report
