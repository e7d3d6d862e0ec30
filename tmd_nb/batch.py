"""Batch conversion of scan archives: :func:`convert`, on local processes or a ``dask.distributed`` cluster.

The work is one plain function, :func:`convert_file` (load one file, save it in the target
format through the atomic writer), mapped over the files by an existing engine: a
``concurrent.futures`` process pool on this machine, or a ``dask.distributed.Client`` when one is
given. Tasks carry paths, never arrays, so workers must see the same file system.

The manifest
    ``OUT/tmd_nb-convert.csv`` records what convert did, one CSV line per event, appended as the
    run goes (one write each, under a lock: a killed run loses none; flushed to disk at least
    once a second) and tidied to one line per source and output (the last, written atomically)
    when a run ends and when the next one starts; where a pair has more than one line (a run
    killed half-way, or one still going) the last counts. Columns:

    ``source``
        the absolute path of the scan; ``size`` and ``mtime_ns``: its size in bytes and its
        modification time in nanoseconds when it was read;
    ``format``
        the format it was read as (empty when it could not be read), ``channel``: the channel
        read from a file of several (an instrument's), as given to ``channel=``; empty for the
        default channel and for files of one height map;
    ``output``
        the absolute path written; ``status``: ``started`` (being converted: the output did not
        exist when it began), ``converted``, ``skipped`` (already done), ``failed`` (``reason``
        says why in one line);
    ``output_sha256``
        the SHA-256 of the output as convert wrote or last verified it (empty when there is
        none).

    ``pandas.read_csv(path)`` reads it (``.drop_duplicates(["source", "output"], keep="last")``
    while a run is going). File names that are not UTF-8 are kept as their bytes (so that a rerun
    finds them): read such a manifest with ``encoding_errors="surrogateescape"``.

Whose files are replaced
    An output is convert's own when the manifest's last line about it carries the SHA-256 of
    the file there now. Only those are replaced, when their source changed or when they no
    longer load (a damaged output). A line that says ``started`` (a run stopped between renaming
    the output into place and saying so) names no content: the file there is taken as convert's,
    and skipped, only when the source is unchanged and the file holds its heights; otherwise it
    is reported. Any other file at an output name (a user's own ``np.savez`` results, a file from
    another program, an output edited since) is left alone and reported, unless
    ``overwrite=True``. An output of convert is never taken as a source by a later run into the
    same folder, and a folder source never contributes the output folder inside it (also when
    reached through a symbolic link). Lines naming files outside the output folder claim
    nothing, and a manifest that is a symbolic link is refused.

Resuming
    Every output is written to a hidden temporary file beside it and renamed into place only
    once complete (:mod:`tmd_nb.storage.atomic`). A run that is interrupted (Ctrl-C, a killed
    process or worker) leaves finished outputs, their manifest lines and, at worst, temporary
    files; running it again skips an output only when its manifest line says it came from the
    same source, unchanged (size and ``mtime_ns``), read with the same channel, and the output
    still has the recorded SHA-256; it removes the temporary files of dead processes and converts the rest.

Processes
    Local work runs on a process pool started with ``forkserver``; in a script that calls
    convert without an ``if __name__ == "__main__":`` guard (where every new interpreter would
    run the script again) with ``fork`` instead, or, where that is unsafe, in this process with
    a one-line note saying what to add. A worker that dies (out of memory, killed) costs the
    files it held one more try each, alone in a fresh process; a file that kills that one too
    is reported as failed. On Dask a failed batch is likewise split and each file tried alone.

Test hook
    ``TMD_NB_TEST_KILL_WORKER=<file name>``: the process converting a source of that name kills
    itself with SIGKILL (how the tests make a worker die). It does nothing when unset.
"""

from __future__ import annotations

import ast
import collections
import concurrent.futures as cf
import contextlib
import csv
import glob
import hashlib
import io
import multiprocessing
import os
import re
import signal
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from .errors import FormatError, shorten
from .formats import instruments, registry
from .formats.base import PathLike
from .storage import atomic

__all__ = ["MANIFEST", "ConvertReport", "connect", "convert", "convert_file", "convert_files", "plan", "read_manifest"]

_GLOB_CHARS = re.compile(r"[*?[]")
#: Most files converted by one Dask task (small scans take milliseconds; a task costs about as much).
MAX_BATCH = 16
#: The manifest's file name in the output folder (see the module doc).
MANIFEST = "tmd_nb-convert.csv"
#: Seconds between two flushes of the manifest to disk (an fsync costs milliseconds; files, less).
SYNC_INTERVAL = 1.0
FIELDS = ("source", "size", "mtime_ns", "format", "channel", "output", "status", "reason", "output_sha256")
_KILL_HOOK = "TMD_NB_TEST_KILL_WORKER"
_DIED = "the worker process converting it died twice (out of memory, or killed?)"

Record = dict[str, Any]


@dataclass
class ConvertReport:
    """What :func:`convert` did with each file.

    Attributes
    ----------
    converted : list of (str, str)
        ``(source, output)`` of the files written by this run.
    skipped : list of (str, str)
        ``(source, output)`` of the files whose output was already there, from the same unchanged
        source, intact.
    failed : list of (str, str)
        ``(source, reason)``: the files that could not be converted, or whose output name holds a
        file convert does not replace, each with a one-line reason.
    notes : list of (str, str)
        ``(source, message)``: warnings raised while converting (e.g. metadata a format cannot keep).
    manifest : str
        The manifest of the output folder, one line per source and output (see :mod:`tmd_nb.batch`).
    """

    converted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    manifest: str = ""

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
        if self.manifest:
            lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


# --------------------------------------------------------------------------- the manifest


def _row(record: Record) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if record.get(k) is None else record[k] for k in FIELDS])
    return buffer.getvalue()


_HEADER = _row(dict(zip(FIELDS, FIELDS, strict=True)))


def read_manifest(path: PathLike) -> list[Record]:
    """Every line of a manifest, in order, as dicts (``size``/``mtime_ns`` ints or None, ``channel`` None).

    A missing file reads as no lines; an unfinished last line is left out.

    Raises
    ------
    ValueError
        The file is not a convert manifest.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    if not text:
        return []
    if not text.startswith(_HEADER):
        raise ValueError(f"{os.fspath(path)!r} is not a tmd_nb convert manifest; move it away")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a line being appended, or cut by a power failure
    records = []
    rows = csv.reader(io.StringIO(text[len(_HEADER) :], newline=""))
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error:  # a line no run wrote (a field over csv's limit): that line only is left out
            continue
        if len(row) != len(FIELDS):
            continue
        record: Record = dict(zip(FIELDS, row, strict=True))
        for key in ("size", "mtime_ns"):
            record[key] = int(record[key]) if record[key].isascii() and record[key].isdigit() else None
        record["channel"] = record["channel"] or None
        records.append(record)
    return records


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    """Hold a lock on the output folder (``flock``): appends and rewrites of concurrent runs take turns."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    fd = os.open(directory, os.O_RDONLY)  # the folder itself: no lock file left behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _append(manifest: str, records: list[Record], sync: bool = True) -> None:
    """Add lines to the manifest in one write (a kill of this process loses none); ``sync``: flush it to disk."""
    if not records:
        return
    with _locked(os.path.dirname(manifest)):
        fd = os.open(manifest, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            text = "".join(_row(r) for r in records)
            size = os.fstat(fd).st_size
            if size == 0:
                text = _HEADER + text
            elif os.pread(fd, 1, size - 1) != b"\n":
                text = "\n" + text  # after a line cut short by a power failure, which is then left out
            os.write(fd, text.encode("utf-8", "surrogateescape"))
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)


def _tidy(manifest: str) -> list[Record]:
    """Rewrite the manifest atomically with the last line of each source; return those lines."""
    with _locked(os.path.dirname(manifest)):
        records = read_manifest(manifest)
        last = {(r["source"], r["output"]): r for r in records}  # a source converted to two formats keeps both
        if len(last) < len(records):
            with atomic.atomic_write(manifest) as f:
                f.write((_HEADER + "".join(_row(r) for r in last.values())).encode("utf-8", "surrogateescape"))
        return list(last.values())


def _claims(records: Iterable[Record]) -> dict[str, Record]:
    """Per output, the last line that claims it as convert's own (``started``, or with a SHA-256)."""
    return {r["output"]: r for r in records if r["status"] == "started" or r["output_sha256"]}


# --------------------------------------------------------------------------- planning


def _expand(source: PathLike, out_root: str, ours: set[str]) -> Iterator[tuple[str, str]]:
    """``(file, path relative to the output folder)`` for one source: a folder, a glob or a file.

    Leaves out convert's own outputs, and the output folder when it lies inside a folder source;
    ``out_root`` and ``ours`` are real paths, so that a symbolic link to them is left out too.
    """
    text = os.fspath(source)
    if os.path.isdir(text):
        known = set(registry.extensions())
        top = os.path.realpath(text)
        for root, dirs, files in os.walk(text):
            dirs[:] = sorted(
                d
                for d in dirs
                if not d.startswith(".") and (top == out_root or os.path.realpath(os.path.join(root, d)) != out_root)
            )
            for name in sorted(files):
                path = os.path.join(root, name)
                if (
                    not name.startswith(".")
                    and os.path.splitext(name)[1].lower() in known
                    and os.path.realpath(path) not in ours
                ):
                    yield path, os.path.relpath(path, text)
        return
    if _GLOB_CHARS.search(text) and not os.path.exists(text):
        matches = sorted(
            p for p in glob.glob(text, recursive=True) if not os.path.isdir(p) and os.path.realpath(p) not in ours
        )
        if not matches:
            raise FileNotFoundError(f"no file matches {text!r}")
        for path in matches:
            yield path, os.path.basename(path)
        return
    if not os.path.lexists(text):
        raise FileNotFoundError(f"no such file or folder: {text!r}")
    yield text, os.path.basename(text)


def plan(sources: PathLike | Iterable[PathLike], out_dir: PathLike, format: str = "npz") -> list[tuple[str, str]]:
    """The ``(source, output)`` pairs :func:`convert` works on, checked before anything is written.

    ``sources`` is a folder (every file with a known extension, sub-folders mirrored; hidden
    files and folders left out), a glob pattern (``**`` for sub-folders), a file, or a list of
    these. Each file becomes ``out_dir/<relative folder>/<stem>.<ext>``. Files the output
    folder's manifest lists as convert's outputs are left out, and so is the output folder when
    it lies inside a folder source. Two sources may share an output name: :func:`convert`
    converts the first and reports the others.

    Raises
    ------
    ValueError
        The format is unknown, the output folder is a file, or it holds a file at the manifest's
        name that is not a manifest.
    FileNotFoundError
        A source does not exist, or a pattern matches no file.
    """
    fmt = registry.by_name(format)
    ext = fmt.extensions[0]
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out_root = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out_root) and not os.path.isdir(out_root):
        raise ValueError(f"the output folder {out_root!r} is a file; choose a folder")
    manifest = os.path.join(out_root, MANIFEST)
    if os.path.islink(manifest):  # appending would change the file it points to, outside the output folder
        raise ValueError(f"{manifest!r} is a symbolic link, not a tmd_nb convert manifest; move it away")
    inside = os.path.join(out_root, "")  # a line naming a file elsewhere (hand-made) hides no source
    ours = {
        os.path.realpath(p)
        for p in [*_claims(read_manifest(manifest)), manifest]
        if os.path.abspath(p).startswith(inside)
    }
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for source in sources:
        for path, relative in _expand(source, os.path.realpath(out_root), ours):
            path = os.path.abspath(path)
            if path not in seen:
                seen.add(path)
                pairs.append((path, os.path.join(out_root, os.path.splitext(relative)[0] + ext)))
    return pairs


# --------------------------------------------------------------------------- one file


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _loads(path: str, format: str) -> bool:
    """Whether ``path`` loads whole as ``format`` (the check for an output whose SHA-256 changed)."""
    try:
        if registry.recognise(path).name != format:
            return False
        registry.load(path)
    except (OSError, FormatError, MemoryError):
        return False
    return True


def _holds(path: str, format: str, source: str, channel: str | None = None) -> bool:
    """Whether ``path`` loads whole as ``format`` with the heights of ``source``'s ``channel`` (output dtype)."""
    import numpy as np

    try:
        if registry.recognise(path).name != format:
            return False
        heights = np.asarray(registry.load(path)["height_map"])
        expected = np.asarray(registry.load(source, channel=_channel_arg(channel))["height_map"])
        return heights.shape == expected.shape and np.array_equal(
            heights, expected.astype(heights.dtype), equal_nan=heights.dtype.kind in "fc"
        )
    except (OSError, FormatError, MemoryError, ValueError, TypeError, KeyError):
        return False


def _channel_arg(channel: str | None) -> int | str | None:
    """The manifest's text of a channel as ``load`` takes it: digits are an index, anything else a name."""
    return int(channel) if channel is not None and channel.lstrip("-").isdigit() else channel


def _channel_of(source: str, channel: int | str | None) -> str | None:
    """The channel read from ``source``, as the manifest writes it: None for a file of one height map."""
    if channel is None or registry.recognise(source).channels is None:
        return None
    return str(channel)


def _reason(exc: BaseException, source: str = "") -> str:
    """One line about ``exc``, without repeating the source's path (the report line starts with it)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename in (source, None):
        text = exc.strerror
    else:
        message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc  # str() quotes a KeyError
        lines = str(message).strip().splitlines()
        text = lines[0] if lines else ""
    if source:
        for name in (repr(source), source):
            text = text.replace(f"{name}: ", "").replace(name, "the file")
    text = shorten(text)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _NotReplaced(Exception):
    """The output name holds a file convert does not replace."""


def _existing(
    source: str,
    output: str,
    format: str,
    st: os.stat_result,
    overwrite: bool,
    record: Record | None,
    manifest: str | None,
    channel: str | None = None,
) -> tuple[str, str]:
    """What to do about whatever is at ``output``: ``("convert" | "skip", sha256 of the file there or "")``.

    Raises :class:`_NotReplaced` for a file that is not convert's own (see the module doc).
    """
    try:
        ost = os.lstat(output)
    except FileNotFoundError:
        return "convert", ""
    if stat.S_ISDIR(ost.st_mode):
        raise _NotReplaced("a folder is there at the output name; not replaced")
    if not stat.S_ISREG(ost.st_mode) and not stat.S_ISLNK(ost.st_mode):
        raise _NotReplaced("a special file (not a regular file) is there at the output name; not replaced")
    if overwrite:
        return "convert", ""
    digest = "" if stat.S_ISLNK(ost.st_mode) else _sha256(output)
    if manifest is not None and (record is None or record["output_sha256"] != digest):
        # Perhaps another run into this folder wrote it since this run began: read the manifest now.
        record = _claims(r for r in read_manifest(manifest) if r["output"] == output).get(output, record)
    if record is None or stat.S_ISLNK(ost.st_mode):
        raise _NotReplaced(
            "a file convert did not write is there at the output name; not replaced (overwrite=True replaces it)"
        )
    unchanged = record["source"] == source and (record["size"], record["mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    same_channel = (record["channel"] or None) == channel
    if record["status"] == "started":
        # Convert renames only complete outputs into place, then says so; a file there with no such line
        # is ours only if it holds the unchanged source's heights (the line may be hand-made, or older
        # than a file the user put there).
        if unchanged and _holds(output, format, source, channel):
            return "skip", digest
        raise _NotReplaced(
            "a file convert cannot tell it wrote is there at the output name; not replaced (overwrite=True replaces it)"
        )
    if record["output_sha256"] == digest:
        return ("skip" if unchanged and same_channel else "convert"), digest
    if _loads(output, format):
        raise _NotReplaced(
            "the file at the output name changed since convert wrote it; not replaced (overwrite=True replaces it)"
        )
    return "convert", digest  # damaged (cut short, overwritten with garbage): converted again


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _kill_hook(source: str) -> None:
    """The documented test hook (module doc): die like a worker killed by the system."""
    name = os.environ.get(_KILL_HOOK)
    if name and os.path.basename(source) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def convert_file(
    source: str,
    output: str,
    format: str = "npz",
    overwrite: bool = False,
    record: Record | None = None,
    manifest: str | None = None,
    channel: int | str | None = None,
) -> Record:
    """Convert one file; never raises for a bad file. What :func:`convert` runs on every worker.

    ``record`` is the manifest line that claims ``output`` (see :mod:`tmd_nb.batch`), if any;
    ``manifest`` the manifest's path, read again when a file at ``output`` is not accounted for;
    ``channel`` the channel to read from a file of several (ignored for a file of one height map).

    Returns
    -------
    dict
        A manifest line (the keys of ``FIELDS``) plus ``"notes"``; ``status`` is
        ``"converted"``, ``"skipped"`` or ``"failed"`` (``reason`` says why in one line).
    """
    result: Record = {k: None for k in FIELDS}
    result.update(source=source, output=output, status="failed", reason="", output_sha256="", notes=[])
    try:
        _kill_hook(source)
        st = os.stat(source)
        result.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{source!r} is not a regular file")
        result["channel"] = used = _channel_of(source, channel)
        action, digest = _existing(source, output, format, st, overwrite, record, manifest, used)
        result["output_sha256"] = digest  # still ours whatever happens next
        if action == "skip":
            result.update(status="skipped", format=(record or {}).get("format") or registry.recognise(source).name)
            return result
        with instruments.handing_over():  # an instrument's file is read by the reader that recognised it
            fmt = registry.recognise(source)
            result["format"] = fmt.name
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                data = registry.load(source, channel=_channel_arg(used))
                after = os.stat(source)
                if (after.st_size, after.st_mtime_ns, after.st_ino) != (st.st_size, st.st_mtime_ns, st.st_ino):
                    raise FormatError(f"{source!r} changed while it was being read; run again")
                registry.save(data, output, format=format)
        result["output_sha256"] = _sha256(output)
        result["notes"] = sorted({str(w.message).splitlines()[0] for w in caught})
        result["status"] = "converted"
    except _NotReplaced as exc:
        result["reason"] = str(exc)
    except Exception as exc:  # one bad file never stops the batch
        result["reason"] = _reason(exc, source)
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


def _guarded(main: Any) -> bool:
    """Whether the running ``__main__`` script called us from under ``if __name__ == "__main__":``.

    Read from the script's own statement at the outermost frame of ``__main__``; when that cannot
    be told, the answer is "guarded" (what ``forkserver`` and ``spawn`` need, as before), except
    for a script that is not Python (an IPython ``.ipy`` file), which a new interpreter cannot run.
    """
    frame = sys._getframe(1)
    line = None
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals is vars(main):
            line = frame.f_lineno
        frame = frame.f_back  # type: ignore[assignment]
    try:
        with open(main.__file__, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):  # not Python (``ipython script.ipy``): a new interpreter cannot run it
        return False
    if line is None:
        return True
    for statement in tree.body:
        if statement.lineno <= line <= (statement.end_lineno or statement.lineno):
            test = getattr(statement, "test", None)
            return isinstance(statement, ast.If) and "__name__" in ast.dump(test) and "__main__" in ast.dump(test)
    return True


def _start_method() -> str | None:
    """How to start worker processes here, or None: convert in this process (a note says why).

    ``forkserver`` and ``spawn`` start a new interpreter that imports a ``__main__`` script again:
    for a script with no ``if __name__ == "__main__":`` guard that runs convert again in every
    worker. There ``fork`` (no import) is used when this process has no other thread.
    """
    methods = multiprocessing.get_all_start_methods()
    fresh = "forkserver" if "forkserver" in methods else "spawn"
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) is None or _guarded(main):
        return fresh
    if "fork" in methods and sys.platform.startswith("linux") and threading.active_count() == 1:
        return "fork"
    why = (
        'call it under `if __name__ == "__main__":`'
        if str(getattr(main, "__file__", "")).endswith(".py")
        else 'run it from a Python script (.py) under `if __name__ == "__main__":`'
    )
    print(f"convert: converting in this process only; to use several processes, {why}", file=sys.stderr)
    return None


Task = tuple[str, str, "Record | None"]

#: What a worker imports to read an instrument's file: seconds (scipy, pandas), on every core at once.
_INSTRUMENT_LIBRARY = "SurfaceTopography.IO"


def _preload(tasks: list[Task]) -> None:
    """Have the fork server import tmd_nb (and SurfaceTopography, for instruments' files) once, so that
    each worker it forks starts with them instead of importing them itself.

    SurfaceTopography takes 1-2 s of CPU to import: in every worker, that is a core's worth of work
    per worker before the first file (more than converting a hundred small files), paid again by
    each pool. Imported once in the server, the workers of this pool and of later ones in this
    session fork with it loaded. The server starts with the first pool that needs it: a server
    already running keeps what it imported. The user's own preload modules are kept.
    """
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    modules = list(getattr(server, "_preload_modules", None) or ["__main__"])
    wanted = [__name__]
    instrument = set(registry.by_name("instrument").extensions)
    if _INSTRUMENT_LIBRARY.split(".")[0] in sys.modules or any(
        os.path.splitext(source)[1].lower() in instrument for source, _, _ in tasks
    ):
        wanted.append(_INSTRUMENT_LIBRARY)
    multiprocessing.get_context("forkserver").set_forkserver_preload(modules + [m for m in wanted if m not in modules])


#: How often the pool's loop looks for a Ctrl-C noted while it waits for results (seconds).
_INTERRUPT_POLL = 0.2


@contextlib.contextmanager
def _interrupt_as_flag() -> Iterator[threading.Event]:
    """Ctrl-C, while a pool runs, sets a flag instead of raising wherever this process happens to be.

    A ``KeyboardInterrupt`` raised inside the executor's ``submit`` or a manifest write can leave a
    lock taken that the clean-up then waits for, forever. The loop checks the flag between steps and
    raises there. Only the main thread can handle signals: elsewhere the flag is never set.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _died(task: Task) -> Record:
    record: Record = {k: None for k in FIELDS}
    record.update(source=task[0], output=task[1], status="failed", reason=_DIED, output_sha256="", notes=[])
    return record


def _run_local(
    tasks: list[Task],
    format: str,
    overwrite: bool,
    manifest: str,
    jobs: int,
    start: Callable,
    done: Callable,
    channel: int | str | None = None,
) -> None:
    """Run the tasks in this process (``jobs=1``) or on a process pool of ``jobs`` workers.

    Each worker has its next file waiting (twice as many files are sent as there are workers), so
    that it never idles while this process takes a result and writes the manifest line.

    When a worker dies, the pool breaks: the files then in the workers are tried again, each alone
    in a fresh process, and the others go on in a new pool. On Ctrl-C (``KeyboardInterrupt``) no
    new file is started, the ones in progress are finished (each is written atomically either
    way), and the interrupt goes on to the caller.
    """
    method = _start_method() if jobs > 1 and len(tasks) > 1 else None
    if method is None:
        for task in tasks:
            start([task])
            done(convert_file(task[0], task[1], format, overwrite, task[2], manifest, channel))
        return
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        _preload(tasks)
    queue = collections.deque(tasks)
    suspects: list[Task] = []

    def run(pool: cf.ProcessPoolExecutor, task: Task) -> cf.Future:
        start([task])
        return pool.submit(convert_file, task[0], task[1], format, overwrite, task[2], manifest, channel)

    with _interrupt_as_flag() as interrupted:
        _run_pool(queue, suspects, jobs, context, run, done, interrupted)
    for task in suspects:  # each alone, so that a file that kills its worker takes no other down
        with cf.ProcessPoolExecutor(1, mp_context=context, initializer=_worker_setup) as pool:
            future = run(pool, task)
            try:
                done(future.result())
            except cf.process.BrokenProcessPool:
                done(_died(task))


def _run_pool(
    queue: collections.deque[Task],
    suspects: list[Task],
    jobs: int,
    context: Any,
    run: Callable[[cf.ProcessPoolExecutor, Task], cf.Future],
    done: Callable,
    interrupted: threading.Event,
) -> None:
    """The pool's loop of :func:`_run_local`: files out, results in, a dead worker's files set aside."""
    while queue:
        with cf.ProcessPoolExecutor(min(jobs, len(queue)), mp_context=context, initializer=_worker_setup) as pool:
            running: dict[cf.Future, Task] = {}
            try:
                while queue or running:
                    if interrupted.is_set():
                        raise KeyboardInterrupt
                    broken = False
                    try:
                        while queue and len(running) < 2 * jobs:
                            future = run(pool, queue[0])  # raises before the file leaves the queue
                            running[future] = queue.popleft()
                    except cf.process.BrokenProcessPool:  # it broke since the last wait: the file was not sent
                        broken = True
                    finished, _ = cf.wait(
                        running,
                        timeout=None if broken else _INTERRUPT_POLL,
                        return_when=cf.ALL_COMPLETED if broken else cf.FIRST_COMPLETED,
                    )
                    if any(isinstance(f.exception(), cf.process.BrokenProcessPool) for f in finished):
                        finished, _ = cf.wait(running)  # the whole pool is gone: every future ends now
                    for future in finished:
                        task = running.pop(future)
                        if isinstance(future.exception(), cf.process.BrokenProcessPool):
                            suspects.append(task)
                            broken = True
                        else:
                            done(future.result())
                    if broken:
                        break
            except BaseException:  # Ctrl-C: the files being converted are finished, the others never started
                pool.shutdown(wait=True, cancel_futures=True)
                for future in running:
                    if future.done() and not future.cancelled() and future.exception() is None:
                        done(future.result())
                raise


def convert_files(
    batch: list[Task],
    format: str = "npz",
    overwrite: bool = False,
    manifest: str | None = None,
    channel: int | str | None = None,
) -> list[Record]:
    """:func:`convert_file` over a batch of ``(source, output, record)``: one Dask task for several small files.

    First removes what killed saves of these outputs left on this worker's host.
    """
    _remove(atomic.stale_temporaries(*(output for _, output, _ in batch)))
    return [
        convert_file(source, output, format, overwrite, record, manifest, channel) for source, output, record in batch
    ]


def _batches(tasks: list[Task], workers: int) -> list[list[Task]]:
    """Batches of at most :data:`MAX_BATCH` files, about eight per worker, so that per-task overhead is amortised
    while every worker still gets work until the end."""
    size = max(1, min(MAX_BATCH, len(tasks) // (8 * max(1, workers))))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


def _run_dask(
    tasks: list[Task],
    format: str,
    overwrite: bool,
    manifest: str,
    client: Any,
    start: Callable,
    done: Callable,
    channel: int | str | None = None,
) -> None:
    """Run the tasks on ``client`` (not necessarily the default client), in batches: paths go to the workers.

    A batch whose task fails (a worker died: ``KilledWorker``) is split, and each of its files is
    tried again alone, one at a time; a file that fails alone too is reported with the reason.
    """
    from distributed import as_completed

    start(tasks)
    batches = _batches(tasks, len(client.scheduler_info().get("workers", ())))
    # pure=False: unique keys, so a second run on the same client never reuses the first one's results.
    options = {"format": format, "overwrite": overwrite, "manifest": manifest, "channel": channel, "pure": False}
    futures = client.map(convert_files, batches, **options)
    by_key = {f.key: batch for f, batch in zip(futures, batches, strict=True)}
    pending = as_completed(futures, loop=client.loop)
    # Files of failed batches, tried again one at a time: two retries never share a dying worker.
    retries: collections.deque[Task] = collections.deque()
    retrying: set[str] = set()

    def retry_next() -> None:
        if retries and not retrying:
            task = retries.popleft()
            retry = client.submit(convert_files, [task], **options)
            by_key[retry.key] = [task]
            retrying.add(retry.key)
            futures.append(retry)
            pending.add(retry)

    try:
        for future in pending:
            batch = by_key.get(future.key, [])
            alone = future.key in retrying
            retrying.discard(future.key)
            try:
                results = future.result()
            except Exception as exc:  # a worker died (KilledWorker) or the task could not run
                if not alone:
                    retries.extend(batch)
                    retry_next()
                    continue
                reason = _DIED if type(exc).__name__ == "KilledWorker" else _reason(exc)
                results = [_died(task) | {"reason": reason} for task in batch]
            for result in results:
                done(result)
            retry_next()
    except BaseException:
        client.cancel(futures)
        raise


def connect(address: str) -> Any:
    """A ``dask.distributed.Client`` of the scheduler at ``address``.

    Raises
    ------
    ImportError
        dask.distributed is not installed (the message says what to install).
    ConnectionError
        The scheduler could not be reached; one line, saying so.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ImportError("--scheduler needs dask.distributed: pip install 'tmd_nb[dask]'") from None
    try:
        return Client(address)
    except OSError as exc:  # refused, timed out, unknown host
        why = str(exc).strip().splitlines()[0].replace(f" to {address}", "") if str(exc).strip() else type(exc).__name__
        raise ConnectionError(f"could not reach the scheduler at {address}: {why}") from None


def convert(
    sources: PathLike | Iterable[PathLike],
    out_dir: PathLike,
    *,
    format: str = "npz",
    overwrite: bool = False,
    jobs: int | None = None,
    client: Any = None,
    progress: bool = True,
    channel: int | str | None = None,
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
        Replace whatever file is at an output name. By default an output is skipped when the
        manifest says it came from the same unchanged source and it is intact; an output of
        convert whose source changed, or that is damaged, is converted again; any other file is
        left alone and reported as failed (see :mod:`tmd_nb.batch`, "Whose files are replaced").
    jobs : int, optional
        Local worker processes (default: every available core; ``1`` converts in this process).
        Ignored when ``client`` is given.
    client : dask.distributed.Client, optional
        Run on this Dask cluster instead: paths are sent to the workers, which must see the same
        files.
    progress : bool
        Show a progress bar (a widget in a notebook, text in a terminal).
    channel : str or int, optional
        Of files with several channels (instruments' files): the channel to read, by name or
        index (``tmd_nb.channels(path)`` lists them); None: the topography. Files of one height
        map ignore it. A file without that channel is reported as failed; the others go on.
        The manifest records it: an output made from another channel is converted again.

    Returns
    -------
    ConvertReport
        The converted, skipped and failed files (each failure with its one-line reason), and the
        manifest's path (``OUT/tmd_nb-convert.csv``). A bad file never stops the others; nor does
        a second source with the same output name (the first is converted).

    Raises
    ------
    ValueError
        Unknown format, bad ``jobs``, or a file at the manifest's name that is not a manifest;
        raised before any file is written.
    FileNotFoundError
        A source does not exist or a pattern matches nothing (before any file is written).
    """
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, (str, int))):
        raise TypeError(f"channel must be a channel's name (str), its index (int) or None, not {channel!r}")
    pairs = plan(sources, out_dir, format)
    workers = _job_count(jobs)
    out_root = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out_root, exist_ok=True)
    manifest = os.path.join(out_root, MANIFEST)
    claims = _claims(_tidy(manifest))
    report = ConvertReport(manifest=manifest)
    begun: set[str] = set()  # sources whose output did not exist when this run began converting them
    bar: Any = None
    lists = {"converted": report.converted, "skipped": report.skipped}

    synced = time.monotonic()

    def write(lines: list[Record]) -> None:
        nonlocal synced
        sync = time.monotonic() - synced >= SYNC_INTERVAL
        _append(manifest, lines, sync)
        if sync:
            synced = time.monotonic()

    def start(tasks: list[Task]) -> None:
        """Note the outputs about to be written where nothing is yet: a file found there later is ours."""
        lines = []
        for source, output, _ in tasks:
            if not os.path.lexists(output):
                try:
                    st = os.stat(source)
                except OSError:
                    continue  # the worker reports it
                begun.add(source)
                lines.append(
                    {
                        "source": source,
                        "size": st.st_size,
                        "mtime_ns": st.st_mtime_ns,
                        "output": output,
                        "status": "started",
                    }
                )
        write(lines)

    def done(result: Record) -> None:
        nonlocal bar
        if result["status"] == "skipped" and result["source"] in begun:
            # Absent when this run began it, there now and verified: written by a worker of this run
            # that was stopped before it could say so (a pool broken by another file, a lost Dask worker).
            result["status"] = "converted"
        write([result])
        source = result["source"]
        if result["status"] == "failed":
            report.failed.append((source, result["reason"]))
        else:
            lists[result["status"]].append((source, result["output"]))
        report.notes.extend((source, note) for note in result["notes"])
        if bar is None:  # made late: a "fork" pool must start before tqdm's monitor thread does
            bar = _bar(len(pairs), progress)
        if bar is not None:
            bar.update(1)

    tasks: list[Task] = []
    clashes: list[Record] = []
    first: dict[str, str] = {}
    for source, output in pairs:
        if output in first or source == output:
            reason = (
                f"its output {output!r} is {first[output]!r}'s too; not converted (rename one)"
                if output in first
                else "it would be converted onto itself; choose another output folder"
            )
            clashes.append(_died((source, output, None)) | {"reason": reason})
            continue
        first[output] = source
        tasks.append((source, output, claims.get(output)))
    _remove(atomic.stale_temporaries(manifest, *first))  # what killed saves of these files left
    try:
        if client is not None:
            _run_dask(tasks, format, overwrite, manifest, client, start, done, channel)
        else:
            _run_local(tasks, format, overwrite, manifest, workers, start, done, channel)
        for result in clashes:
            done(result)
    finally:
        if bar is not None:
            bar.close()
        _tidy(manifest)
        _remove(atomic.stale_temporaries(manifest, *first))  # and what workers of this run that died left
    order = {source: i for i, (source, _) in enumerate(pairs)}
    for items in (report.converted, report.skipped, report.failed):
        items.sort(key=lambda item: order[item[0]])
    return report
