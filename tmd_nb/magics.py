"""IPython line magics ``%tmd_export``, ``%tmd_load`` and ``%tmd_panel`` (``%load_ext tmd_nb``).

The work is done by plain functions (:func:`split_line`, :func:`resolve_name`,
:func:`parse_meta`, :func:`export_height_map`, :func:`load_height_map`, :func:`complete`);
:class:`TmdMagics` only parses arguments and prints. Every user mistake becomes a one-line
:class:`~IPython.core.error.UsageError` (IPython shows it without a traceback) and leaves no
file behind: the codec validates before it writes and writes atomically.
"""

from __future__ import annotations

import argparse
import ast
import keyword
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from . import codec
from .display import HeightMapResult, _shape_text, _size_text
from .errors import FormatError, MetadataNotStoredWarning

__all__ = [
    "FORMATS",
    "TmdMagics",
    "complete",
    "export_height_map",
    "load_height_map",
    "load_ipython_extension",
    "parse_meta",
    "resolve_name",
    "split_line",
    "unload_ipython_extension",
]

#: File extension -> format name written by ``%tmd_export``.
FORMATS = {".npz": "npz", ".npy": "npy", ".tmd": "tmd"}
#: Saves and loads that last longer than this many seconds show a progress bar on stderr.
PROGRESS_AFTER = 1.0
#: The metadata a .tmd file holds (see :mod:`tmd_nb.tmd`); other keys are reported as not saved.
TMD_FIELDS = ("x_length", "y_length", "x_offset", "y_offset", "comment")
MAGIC_NAMES = ("tmd_export", "tmd_load", "tmd_panel")
MATCHER_ID = "tmd_nb.magics.complete"


# --------------------------------------------------------------------------- parsing

def split_line(line: str) -> list[str]:
    """Split a magic's argument line into words, shell-like, but keeping Python subscripts whole.

    At the top level, whitespace separates words, quotes group (and are removed) and a
    backslash escapes the next character, as in a shell, so ``"my scans/a.npz"`` is one path.
    Inside brackets (``[]``, ``()``, ``{}``) nothing is split or unquoted, so ``scan["z"]``
    and ``-m tags=["a", "b"]`` reach Python intact.
    """
    words: list[str] = []
    current: list[str] = []
    started = False
    quote: str | None = None
    depth = 0
    i = 0
    while i < len(line):
        char = line[i]
        if depth:
            current.append(char)
            if quote:
                if char == "\\" and i + 1 < len(line):
                    current.append(line[i + 1])
                    i += 1
                elif char == quote:
                    quote = None
            elif char in "\"'":
                quote = char
            elif char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
        elif quote == "'":
            if char == "'":
                quote = None
            else:
                current.append(char)
        elif quote == '"':
            if char == '"':
                quote = None
            elif char == "\\" and i + 1 < len(line) and line[i + 1] in '"\\':
                current.append(line[i + 1])
                i += 1
            else:
                current.append(char)
        elif char.isspace():
            if started:
                words.append("".join(current))
                current, started = [], False
        else:
            started = True
            if char in "\"'":
                quote = char
            elif char == "\\" and i + 1 < len(line):
                current.append(line[i + 1])
                i += 1
            else:
                current.append(char)
                if char in "([{":
                    depth += 1
        i += 1
    if quote:
        raise UsageError(f"unclosed {quote} quote in: {line.strip()}")
    if depth:
        raise UsageError(f"unclosed bracket in: {line.strip()}")
    if started:
        words.append("".join(current))
    return words


def _parse(func: Callable[..., Any], magic: str, line: str) -> argparse.Namespace:
    parser = func.parser  # type: ignore[attr-defined]  # set by @magic_arguments
    words = split_line(line)
    if "-h" in words or "--help" in words:
        print("\n".join(x for x in parser.format_help().splitlines() if x.strip() != "::").strip())
        return argparse.Namespace(help=True)
    try:
        args = parser.parse_args(words)
    except UsageError as exc:
        usage = " ".join(w for w in parser.format_usage().split() if w not in ("usage:", "::"))
        raise UsageError(f"%{magic}: {exc} (usage: {usage}; see %{magic}?)") from None
    args.help = False
    return args


_ALLOWED_SLICE = (ast.Constant, ast.Name, ast.Slice, ast.Tuple, ast.UnaryOp)


def _check_expression(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Attribute):
        _check_expression(node.value, text)
        return
    if isinstance(node, ast.Subscript):
        _check_expression(node.value, text)
        _check_index(node.slice, text)
        return
    raise UsageError(f"{text!r} is not a variable name, attribute or subscript (such as scan or scan['z'])")


def _check_index(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Tuple):
        for element in node.elts:
            _check_index(element, text)
    elif isinstance(node, ast.Slice):
        for part in (node.lower, node.upper, node.step):
            if part is not None:
                _check_index(part, text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return
    elif not isinstance(node, (ast.Constant, ast.Name)):
        raise UsageError(f"{text!r}: only constants and variable names may be used as subscripts")


def _evaluate(node: ast.AST, namespace: Mapping[str, Any], text: str) -> Any:
    """Walk a checked expression; never calls ``eval``."""
    if isinstance(node, ast.Name):
        try:
            return namespace[node.id]
        except KeyError:
            raise UsageError(f"name {node.id!r} is not defined") from None
    if isinstance(node, ast.Attribute):
        value = _evaluate(node.value, namespace, text)
        try:
            return getattr(value, node.attr)
        except AttributeError:
            raise UsageError(f"{text}: {type(value).__name__} object has no attribute {node.attr!r}") from None
    if isinstance(node, ast.Subscript):
        value = _evaluate(node.value, namespace, text)
        key = _evaluate_index(node.slice, namespace, text)
        try:
            return value[key]
        except (KeyError, IndexError, TypeError) as exc:
            what = "key" if isinstance(exc, KeyError) else "index"
            raise UsageError(f"{text}: bad {what} {key!r} for {type(value).__name__} ({exc})") from None
    raise AssertionError(f"unchecked node {node!r}")  # _check_expression ran first


def _evaluate_index(node: ast.AST, namespace: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate_index(e, namespace, text) for e in node.elts)
    if isinstance(node, ast.Slice):
        parts = [None if p is None else _evaluate_index(p, namespace, text) for p in (node.lower, node.upper, node.step)]
        return slice(*parts)
    if isinstance(node, ast.Name):
        return _evaluate(node, namespace, text)
    return ast.literal_eval(node)


def resolve_name(text: str, namespace: Mapping[str, Any]) -> Any:
    """The object ``text`` names in ``namespace``: a name, ``a.b`` attribute or ``a["k"]``/``a[0]`` item.

    Parsed with :mod:`ast` and walked by hand, so nothing but attribute and item access runs.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise UsageError(f"{text!r} is not a variable name, attribute or subscript (such as scan or scan['z'])") from None
    _check_expression(tree.body, text)
    return _evaluate(tree.body, namespace, text)


def parse_meta(items: list[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict; VALUE is a Python literal when it parses as one, else text."""
    meta: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"-m/--meta expects KEY=VALUE, got {item!r}")
        if key == codec.HEIGHT_MAP:
            raise UsageError("-m/--meta cannot set 'height_map': it is the array being saved")
        try:
            value: Any = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
        meta[key] = value
    return meta


# --------------------------------------------------------------------------- progress

class ProgressBar:
    """``progress(done, total)`` callback that draws a text bar on ``stream`` only for slow jobs.

    Nothing is drawn during the first :data:`PROGRESS_AFTER` seconds, so a small save prints
    only its success line. Redraws are throttled; ``close()`` ends the line if one was drawn.
    """

    def __init__(self, label: str, stream: TextIO | None = None, *, after: float | None = None,
                 clock: Callable[[], float] = time.monotonic, width: int = 30) -> None:
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
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        stream = self.stream or sys.stderr
        stream.write(f"\r{self.label} [{bar}] {fraction:4.0%} of {_size_text(total)}")
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


def _not_saved_note(ext: str, holds: str, lost: list[Any]) -> str:
    keys = ", ".join(repr(k) for k in lost[:5]) + (", ..." if len(lost) > 5 else "")
    return (f"note: {ext} stores {holds} only; {len(lost)} metadata key{'s' if len(lost) != 1 else ''} "
            f"not saved ({keys}); use .npz to keep them")


def export_height_map(data: Any, path: str, *, what: str = "data", force: bool = False, compress: bool = True,
                      meta: Mapping[str, Any] | None = None, progress: Callable[[int, int], None] | None = None
                      ) -> ExportReport:
    """Save ``data`` (2-D array or dict with "height_map") to ``path``, the format chosen by its extension.

    ``meta`` is merged into a shallow copy (``data`` itself is never modified). An existing
    file is refused unless ``force``. User mistakes raise :class:`UsageError` naming ``what``
    or the path; nothing is written then.
    """
    path = expand_path(path)
    ext = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise UsageError(f"cannot tell the format of {path!r} from its extension: use .npz, .npy or .tmd")
    if not compress and fmt != "npz":
        raise UsageError(f"--no-compress applies to .npz files only, not {ext}")
    try:
        array, base_meta = codec.split_height_map(data, what)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    merged = {codec.HEIGHT_MAP: array, **base_meta, **(meta or {})}
    if fmt == "npz":
        try:  # validate the metadata before touching the file system
            codec.encode_npz_members(merged)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{what}: {exc}") from None
    if os.path.isdir(path):
        raise UsageError(f"{path!r} is a directory; give a file name ending in {ext or '.npz'}")
    if os.path.lexists(path) and not force:
        raise UsageError(f"{path!r} already exists; use -f to overwrite it")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"cannot save to {path!r}: directory {parent!r} does not exist")

    notes: list[str] = []
    n_meta = len(merged) - 1
    start = time.perf_counter()
    try:
        if fmt == "npz":
            written = codec.export_to_npz(merged, path, compress=compress, progress=progress)
        elif fmt == "npy":
            if n_meta:
                notes.append(_not_saved_note(".npy", "the height map", list(merged)[1:]))
            written = codec.export_to_npy(array, path, progress=progress)
        else:
            from .tmd import export_to_tmd

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", MetadataNotStoredWarning)
                try:
                    written = export_to_tmd(merged, path, progress=progress)
                except (TypeError, ValueError) as exc:
                    if isinstance(exc, FormatError):
                        raise
                    raise UsageError(f"{what}: {exc}") from None
            for warning in caught:
                if not issubclass(warning.category, MetadataNotStoredWarning):
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            if any(issubclass(w.category, MetadataNotStoredWarning) for w in caught):
                lost = [k for k in merged if k not in TMD_FIELDS and k not in (codec.HEIGHT_MAP, "tmd_version")]
                notes.append(_not_saved_note(".tmd", "the height map, lengths, offsets and comment", lost))
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(_describe_os_error(exc, path, "write")) from None
    seconds = time.perf_counter() - start
    written = os.fspath(written)
    if fmt == "npy":
        stored = 0
    elif fmt == "tmd":
        stored = sum(1 for key in merged if key in TMD_FIELDS)
    else:
        stored = n_meta
    return ExportReport(path=written, format=fmt, shape=tuple(array.shape), dtype=str(array.dtype),
                        metadata_keys=stored, size=os.path.getsize(written),
                        seconds=seconds, notes=notes)


def load_height_map(path: str, *, progress: Callable[[int, int], None] | None = None) -> HeightMapResult:
    """Load an NPZ, NPY or TMD file (recognised by content) as a :class:`HeightMapResult`."""
    path = expand_path(path)
    try:
        data = codec.load(path, progress=progress)
    except FormatError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(_describe_os_error(exc, path, "read")) from None
    return HeightMapResult(data)


def _seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def export_message(name: str, report: ExportReport) -> str:
    """The one success line of ``%tmd_export``."""
    keys = f"{report.metadata_keys} metadata key{'s' if report.metadata_keys != 1 else ''}"
    return (f"Saved {name} ({_shape_text(report.shape)} {report.dtype}, {keys}) to {report.path} "
            f"({_size_text(report.size)}, {report.format.upper()}) in {_seconds_text(report.seconds)}")


def load_message(path: str, name: str, result: Mapping[str, Any], seconds: float) -> str:
    """The one line ``%tmd_load -n NAME`` prints."""
    array = result[codec.HEIGHT_MAP]
    n_meta = len(result) - 1
    return (f"Loaded {path} into {name} ({_shape_text(array.shape)} {array.dtype}, {n_meta} metadata "
            f"key{'s' if n_meta != 1 else ''}) in {_seconds_text(seconds)}")


# --------------------------------------------------------------------------- completion

def _tokenize_partial(text: str) -> tuple[list[str], str, str, str | None]:
    """Split the text before the cursor like :func:`split_line`, tolerating an unfinished last word.

    Returns the finished words, the raw text of the word being typed (what completions
    replace), its value with top-level quotes removed, and its still-open quote, if any.
    """
    words: list[str] = []
    current: list[str] = []
    raw_start: int | None = None
    quote: str | None = None
    depth = 0
    for i, char in enumerate(text):
        if raw_start is None:
            if char.isspace():
                continue
            raw_start = i
        if quote:
            if char == quote:
                quote = None
                if depth:
                    current.append(char)
            else:
                current.append(char)
        elif char in "\"'":
            quote = char
            if depth:
                current.append(char)
        elif depth:
            current.append(char)
            if char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
        elif char.isspace():
            words.append("".join(current))
            current, raw_start = [], None
        else:
            current.append(char)
            if char in "([{":
                depth += 1
    raw = text[raw_start:] if raw_start is not None else ""
    return words, raw, "".join(current), quote if depth == 0 else None


def _is_exportable(value: Any) -> bool:
    if isinstance(value, Mapping):
        try:
            value = value.get(codec.HEIGHT_MAP)
        except Exception:  # noqa: BLE001 - a user mapping's get() may do anything; completion must not fail
            return False
    return (isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype.kind in "biufc"
            and value.dtype.fields is None and not isinstance(value, np.ma.MaskedArray))


def exportable_names(namespace: Mapping[str, Any], prefix: str = "") -> list[str]:
    """User variables ``%tmd_export`` can save: 2-D numeric arrays and dicts with a 2-D "height_map"."""
    return sorted(name for name, value in list(namespace.items())
                  if name.startswith(prefix) and not name.startswith("_") and _is_exportable(value))


def path_candidates(typed: str, extensions: tuple[str, ...] = tuple(FORMATS)) -> list[str]:
    """Directories (ending in ``/``) and files with one of ``extensions`` that complete ``typed``.

    ``~`` is expanded for the lookup and kept in the result; hidden entries are offered only
    when the typed name starts with a dot.
    """
    expanded = os.path.expanduser(typed)
    directory, stem = os.path.split(expanded)
    shown_dir = typed[: len(typed) - len(stem)] if stem else typed
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return []
    results = []
    for entry in entries:
        name = entry.name
        if not name.startswith(stem) or (name.startswith(".") and not stem.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            results.append(shown_dir + name + "/")
        elif name.lower().endswith(extensions):
            results.append(shown_dir + name)
    return sorted(results)[:500]


_NEEDS_QUOTES = set(" \t\"'\\$#&;|<>()[]{}*?!`")


def _quote_path(candidate: str, open_quote: str | None) -> str:
    """The text that replaces the typed word: quoted when it holds spaces or shell-ish characters."""
    quote = open_quote
    if quote is None and _NEEDS_QUOTES & set(candidate):
        quote = "'" if '"' in candidate else '"'
    if quote is None:
        return candidate
    closing = "" if candidate.endswith("/") else quote
    return f"{quote}{candidate}{closing}"


_VALUE_OPTIONS = {"tmd_export": {"-m", "--meta"}, "tmd_load": {"-n", "--name"}, "tmd_panel": set()}
_OPTIONS = {"tmd_export": ["--force", "--meta", "--no-compress", "-f", "-m"],
            "tmd_load": ["--name", "-n"],
            "tmd_panel": ["--load"]}
_MAGIC_LINE = re.compile(r"\s*(?:(?P<target>[A-Za-z_]\w*)\s*=\s*)?(?P<percent>%?)(?P<magic>tmd_export|tmd_load|tmd_panel)"
                         r"\s+(?P<args>.*)", re.DOTALL)


def complete(line_before_cursor: str, namespace: Mapping[str, Any]) -> tuple[str, list[str], str] | None:
    """Completions for the argument being typed on a ``%tmd_export``/``%tmd_load``/``%tmd_panel`` line.

    Returns ``(typed, candidates, kind)``: ``typed`` is the raw text the candidates replace
    (with its opening quote, if any), ``kind`` is "variable", "path" or "option". ``None``
    when the line is not one of our magics.
    """
    match = _MAGIC_LINE.fullmatch(line_before_cursor)
    if match is None or (match["target"] and not match["percent"]):
        return None
    magic = match["magic"]
    words, typed, value, open_quote = _tokenize_partial(match["args"])
    if words and words[-1] in _VALUE_OPTIONS[magic]:
        return typed, [], "option"  # an option's value: nothing sensible to offer
    if typed.startswith("-"):
        return typed, [o for o in _OPTIONS[magic] if o.startswith(typed)], "option"
    if typed[:1] in ("\"", "'") and open_quote is None:
        return typed, [], "path"  # a finished quoted word
    positionals: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in _VALUE_OPTIONS[magic]:
            skip = True
        elif not word.startswith("-"):
            positionals.append(word)
    if magic == "tmd_export" and not positionals:
        if typed and not typed.isidentifier():
            return typed, [], "variable"  # scan["z"] and such: leave it to IPython's own completers
        return typed, exportable_names(namespace, typed), "variable"
    if (magic == "tmd_export" and len(positionals) == 1) or (magic == "tmd_load" and not positionals):
        return typed, [_quote_path(c, open_quote) for c in path_candidates(value)], "path"
    return typed, [], "path"


def _make_matcher(shell: Any) -> Callable[..., Any]:
    """An IPython (>= 8.6) context matcher that completes our magics' arguments."""
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher(identifier=MATCHER_ID, priority=100)
    def tmd_nb_matcher(context: Any) -> dict[str, Any]:
        before = context.text_until_cursor
        found = complete(before, shell.user_ns)
        if found is None or not found[1] or not before.endswith(found[0]):
            return {"completions": [], "suppress": False}
        typed, candidates, kind = found
        return {
            "completions": [SimpleCompletion(text=c, type=kind) for c in candidates],
            "matched_fragment": typed,
            "suppress": True,
            "ordered": True,
        }

    return tmd_nb_matcher


# --------------------------------------------------------------------------- magics

@magics_class
class TmdMagics(Magics):
    """Save and load height maps from the notebook: ``%tmd_export``, ``%tmd_load``, ``%tmd_panel``."""

    @magic_arguments()
    @argument("-f", "--force", action="store_true", help="overwrite PATH if it exists (otherwise it is refused)")
    @argument("--no-compress", dest="compress", action="store_false",
              help="store the NPZ members uncompressed (faster, larger)")
    @argument("-m", "--meta", action="append", metavar="KEY=VALUE", default=[],
              help="add or override a metadata entry; VALUE is a Python literal (42, 1.5, 'um', [1, 2], True) "
                   "when it parses as one, else text. Repeatable.")
    @argument("name", metavar="NAME",
              help="the variable to save: a 2-D array or a dict with 'height_map' (also scan.z, scan['z'], stack[0])")
    @argument("path", metavar="PATH", help="file to write; .npz (with metadata), .npy (array only) or .tmd")
    @line_magic
    def tmd_export(self, line: str) -> None:
        """Save a height map from the namespace to an NPZ, NPY or TMD file.

        The format follows PATH's extension. Prints one line: what was saved, its shape and
        dtype, the number of metadata keys, the path, the file size and the time taken.
        Quote paths with spaces; ``~``, ``$var`` and ``{expr}`` are expanded.

        Examples::

            %tmd_export scan scan.npz
            %tmd_export z "results/run 3.npy" -f
            %tmd_export scan scan.npz -m units=um -m pixel_size=0.5e-6 -m note="first pass"
        """
        args = _parse(self.tmd_export, "tmd_export", line)
        if args.help:
            return
        data = resolve_name(args.name, self.shell.user_ns)
        meta = parse_meta(args.meta)
        bar = ProgressBar(f"saving {args.path}")
        try:
            report = export_height_map(data, args.path, what=args.name, force=args.force, compress=args.compress,
                                       meta=meta, progress=bar)
        finally:
            bar.close()
        for note in report.notes:
            print(note, file=sys.stderr)
        print(export_message(args.name, report))

    @magic_arguments()
    @argument("-n", "--name", metavar="NAME", help="bind the result to this variable and print one line")
    @argument("path", metavar="PATH", help="an .npz, .npy or .tmd file (recognised by its content)")
    @line_magic
    def tmd_load(self, line: str) -> HeightMapResult | None:
        """Load a height map and its metadata from an NPZ, NPY or TMD file.

        Returns ``{"height_map": array, **metadata}`` (a dict that displays as a summary and
        a small picture), so ``scan = %tmd_load scan.npz`` works; with ``-n NAME`` it is bound
        to NAME instead and one line is printed.

        Examples::

            scan = %tmd_load scan.npz
            %tmd_load ~/data/sample.tmd -n sample
        """
        args = _parse(self.tmd_load, "tmd_load", line)
        if args.help:
            return None
        if args.name is not None and (not args.name.isidentifier() or keyword.iskeyword(args.name)):
            raise UsageError(f"-n/--name needs a valid Python variable name, not {args.name!r}")
        bar = ProgressBar(f"loading {args.path}")
        start = time.perf_counter()
        try:
            result = load_height_map(args.path, progress=bar)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        if args.name is None:
            return result
        self.shell.push({args.name: result})
        print(load_message(expand_path(args.path), args.name, result, seconds))
        return None

    @magic_arguments()
    @argument("--load", action="store_true", help="show the load panel instead of the export panel")
    @line_magic
    def tmd_panel(self, line: str) -> None:
        """Show the ipywidgets panel for exporting namespace variables (or, with --load, for loading files)."""
        args = _parse(self.tmd_panel, "tmd_panel", line)
        if args.help:
            return
        from IPython.display import display

        from . import panel

        cls = panel.LoadPanel if args.load else panel.ExportPanel
        display(cls(namespace=self.shell.user_ns))


# --------------------------------------------------------------------------- extension

def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and the argument completer on ``ipython``."""
    ipython.register_magics(TmdMagics)
    completer = getattr(ipython, "Completer", None)
    if completer is not None:
        completer.custom_matchers[:] = [m for m in completer.custom_matchers
                                        if getattr(m, "matcher_identifier", None) != MATCHER_ID]
        completer.custom_matchers.append(_make_matcher(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Remove what :func:`load_ipython_extension` registered (magics and completer)."""
    manager = ipython.magics_manager
    for name in MAGIC_NAMES:
        owner = getattr(manager.magics["line"].get(name), "__self__", None)
        if type(owner).__name__ == TmdMagics.__name__ and type(owner).__module__ == __name__:
            del manager.magics["line"][name]
    manager.registry.pop(TmdMagics.__name__, None)
    completer = getattr(ipython, "Completer", None)
    if completer is not None:
        completer.custom_matchers[:] = [m for m in completer.custom_matchers
                                        if getattr(m, "matcher_identifier", None) != MATCHER_ID]


