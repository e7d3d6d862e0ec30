"""IPython line magics ``%tmd_export``, ``%tmd_load``, ``%tmd_panel`` and ``%tmd_convert`` (``%load_ext tmd_nb``).

The work is done by plain functions: :mod:`tmd_nb.notebook.arguments` reads the argument line,
:func:`export_height_map` and :func:`load_height_map` below save and load, and
:mod:`tmd_nb.notebook.completion` completes. :class:`TmdMagics` only parses arguments and prints. Every
user mistake becomes a one-line :class:`~IPython.core.error.UsageError` (IPython shows it
without a traceback) and leaves no file behind: the codec validates before it writes and
writes atomically.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from ..errors import FormatError
from ..formats import registry
from ..heightmap import HEIGHT_MAP, keys_text, split_height_map
from ..storage.deflate import LEVEL_NAMES, Level, level_problem
from .arguments import Syntax, name_problem, parse_level, parse_line, parse_meta, resolve_name, syntax_of
from .completion import register_completer, unregister_completer
from .display import HeightMapResult, count_text, shape_text, size_text
from .saving import keeping_all, save_reporting

__all__ = [
    "TmdMagics",
    "export_height_map",
    "load_height_map",
    "load_ipython_extension",
    "unload_ipython_extension",
]

#: Saves and loads that last longer than this many seconds show a progress bar on stderr.
PROGRESS_AFTER = 1.0
#: What ``%tmd_panel`` says where widgets cannot show (a terminal), instead of printing a widget's repr.
PANEL_NEEDS_JUPYTER = (
    "%tmd_panel: the panel is a Jupyter widget; open this in JupyterLab, Jupyter Notebook or VS Code "
    "(in a terminal, use %tmd_export and %tmd_load)"
)


def _writable_formats() -> list[str]:
    """The names ``--format`` accepts and completes: formats that can write a file."""
    return [f.name for f in registry.FORMATS if f.save is not None]


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """``progress(done, total)`` callback that draws a text bar on ``stream`` only for slow jobs.

    Nothing is drawn during the first :data:`PROGRESS_AFTER` seconds, so a small save prints
    only its success line. Redraws are throttled; ``close()`` ends the line if one was drawn.
    """

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        *,
        after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int = 30,
    ) -> None:
        self.label = label
        self.stream = stream
        self.after = PROGRESS_AFTER if after is None else after
        self.clock = clock
        self.width = width
        self.start = clock()
        self.shown = False
        self._last = -1.0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.start < self.after or (not self.shown and done >= total):
            return
        if self.shown and now - self._last < 0.1 and done < total:
            return
        self._last = now
        self.shown = True
        fraction = min(1.0, done / total) if total > 0 else 1.0
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        stream = self.stream or sys.stderr
        stream.write(f"\r{self.label} [{bar}] {fraction:4.0%} of {size_text(total)}")
        stream.flush()

    def close(self) -> None:
        if self.shown:
            stream = self.stream or sys.stderr
            stream.write("\n")
            stream.flush()


# --------------------------------------------------------------------------- core


@dataclass
class ExportReport:
    """What :func:`export_height_map` did, for the one-line message."""

    path: str
    format: str
    shape: tuple[int, ...]
    dtype: str
    metadata_keys: int
    size: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def _describe_os_error(exc: OSError, path: str, action: str) -> str:
    if isinstance(exc, FileNotFoundError) and action == "read":
        return f"no such file: {path!r}"
    if isinstance(exc, IsADirectoryError):
        return f"{path!r} is a directory, not a file"
    reason = exc.strerror or str(exc)
    return f"cannot {action} {path!r}: {reason}"


def expand_path(path: str) -> str:
    """``~`` expanded; ``$var``/``{expr}`` were already expanded by IPython."""
    return os.path.expanduser(path)


def export_height_map(
    data: Any,
    path: str,
    *,
    what: str = "data",
    force: bool = False,
    compress: bool = True,
    level: Level = None,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Save ``data`` (2-D array or dict with "height_map") to ``path``, the format chosen by its extension.

    ``meta`` is merged into a shallow copy (``data`` itself is never modified). ``level`` is a
    compression level (see :mod:`tmd_nb.storage.deflate`), for formats that compress. An existing
    file is refused unless ``force``. User mistakes raise :class:`UsageError` naming ``what``
    or the path; nothing is written then.
    """
    path = expand_path(path)
    ext = os.path.splitext(path)[1].lower()
    fmt = registry.by_extension(ext, writing=True)
    if fmt is None:
        raise UsageError(
            f"cannot tell the format of {path!r} from its extension: "
            f"use {registry.one_of(list(registry.extensions(writing=True)))}"
        )
    if not compress and "compress" not in fmt.options:
        takers = registry.one_of([e for f in registry.taking("compress") for e in f.extensions])
        raise UsageError(f"--no-compress applies to {takers} files only, not {ext}")
    if level is not None:
        if level_problem(level) is not None:
            raise UsageError(f"--level must be {registry.one_of(list(LEVEL_NAMES))} or 0-9 as in zlib, not {level!r}")
        if "level" not in fmt.options:
            takers = registry.one_of([e for f in registry.taking("level") for e in f.extensions])
            raise UsageError(f"--level applies to {takers} files only, not {ext}")
        if not compress:
            raise UsageError("--level and --no-compress contradict each other; give one of them")
    try:
        array, base_meta = split_height_map(data, what)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    merged = {HEIGHT_MAP: array, **base_meta, **(meta or {})}
    if fmt.check is not None:
        try:  # validate the metadata before touching the file system
            fmt.check(merged)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{what}: {exc}") from None
    if os.path.isdir(path):
        raise UsageError(f"{path!r} is a directory; give a file name ending in {ext or '.npz'}")
    if os.path.lexists(path) and not force:
        raise UsageError(f"{path!r} already exists; use -f to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot save to {path!r}: directory {parent!r} does not exist")

    start = time.perf_counter()
    try:
        saved = save_reporting(merged, path, format=fmt.name, compress=compress, level=level, progress=progress)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    except (TypeError, ValueError) as exc:  # what the format cannot hold, e.g. a non-ASCII .tmd comment
        raise UsageError(f"{what}: {exc}") from None
    except OSError as exc:
        raise UsageError(_describe_os_error(exc, path, "write")) from None
    seconds = time.perf_counter() - start
    notes = []
    if saved.lost:
        notes.append(
            f"note: {ext} stores {fmt.holds} only; {count_text(len(saved.lost), 'metadata key')} "
            f"not saved ({keys_text(saved.lost)}); use {keeping_all()} to keep them"
        )
    return ExportReport(
        path=saved.path,
        format=fmt.name,
        shape=tuple(array.shape),
        dtype=str(array.dtype),
        metadata_keys=saved.stored,
        size=os.path.getsize(saved.path),
        seconds=seconds,
        notes=notes,
    )


def load_height_map(
    path: str, *, channel: int | str | None = None, progress: Callable[[int, int], None] | None = None
) -> HeightMapResult:
    """Load any registered format (recognised by content) as a :class:`HeightMapResult`.

    ``channel`` picks one channel of an instrument's file (a name, or an index).
    """
    path = expand_path(path)
    try:
        data = registry.load(path, channel=channel, progress=progress)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    except (KeyError, ValueError) as exc:  # no such channel: the message lists the file's channels
        raise UsageError(str(exc.args[0]) if exc.args else str(exc)) from None
    except OSError as exc:
        raise UsageError(_describe_os_error(exc, path, "read")) from None
    return HeightMapResult(data)


def _seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def export_message(name: str, report: ExportReport) -> str:
    """The one success line of ``%tmd_export``."""
    keys = count_text(report.metadata_keys, "metadata key")
    return (
        f"Saved {name} ({shape_text(report.shape)} {report.dtype}, {keys}) to {report.path} "
        f"({size_text(report.size)}, {report.format.upper()}) in {_seconds_text(report.seconds)}"
    )


def load_message(path: str, name: str, result: Mapping[str, Any], seconds: float) -> str:
    """The one line ``%tmd_load -n NAME`` prints."""
    array = result[HEIGHT_MAP]
    return (
        f"Loaded {path} into {name} ({shape_text(array.shape)} {array.dtype}, "
        f"{count_text(len(result) - 1, 'metadata key')}) in {_seconds_text(seconds)}"
    )


# --------------------------------------------------------------------------- magics


@magics_class
class TmdMagics(Magics):
    """Save, load and convert height maps: ``%tmd_export``, ``%tmd_load``, ``%tmd_panel``, ``%tmd_convert``."""

    def _user_shell(self) -> InteractiveShell:
        """The shell the magics were registered with (always set once IPython has loaded them)."""
        if self.shell is None:
            raise UsageError("the tmd_nb magics are not registered with an IPython shell")
        return self.shell

    @magic_arguments()
    @argument("-f", "--force", action="store_true", help="overwrite PATH if it exists (otherwise it is refused)")
    @argument(
        "--no-compress",
        dest="compress",
        action="store_false",
        help="store the NPZ members uncompressed (faster, larger)",
    )
    @argument(
        "--level",
        metavar="LEVEL",
        default=None,
        help=f"NPZ compression: {', '.join(LEVEL_NAMES)} (fastest is the default; balanced: within 1%% of "
        "numpy's size; smallest: smaller than numpy's) or 0-9 as in zlib",
    )
    @argument(
        "-m",
        "--meta",
        action="append",
        metavar="KEY=VALUE",
        default=[],
        help="add or override a metadata entry; VALUE is a Python literal (42, 1.5, 'um', [1, 2], True) "
        "when it parses as one, else text. Repeatable.",
    )
    @argument(
        "name",
        metavar="NAME",
        help="the variable to save: a 2-D array or a dict with 'height_map' (also scan.z, scan['z'], stack[0])",
    )
    @argument(
        "path",
        metavar="PATH",
        help="file to write; the extension picks the format: "
        + registry.one_of(list(registry.extensions(writing=True))),
    )
    @line_magic
    def tmd_export(self, line: str) -> None:
        """Save a height map from the namespace to an NPZ, NPY, TMD, X3P or GWY file.

        The format follows PATH's extension. Prints one line: what was saved, its shape and
        dtype, the number of metadata keys, the path, the file size and the time taken.
        Quote paths with spaces; ``~``, ``$var`` and ``{expr}`` are expanded.

        Examples::

            %tmd_export scan scan.npz
            %tmd_export z "results/run 3.npy" -f
            %tmd_export scan scan.npz -m lateral_unit=um -m height_unit=nm -m note="first pass"
            %tmd_export scan scan.npz -m units=um -m x_length=640 -m y_length=480
            %tmd_export scan scan.npz --level balanced

        Units: ``lateral_unit`` (of ``x_length``, ``y_length`` and the offsets) and ``height_unit``;
        ``units`` is the shorthand for both, and a specific key wins over it. Without any, lengths
        are read as millimetres, as in ``.tmd`` files (docs/FORMAT.md, "Physical keys").
        """
        args = parse_line(self.tmd_export.parser, "tmd_export", line)
        if args.help:
            return
        data = resolve_name(args.name, self._user_shell().user_ns)
        meta = parse_meta(args.meta)
        bar = ProgressBar(f"saving {args.path}")
        try:
            report = export_height_map(
                data,
                args.path,
                what=args.name,
                force=args.force,
                compress=args.compress,
                level=parse_level(args.level),
                meta=meta,
                progress=bar,
            )
        finally:
            bar.close()
        for note in report.notes:
            print(note, file=sys.stderr)
        print(export_message(args.name, report))

    @magic_arguments()
    @argument("-n", "--name", metavar="NAME", help="bind the result to this variable and print one line")
    @argument(
        "-c",
        "--channel",
        metavar="CHANNEL",
        help="of an instrument's file: the channel to read, by name or index (default: the topography)",
    )
    @argument(
        "path",
        metavar="PATH",
        help=f"a {registry.readable_text()} (recognised by its content)",
    )
    @line_magic
    def tmd_load(self, line: str) -> HeightMapResult | None:
        """Load a height map and its metadata from an NPZ, NPY, TMD, X3P or GWY file, or an instrument's.

        ``-c CHANNEL`` picks a channel of an instrument's file by name or index (default: the
        topography); ``tmd_nb.channels(path)`` lists them.

        Returns ``{"height_map": array, **metadata}`` (a dict that displays as a summary and
        a small picture), so ``scan = %tmd_load scan.npz`` works; with ``-n NAME`` it is bound
        to NAME instead and one line is printed.

        Examples::

            scan = %tmd_load scan.npz
            %tmd_load ~/data/sample.tmd -n sample
            %tmd_load afm.spm -c Phase -n phase
        """
        args = parse_line(self.tmd_load.parser, "tmd_load", line)
        if args.help:
            return None
        problem = None if args.name is None else name_problem(args.name)
        if problem is not None:
            raise UsageError(f"-n/--name: {problem}")
        bar = ProgressBar(f"loading {args.path}")
        start = time.perf_counter()
        try:
            channel = (
                int(args.channel) if args.channel is not None and args.channel.lstrip("-").isdigit() else args.channel
            )
            result = load_height_map(args.path, channel=channel, progress=bar)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        if args.name is None:
            return result
        self._user_shell().push({args.name: result})
        print(load_message(expand_path(args.path), args.name, result, seconds))
        return None

    @magic_arguments()
    @argument("--load", action="store_true", help="show the load panel instead of the export panel")
    @line_magic
    def tmd_panel(self, line: str) -> None:
        """Show the ipywidgets panel for exporting namespace variables (or, with --load, for loading files)."""
        args = parse_line(self.tmd_panel.parser, "tmd_panel", line)
        if args.help:
            return
        formatter = self._user_shell().display_formatter
        if formatter is not None and "text/html" not in formatter.active_types:
            # a terminal shows plain text only: a widget would print as its repr
            print(PANEL_NEEDS_JUPYTER, file=sys.stderr)
            return
        from IPython.display import display

        from . import panel

        cls = panel.LoadPanel if args.load else panel.ExportPanel
        display(cls(namespace=self._user_shell().user_ns))

    @magic_arguments()
    @argument("sources", nargs="+", metavar="SRC", help="scan files, folders or glob patterns ('**' recurses)")
    @argument("-o", "--out", required=True, metavar="OUT", help="output folder (created if needed)")
    @argument("--format", default="npz", choices=registry.names(writing=True), help="output format (default: npz)")
    @argument("--jobs", type=int, metavar="N", help="local worker processes (default: every core)")
    @argument("--scheduler", metavar="ADDRESS", help="run on this dask.distributed scheduler instead")
    @argument("--overwrite", action="store_true", help="replace whatever file is at an output name")
    @argument(
        "--channel",
        metavar="CHANNEL",
        help="of instruments' files: the channel to read, by name or index (default: the topography)",
    )
    @line_magic
    def tmd_convert(self, line: str) -> Any:
        """Convert scan files or whole folders, in parallel, with a progress bar: ``tmd_nb.convert``.

        Returns the report (converted, skipped and failed files), so ``report = %tmd_convert ...``
        works. Running it again after an interruption converts only what is missing.

        Examples::

            %tmd_convert scans/ -o converted/
            report = %tmd_convert "scans/**/*.tmd" -o out --format npy --jobs 2
        """
        args = parse_line(self.tmd_convert.parser, "tmd_convert", line)
        if args.help:
            return None
        if args.jobs is not None and args.jobs < 1:
            raise UsageError(f"%tmd_convert: --jobs must be at least 1, not {args.jobs}")
        from ..batch import connect, convert

        client = None
        try:
            if args.scheduler:
                client = connect(args.scheduler)
            return convert(
                [expand_path(s) for s in args.sources],
                expand_path(args.out),
                format=args.format,
                overwrite=args.overwrite,
                jobs=args.jobs,
                client=client,
                channel=int(args.channel) if args.channel and args.channel.lstrip("-").isdigit() else args.channel,
            )
        except (ValueError, FileNotFoundError, ImportError, ConnectionError) as exc:
            raise UsageError(f"%tmd_convert: {exc}") from None
        finally:
            if client is not None:
                client.close()


# --------------------------------------------------------------------------- extension


def syntaxes() -> dict[str, Syntax]:
    """What completion needs to know of each magic's argument line, read from its parser."""
    return {  # one entry per line magic of TmdMagics; the test suite checks they match
        "tmd_export": syntax_of(TmdMagics.tmd_export.parser, ("variable", "path")),
        "tmd_load": syntax_of(TmdMagics.tmd_load.parser, ("path",)),
        "tmd_panel": syntax_of(TmdMagics.tmd_panel.parser, ()),
        # SRC... : any number of sources; the first eight complete as paths.
        "tmd_convert": syntax_of(TmdMagics.tmd_convert.parser, ("path",) * 8),
    }


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and the argument completer on ``ipython``."""
    ipython.register_magics(TmdMagics)
    register_completer(ipython, syntaxes())


def unload_ipython_extension(ipython: Any) -> None:
    """Remove what :func:`load_ipython_extension` registered (magics and completer)."""
    manager = ipython.magics_manager
    for name in TmdMagics.magics["line"]:
        owner = getattr(manager.magics["line"].get(name), "__self__", None)
        if type(owner).__name__ == TmdMagics.__name__ and type(owner).__module__ == __name__:
            del manager.magics["line"][name]
    manager.registry.pop(TmdMagics.__name__, None)
    unregister_completer(ipython)
