"""ipywidgets panels that export and load height maps without typing any options.

:class:`ExportPanel` lists the height maps of a namespace (2-D numeric arrays and dicts with a
``"height_map"`` entry), shows a small preview and summary of the selected one, lets the user edit
its metadata as typed rows and saves it as NPZ (compressed or not), NPY or TMD through the same
writers as :func:`tmd_nb.export_to_npz` and friends, so the file is exactly what they would write.
:class:`LoadPanel` is the reverse: pick a file, look at its summary and preview, bind it to a
variable name.

Design rules, because a panel is used by people who never read the docs:

* a metadata value is never silently turned into a string: each editable row has a type, its text
  is parsed on every change, and an invalid row is marked and blocks saving with a message naming
  the key; values the editor cannot represent exactly (arrays, nested structures, numpy scalars...)
  are shown read-only and saved unchanged;
* an existing file is never replaced without an explicit tick on "Overwrite";
* errors end up as one plain sentence in the status line, never as a traceback;
* nothing converts a height map to text (the picker shows shape and dtype only) and the preview is
  drawn from a downsampled view (:func:`tmd_nb.notebook.display.preview_png`).

Every child widget carries a stable CSS class (``tmd-panel-*``), for styling and browser tests.
"""

from __future__ import annotations

import ast
import datetime as dt
import html
import keyword
import os
import time
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import ipywidgets as widgets
import numpy as np

from ..errors import FormatError
from ..formats import metadata, registry
from ..heightmap import exportable, keys_text, split_height_map
from .arguments import is_variable_name
from .display import (
    HeightMapResult,
    count_text,
    preview_png,
    shape_text,
    short_repr,
    size_text,
    stats_text,
    summary,
    summary_html,
)
from .saving import save_reporting

__all__ = ["SUGGESTED_KEYS", "VALUE_TYPES", "ExportPanel", "LoadPanel", "parse_value"]

#: Keys offered in the key field of a metadata row, with the type they usually have.
SUGGESTED_KEYS: dict[str, str] = {
    "units": "str",
    "x_length": "float",
    "y_length": "float",
    "source": "str",
    "timestamp": "datetime",
}

#: (label, type name) of the type dropdown of a metadata row.
VALUE_TYPES: list[tuple[str, str]] = [
    ("str", "str"),
    ("int", "int"),
    ("float", "float"),
    ("bool", "bool"),
    ("None", "None"),
    ("datetime", "datetime"),
    ("date", "date"),
    ("literal (list, tuple, complex, bytes)", "literal"),
]
_TYPE_NAMES = {name for _, name in VALUE_TYPES}


#: (label, format id, file extension) of the output format dropdown.
def _format_choices() -> list[tuple[str, str, str]]:
    """One choice per registered format; one more, uncompressed, for a format that compresses."""
    choices = []
    for f in registry.FORMATS:
        if "compress" in f.options:
            choices.append((f"{f.title}, compressed", f.name, f.extensions[0]))
            choices.append((f"{f.title}, uncompressed", f"{f.name}-uncompressed", f.extensions[0]))
        else:
            choices.append((f"{f.title} ({f.label})" if f.label else f.title, f.name, f.extensions[0]))
    return choices


FORMATS: list[tuple[str, str, str]] = _format_choices()
_EXTENSION = {fmt: ext for _, fmt, ext in FORMATS}
_KNOWN_EXTENSIONS = registry.extensions()  # what save() and load() read formats from
_LITERAL_LIMIT = 500  # longest repr shown as an editable literal
_RED = "#c9302c"
_GREEN = "#2e7d32"
_ORANGE = "#b26a00"
_INVALID_BORDER = f"2px solid {_RED}"
_EXISTS_PROBLEM = "the file exists; tick 'Overwrite the existing file' to replace it"
#: What a bad file, path or value raises while saving or loading; anything else is reported as a bug.
_EXPECTED_ERRORS = (FormatError, OSError, TypeError, ValueError, OverflowError, MemoryError)


# --------------------------------------------------------------------------- typed values


def parse_value(kind: str, text: str) -> Any:
    """Parse the text of a metadata row as ``kind`` (one of :data:`VALUE_TYPES`).

    Raises ``ValueError`` with a short plain reason when the text is not a value of that type.
    """
    stripped = text.strip()
    if kind == "str":
        return text
    if kind == "None":
        if stripped:
            raise ValueError("a None value takes no text; clear the field or choose another type")
        return None
    if kind == "int":
        try:
            return int(stripped)
        except ValueError:
            raise ValueError(f"{_quote(text)} is not a whole number") from None
    if kind == "float":
        try:
            return float(stripped)
        except ValueError:
            raise ValueError(f"{_quote(text)} is not a number") from None
    if kind == "bool":
        lowered = stripped.lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        raise ValueError(f"{_quote(text)} is not True or False")
    if kind == "datetime":
        iso = stripped[:-1] + "+00:00" if stripped.endswith(("Z", "z")) else stripped
        try:
            return dt.datetime.fromisoformat(iso)
        except ValueError:
            raise ValueError(f"{_quote(text)} is not a date and time like 2024-05-17T14:30:00+02:00") from None
    if kind == "date":
        try:
            return dt.date.fromisoformat(stripped)
        except ValueError:
            raise ValueError(f"{_quote(text)} is not a date like 2024-05-17") from None
    if kind == "literal":
        if not stripped:
            raise ValueError("empty; type a Python literal such as [1, 2], (0.5, 'mm') or 1+2j")
        try:
            return ast.literal_eval(stripped)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ValueError(f"{_quote(text)} is not a Python literal such as [1, 2], (0.5, 'mm') or 1+2j") from None
    raise ValueError(f"unknown value type {kind!r}")


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "\u2026")


def _identical(a: Any, b: Any) -> bool:
    """Same type and same value all the way down (a float's sign and NaN-ness included)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=False))
    return repr(a) == repr(b)


def _render(value: Any) -> tuple[str, str] | None:
    """The (type, text) of an editable row showing ``value`` exactly, or None if no row can."""
    t = type(value)
    if value is None:
        candidate = ("None", "")
    elif t is bool:
        candidate = ("bool", str(value))
    elif t is int:
        candidate = ("int", str(value))
    elif t is float:
        candidate = ("float", repr(value))
    elif t is str:
        # A Text field is one line: multi-line or control-character text is edited as a literal.
        candidate = ("str", value) if value.isprintable() else ("literal", repr(value))
    elif t is dt.datetime:
        candidate = ("datetime", value.isoformat())
    elif t is dt.date:
        candidate = ("date", value.isoformat())
    elif t in (complex, bytes) or (
        t in (list, tuple) and all(type(v) in (bool, int, float, complex, str, bytes) or v is None for v in value)
    ):
        candidate = ("literal", repr(value))
    else:
        return None
    if len(candidate[1]) > _LITERAL_LIMIT:
        return None
    try:
        parsed = parse_value(*candidate)
    except ValueError:
        return None
    return candidate if _identical(parsed, value) else None


def _check_storable(key: str, value: Any) -> None:
    """Raise ValueError (plain words) if the NPZ writer could not store ``value``."""
    try:
        metadata.encode({key: value})
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


def _describe(value: Any) -> str:
    """A short description of a read-only value; arrays by shape and dtype, never their values."""
    if isinstance(value, np.ndarray):
        return f"array({', '.join(str(n) for n in value.shape)}) {value.dtype}"
    if type(value) is dict:
        return f"dict with {count_text(len(value), 'key')}: {short_repr(value, 60)}"
    if type(value) in (list, tuple):
        return f"{type(value).__name__} of {count_text(len(value), 'item')}: {short_repr(value, 60)}"
    return f"{type(value).__name__}: {short_repr(value, 70)}"


# --------------------------------------------------------------------------- helpers


def _user_namespace(namespace: MutableMapping[str, Any] | None, who: str) -> MutableMapping[str, Any]:
    if namespace is not None:
        if not isinstance(namespace, MutableMapping):
            raise TypeError(f"{who}(namespace=...) needs a dict of variables, not {type(namespace).__name__}")
        return namespace
    from IPython import get_ipython  # a dependency; imported here so a namespace= caller needs no shell

    shell = get_ipython()
    if shell is None:
        raise RuntimeError(
            f"{who}() without a namespace needs IPython or Jupyter; outside them pass the "
            f"variables explicitly, e.g. {who}(namespace=globals())"
        )
    return shell.user_ns


def _plain_error(exc: BaseException) -> str:
    """One sentence for the status line, from an exception, without a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip() or type(exc).__name__
    return text[0].upper() + text[1:]


def _blocking_file(target: str) -> str | None:
    """The existing non-folder among the parents of ``target`` (where a folder would be needed), if any."""
    parent = os.path.dirname(target)
    while parent and not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent if parent and not os.path.isdir(parent) else None


def _html_line(text: str, color: str | None = None, icon: str = "") -> str:
    body = html.escape(f"{icon} {text}".strip(), quote=False)  # element text: quotes need no escaping
    return f'<span style="color:{color}">{body}</span>' if color else body


def _facts_html(array: np.ndarray) -> str:
    """Shape, dtype, size and value range of a height map (its metadata is in the editor below)."""
    info = summary(array)
    shape = html.escape(shape_text(info["shape"]))
    return (
        f"<b>height map</b> {shape} <code>{html.escape(info['dtype'])}</code> "
        f"({size_text(info['nbytes'])})<br/>{html.escape(stats_text(info))}"
    )


def _preview(image: widgets.Image, info: widgets.HTML, data: Any, title: str, *, with_metadata: bool) -> None:
    """Fill the preview image and summary for ``data``; an unplottable map gets a plain note.

    The picture is set first: it is the slowest part for the browser to show, and the summary
    changing last tells a person (and a browser test) that the preview is complete.
    """
    array, _ = split_height_map(data)
    note = ""
    try:
        image.value = preview_png(array, max_pixels=256, title=title)
        image.layout.display = None
    except (TypeError, ValueError) as exc:
        image.value = b""
        image.layout.display = "none"
        note = "<br/>" + _html_line(f"No picture: {_plain_error(exc)}", _ORANGE)
    try:
        text = summary_html(data) if with_metadata else _facts_html(array)
    except (TypeError, ValueError) as exc:
        text = _html_line(f"No summary: {_plain_error(exc)}", _RED)
    info.value = text + note


# --------------------------------------------------------------------------- metadata rows


class _MetadataRow(widgets.HBox):
    """One editable metadata entry: key, type, value text, a check mark or the reason it is invalid."""

    def __init__(
        self,
        key: str = "",
        kind: str = "str",
        text: str = "",
        *,
        on_change: Callable[[], None],
        on_remove: Callable[[_MetadataRow], None],
        taken: Callable[[], set[str]],
    ) -> None:
        self._on_change_cb = on_change
        self._taken = taken
        self._key = widgets.Combobox(
            value=key,
            placeholder="key",
            options=self._suggestions(key),
            ensure_option=False,
            layout=widgets.Layout(width="11em"),
        )
        self._type = widgets.Dropdown(options=VALUE_TYPES, value=kind, layout=widgets.Layout(width="8.5em"))
        self._value = widgets.Text(
            value=text, placeholder="value", layout=widgets.Layout(width="22em"), continuous_update=True
        )
        self._check = widgets.HTML(layout=widgets.Layout(width="auto", min_width="2em"))
        self._remove = widgets.Button(icon="trash", tooltip="remove this key", layout=widgets.Layout(width="2.6em"))
        for child, css in (
            (self._key, "tmd-meta-key"),
            (self._type, "tmd-meta-type"),
            (self._value, "tmd-meta-value"),
            (self._check, "tmd-meta-check"),
            (self._remove, "tmd-meta-remove"),
        ):
            child.add_class(css)
        super().__init__([self._key, self._type, self._value, self._remove, self._check])
        self.add_class("tmd-meta-row")
        self.error: str | None = None
        self.parsed: Any = None
        self._key.observe(self._on_key, "value")
        self._type.observe(self._on_edit, "value")
        self._value.observe(self._on_edit, "value")
        self._remove.on_click(lambda _: on_remove(self))
        self._sync_enabled()

    readonly = False

    @property
    def key(self) -> str:
        return self._key.value

    def _suggestions(self, own: str) -> list[str]:
        taken = self._taken() - {own}
        return [k for k in SUGGESTED_KEYS if k not in taken]

    def refresh_suggestions(self) -> None:
        options = self._suggestions(self._key.value)
        if list(self._key.options) != options:
            self._key.options = options

    def _on_key(self, change: dict[str, Any]) -> None:
        key = change["new"]
        # A suggested key on a fresh row brings its usual type (and the current time for timestamp).
        if key in SUGGESTED_KEYS and not self._value.value.strip():
            kind = SUGGESTED_KEYS[key]
            if kind == "datetime":
                self._value.value = dt.datetime.now().astimezone().replace(microsecond=0).isoformat()
            self._type.value = kind
        self._on_change_cb()

    def _on_edit(self, change: dict[str, Any]) -> None:
        self._sync_enabled()
        self._on_change_cb()

    def _sync_enabled(self) -> None:
        none = self._type.value == "None"
        self._value.disabled = none and not self._value.value
        self._value.placeholder = "(no value)" if none else "value"

    def validate(self, problem: str | None) -> None:
        """Parse the value and show the verdict; ``problem`` is a key problem found by the panel."""
        self.parsed, self.error = None, problem
        if problem is None:
            try:
                self.parsed = parse_value(self._type.value, self._value.value)
                _check_storable(self.key, self.parsed)
            except ValueError as exc:
                self.error = str(exc)
        self._show()

    def _show(self) -> None:
        if self.error is None:
            self._check.value = _html_line("", _GREEN, "\u2713")
            self._value.layout.border = None
            self.remove_class("tmd-invalid")
        else:
            self._check.value = _html_line(self.error, _RED, "\u2717")
            self._value.layout.border = _INVALID_BORDER
            self.add_class("tmd-invalid")


class _ReadOnlyRow(widgets.HBox):
    """A metadata entry the editor cannot represent exactly: shown, kept and saved unchanged."""

    readonly = True

    def __init__(self, key: Any, value: Any, *, on_remove: Callable[[_ReadOnlyRow], None]) -> None:
        self.original_key = key
        self.original = value
        self.parsed = value
        self.error: str | None = None
        self._key = widgets.Text(
            value=key if isinstance(key, str) else repr(key), disabled=True, layout=widgets.Layout(width="11em")
        )
        self._type = widgets.Label("read-only", layout=widgets.Layout(width="8.5em"))
        self._value = widgets.Text(value=_describe(value), disabled=True, layout=widgets.Layout(width="22em"))
        self._remove = widgets.Button(
            icon="trash", tooltip="do not save this key", layout=widgets.Layout(width="2.6em")
        )
        self._check = widgets.HTML(_html_line("kept as is", "#666"))
        self._key.add_class("tmd-meta-key")
        self._value.add_class("tmd-meta-value")
        self._remove.add_class("tmd-meta-remove")
        super().__init__([self._key, self._type, self._value, self._remove, self._check])
        self.add_class("tmd-meta-row")
        self.add_class("tmd-meta-readonly")
        self._remove.on_click(lambda _: on_remove(self))

    @property
    def key(self) -> Any:
        return self.original_key

    def refresh_suggestions(self) -> None:
        pass

    def validate(self, problem: str | None) -> None:
        self.error = problem
        if problem is None and isinstance(self.original_key, str):
            try:
                _check_storable(self.original_key, self.original)
            except ValueError as exc:
                self.error = f"cannot be saved: {exc}"
        if self.error is None:
            self._check.value = _html_line("kept as is", "#666")
            self.remove_class("tmd-invalid")
        else:
            self._check.value = _html_line(self.error, _RED, "\u2717")
            self.add_class("tmd-invalid")


# --------------------------------------------------------------------------- panels


class _Panel(widgets.VBox):
    """What both panels share: a path field, a progress bar and a one-line status.

    A subclass creates ``_path``, ``_progress`` and ``_status`` before it shows anything.
    """

    _path: widgets.Text | widgets.Combobox
    _progress: widgets.FloatProgress
    _status: widgets.HTML
    _status_text = ""

    @property
    def path(self) -> str:
        """The path as typed (a relative path is relative to the kernel's working directory)."""
        return self._path.value

    @path.setter
    def path(self, value: str | os.PathLike[str]) -> None:
        self._path.value = os.fspath(value)

    @property
    def status(self) -> str:
        """The status line as plain text: what was done, or what went wrong."""
        return self._status_text

    def _set_status(self, text: str, color: str | None, icon: str = "") -> None:
        self._status_text = text
        self._status.value = _html_line(text, color, icon)

    def _on_progress(self, done: int, total: int) -> None:
        self._progress.value = done / total if total else 1.0

    def _failed(self, what: str, exc: Exception) -> None:
        """A failed save or load: a red bar and one line; an unexpected error (a bug) is named as such."""
        self._progress.bar_style = "danger"
        reason = _plain_error(exc) if isinstance(exc, _EXPECTED_ERRORS) else f"unexpected {type(exc).__name__}: {exc}"
        self._set_status(f"{what}: {reason}", _RED, "\u2717")


# --------------------------------------------------------------------------- export panel


class ExportPanel(_Panel):
    """Export a height map of the notebook interactively: pick, preview, edit metadata, save.

    ``namespace`` is where variables are listed from (default: the IPython user namespace, which
    is what ``%tmd_panel`` passes). The public API mirrors the widgets: :attr:`selected`,
    :attr:`path`, :attr:`format`, :attr:`overwrite`, :attr:`metadata`, :attr:`status`, :meth:`refresh`,
    :meth:`add_row` and :meth:`save`.
    """

    def __init__(self, namespace: MutableMapping[str, Any] | None = None) -> None:
        self._namespace = _user_namespace(namespace, "ExportPanel")
        self._objects: dict[str, Any] = {}  # name -> object listed in the picker
        self._rows: list[_MetadataRow | _ReadOnlyRow] = []
        self._path_edited = False  # False while the path is the one we suggested
        self._setting_path = False
        self._problem: str | None = None
        self._refreshing = False

        self._title = widgets.HTML("<b>Export a height map</b>")
        self._picker = widgets.Select(options=[], rows=5, layout=widgets.Layout(width="34em"))
        self._refresh_button = widgets.Button(
            description="Refresh",
            icon="refresh",
            tooltip="list the variables of the notebook again",
            layout=widgets.Layout(width="8em"),
        )
        self._empty_note = widgets.HTML()
        self._preview_image = widgets.Image(format="png", layout=widgets.Layout(max_width="380px"))
        self._summary = widgets.HTML(layout=widgets.Layout(width="auto", max_width="32em"))

        self._rows_box = widgets.VBox([])
        self._add_button = widgets.Button(
            description="Add key",
            icon="plus",
            tooltip="add a metadata key (suggested: " + ", ".join(SUGGESTED_KEYS) + ")",
            layout=widgets.Layout(width="8em"),
        )
        self._suggest_buttons = [
            widgets.Button(description=key, tooltip=f"add a {key!r} row", layout=widgets.Layout(width="auto"))
            for key in SUGGESTED_KEYS
        ]

        self._format = widgets.Dropdown(
            options=[(label, fmt) for label, fmt, _ in FORMATS],
            value="npz",
            description="Format",
            layout=widgets.Layout(width="20em"),
        )
        self._path = widgets.Text(
            description="Path",
            placeholder="file name, e.g. scan.npz",
            layout=widgets.Layout(width="34em"),
            continuous_update=True,
        )
        self._exists_note = widgets.HTML()
        self._overwrite = widgets.Checkbox(
            value=False,
            description="Overwrite the existing file",
            indent=False,
            layout=widgets.Layout(width="auto", display="none"),
        )
        self._problems = widgets.HTML()
        self._save_button = widgets.Button(
            description="Save", icon="save", button_style="primary", layout=widgets.Layout(width="8em")
        )
        self._progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="20em"))
        self._status = widgets.HTML()

        for child, css in (
            (self._picker, "tmd-panel-picker"),
            (self._refresh_button, "tmd-panel-refresh"),
            (self._empty_note, "tmd-panel-empty"),
            (self._preview_image, "tmd-panel-preview"),
            (self._summary, "tmd-panel-summary"),
            (self._rows_box, "tmd-panel-rows"),
            (self._add_button, "tmd-panel-add-row"),
            (self._format, "tmd-panel-format"),
            (self._path, "tmd-panel-path"),
            (self._exists_note, "tmd-panel-exists"),
            (self._overwrite, "tmd-panel-overwrite"),
            (self._problems, "tmd-panel-problems"),
            (self._save_button, "tmd-panel-save"),
            (self._progress, "tmd-panel-progress"),
            (self._status, "tmd-panel-status"),
        ):
            child.add_class(css)
        for button in self._suggest_buttons:
            button.add_class("tmd-panel-suggest")

        header = widgets.HTML("<b>Metadata</b> <span style='color:#666'>(key, type, value; checked as you type)</span>")
        super().__init__(
            [
                self._title,
                widgets.HBox([self._picker, self._refresh_button]),
                self._empty_note,
                widgets.HBox([self._preview_image, self._summary], layout=widgets.Layout(align_items="flex-start")),
                header,
                self._rows_box,
                widgets.HBox([self._add_button, widgets.Label("suggested:"), *self._suggest_buttons]),
                widgets.HTML("<b>Output</b>"),
                self._format,
                self._path,
                widgets.HBox([self._exists_note, self._overwrite]),
                self._problems,
                widgets.HBox([self._save_button, self._progress]),
                self._status,
            ]
        )
        self.add_class("tmd-export-panel")

        self._picker.observe(self._on_select, "value")
        self._refresh_button.on_click(lambda _: self.refresh())
        self._add_button.on_click(lambda _: self.add_row())
        for button in self._suggest_buttons:
            button.on_click(self._on_suggest)
        self._format.observe(self._on_format, "value")
        self._path.observe(self._on_path, "value")
        self._overwrite.observe(lambda _: self._validate(), "value")
        self._save_button.on_click(lambda _: self.save())
        self.refresh()

    # ------------------------------------------------------------------ public API

    @property
    def selected(self) -> str | None:
        """Name of the selected variable (None when the namespace holds no height map)."""
        return self._picker.value

    @selected.setter
    def selected(self, name: str) -> None:
        if name not in self._objects:
            self.refresh()
        if name not in self._objects:
            listed = ", ".join(self._objects) or "none"
            raise KeyError(f"{name!r} is not an exportable height map in the namespace (listed: {listed})")
        self._picker.value = name

    @property
    def format(self) -> str:
        """A format name of :mod:`tmd_nb.formats.registry` (``"npz"``, ``"npy"``, ...), or ``"npz-uncompressed"``."""
        return self._format.value

    @format.setter
    def format(self, value: str) -> None:
        if value not in _EXTENSION:
            raise ValueError(f"unknown format {value!r}; choose one of {', '.join(_EXTENSION)}")
        self._format.value = value

    @property
    def overwrite(self) -> bool:
        """Whether replacing the existing file at :attr:`path` is confirmed (reset when the path changes)."""
        return self._overwrite.value

    @overwrite.setter
    def overwrite(self, value: bool) -> None:
        self._overwrite.value = bool(value)

    @property
    def metadata(self) -> dict[str, Any]:
        """The metadata that Save would write, in row order; ValueError if a row is invalid."""
        self._validate()
        if self._problem is not None:
            raise ValueError(self._problem)
        return {row.key: row.parsed for row in self._rows}

    def refresh(self) -> None:
        """List the exportable variables again (new ones appear, deleted ones go).

        The selection and the metadata being edited are kept while the selected name still
        refers to the same object.
        """
        found: dict[str, Any] = {}
        labels: list[tuple[str, str]] = []
        listed = exportable(self._namespace)
        for name in sorted(listed, key=lambda n: (n.lower(), n)):
            value, array = listed[name]
            found[name] = value
            label = f"{name}  \u2014  {shape_text(array.shape)} {array.dtype}"
            if isinstance(value, Mapping):
                label += f", dict with {count_text(len(value) - 1, 'metadata key')}"
            labels.append((label, name))
        previous = self._picker.value
        # the rows show self._objects[previous]: keep them while the name still holds that object
        keep = previous in found and found[previous] is self._objects.get(previous)
        self._objects = found
        self._refreshing = True
        try:
            self._picker.options = labels
            self._picker.rows = max(2, min(8, len(labels)))
            self._picker.value = previous if previous in found else (labels[0][1] if labels else None)
        finally:
            self._refreshing = False
        if not keep:
            self._show_selection()
        if labels:
            self._empty_note.value = ""
        else:
            self._empty_note.value = _html_line(
                "No height map found. Create a 2-D numpy array or a dict with a 'height_map' array, "
                "then press Refresh.",
                _ORANGE,
            )
        self._validate()

    def add_row(self, key: str = "", value: Any = "", kind: str | None = None) -> None:
        """Add an editable metadata row; ``value`` may be text or a Python value (then rendered)."""
        if isinstance(value, str) and kind is not None:
            kind_text: tuple[str, str] = (kind, value)
        elif isinstance(value, str) and kind is None:
            kind_text = (SUGGESTED_KEYS.get(key, "str") if not value else "str", value)
        else:
            rendered = _render(value)
            if rendered is None:
                raise TypeError(f"{type(value).__name__} values cannot be typed in the editor")
            kind_text = rendered
        if kind_text[0] not in _TYPE_NAMES:
            raise ValueError(f"unknown value type {kind_text[0]!r}; choose one of {', '.join(sorted(_TYPE_NAMES))}")
        row = _MetadataRow(
            "", kind_text[0], kind_text[1], on_change=self._validate, on_remove=self._remove_row, taken=self._taken_keys
        )
        self._rows.append(row)
        self._rows_box.children = tuple(self._rows)
        if key:
            row._key.value = key  # through the widget, so a suggested key brings its type
        self._validate()

    def save(self) -> str | None:
        """Write the selected height map with the edited metadata; return the absolute path or None.

        Nothing is written while a metadata row is invalid or an existing file has not been
        confirmed for overwriting; the status line says why.
        """
        self._validate()
        if self._problem is not None:
            self._set_status(f"Not saved: {self._problem}", _RED, "\u2717")
            return None
        name = self._picker.value
        array, _ = split_height_map(self._objects[name])
        data = {"height_map": array, **{row.key: row.parsed for row in self._rows}}
        target = self._target()
        fmt, compress = (
            self._format.value.removesuffix("-uncompressed"),
            not self._format.value.endswith("-uncompressed"),
        )

        self._save_button.disabled = True
        self._progress.bar_style = ""
        self._progress.value = 0.0
        self._set_status(f"Saving {name} to {target} \u2026", None)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:  # shown in the status line
                warnings.simplefilter("always")
                saved = save_reporting(data, target, format=fmt, compress=compress, progress=self._on_progress)
            notes = [str(warning.message) for warning in caught]
        except Exception as exc:  # even a bug is one line in the panel, where the person is looking
            self._failed("Not saved", exc)
            return None
        finally:
            self._validate()  # re-enables Save and flags the file that now exists
        elapsed = time.perf_counter() - start
        self._overwrite.value = False  # the file now exists: saving again needs a new confirmation
        self._progress.value = 1.0
        self._progress.bar_style = "success"
        written = saved.path
        message = f"Saved {name} to {written} ({size_text(os.path.getsize(written))}, {elapsed:.2f} s)."
        if saved.lost:
            keeping = registry.one_of([f.title for f in registry.FORMATS if f.keeps is None])
            notes.append(
                f"{fmt.upper()} holds {registry.by_name(fmt).holds} only, so the metadata ({keys_text(saved.lost)}) "
                f"was not stored; choose {keeping} to keep it."
            )
        self._set_status(" ".join([message, *notes]), _ORANGE if notes else _GREEN, "\u2713")
        return written

    # ------------------------------------------------------------------ internals

    def _target(self) -> str:
        return os.path.abspath(os.path.expanduser(self._path.value.strip()))

    def _taken_keys(self) -> set[str]:
        return {row.key for row in self._rows}

    def _on_select(self, change: dict[str, Any]) -> None:
        if self._refreshing:
            return
        self._show_selection()
        self._validate()

    def _show_selection(self) -> None:
        """Show the preview and the metadata rows of the selected variable."""
        name = self._picker.value
        value = self._objects.get(name)
        self._rows = []
        if value is None:
            self._preview_image.value = b""
            self._preview_image.layout.display = "none"
            self._summary.value = ""
            self._rows_box.children = ()
            return
        _, meta = split_height_map(value)
        for key, item in meta.items():
            rendered = _render(item) if isinstance(key, str) else None
            if rendered is None:
                self._rows.append(_ReadOnlyRow(key, item, on_remove=self._remove_row))
            else:
                self._rows.append(
                    _MetadataRow(
                        key, *rendered, on_change=self._validate, on_remove=self._remove_row, taken=self._taken_keys
                    )
                )
        self._rows_box.children = tuple(self._rows)
        _preview(self._preview_image, self._summary, value, name, with_metadata=False)
        if not self._path_edited:
            self._set_path(name + _EXTENSION[self._format.value])

    def _remove_row(self, row: _MetadataRow | _ReadOnlyRow) -> None:
        if row in self._rows:
            self._rows.remove(row)
            self._rows_box.children = tuple(self._rows)
        self._validate()

    def _on_suggest(self, button: widgets.Button) -> None:
        key = button.description
        for row in self._rows:
            if row.key == key and not row.readonly:
                self._set_status(f"{key!r} is already in the metadata; edit its row.", _ORANGE)
                return
        self.add_row(key)

    def _set_path(self, value: str) -> None:
        self._setting_path = True
        try:
            self._path.value = value
        finally:
            self._setting_path = False

    def _on_path(self, change: dict[str, Any]) -> None:
        if not self._setting_path:
            self._path_edited = bool(change["new"].strip())
        self._overwrite.value = False  # a new path needs its own confirmation
        self._validate()

    def _on_format(self, change: dict[str, Any]) -> None:
        root, ext = os.path.splitext(self._path.value)
        wanted = _EXTENSION[change["new"]]
        if ext.lower() in _KNOWN_EXTENSIONS and ext.lower() != wanted:
            self._set_path(root + wanted)  # a new path: _on_path resets Overwrite
        self._validate()

    def _validate(self) -> None:
        """Check every row and the output; mark problems and enable Save only when all is well."""
        counts: dict[str, int] = {}
        for row in self._rows:
            counts[row.key] = counts.get(row.key, 0) + 1
        first: str | None = None
        n_bad = 0
        for index, row in enumerate(self._rows, start=1):
            key = row.key
            if not isinstance(key, str):
                problem: str | None = f"the key {key!r} is not text; only str keys can be saved"
            elif not key.strip():
                problem = "the key is empty"
            elif key == "height_map":
                problem = "'height_map' is the array itself; choose another key"
            elif counts[key] > 1:
                problem = f"the key {key!r} is used {counts[key]} times"
            else:
                problem = None
            row.validate(problem)
            row.refresh_suggestions()
            if row.error is not None:
                n_bad += 1
                if first is None:
                    label = f"metadata {key!r}" if not isinstance(key, str) or key.strip() else f"metadata row {index}"
                    first = f"{label}: {row.error}"
        taken = self._taken_keys()
        for button in self._suggest_buttons:  # a key already present is edited in its row, not added again
            button.disabled = button.description in taken
        if n_bad > 1 and first is not None:
            first += f" (and {count_text(n_bad - 1, 'more invalid row')})"

        # The output file: flagged as soon as the path points at something that exists.
        target = self._target() if self._path.value.strip() else None
        exists = target is not None and os.path.isfile(target)
        if exists:
            self._exists_note.value = _html_line(f"{target} already exists.", _ORANGE, "\u26a0")
            self._overwrite.layout.display = None
        else:
            self._exists_note.value = ""
            self._overwrite.layout.display = "none"
        self._save_button.description = "Overwrite" if exists and self._overwrite.value else "Save"

        if self._picker.value is None:
            self._problem = "there is no height map to save; create one and press Refresh"
        elif first is not None:
            self._problem = first
        elif target is None:
            self._problem = "type a file name in Path"
        elif os.path.isdir(target):
            self._problem = f"{target} is a folder; add a file name"
        elif (blocking := _blocking_file(target)) is not None:
            self._problem = f"{blocking} is a file, not a folder, so it cannot hold {os.path.basename(target)}"
        elif exists and not self._overwrite.value:
            self._problem = _EXISTS_PROBLEM
        else:
            self._problem = None
        # An unconfirmed overwrite is explained by the note beside its checkbox.
        shown = None if self._problem in (None, _EXISTS_PROBLEM) else self._problem
        self._problems.value = "" if shown is None else _html_line(f"Cannot save yet: {shown}", _RED, "\u2717")
        self._save_button.disabled = self._problem is not None


# --------------------------------------------------------------------------- load panel


class LoadPanel(_Panel):
    """Load a height-map file interactively: pick it, see its summary and preview, bind it to a name.

    ``namespace`` receives the variable (default: the IPython user namespace). The bound value is
    ``{"height_map": array, **metadata}`` (a :class:`tmd_nb.notebook.display.HeightMapResult`, which is a
    dict) or the bare array when "height map only" is chosen.
    """

    def __init__(
        self, namespace: MutableMapping[str, Any] | None = None, directory: str | os.PathLike[str] | None = None
    ) -> None:
        self._namespace = _user_namespace(namespace, "LoadPanel")
        self._directory = os.path.abspath(os.fspath(directory)) if directory is not None else None
        self._data: dict[str, Any] | None = None
        self._loaded_path: str | None = None
        self._name_edited = False
        self._setting_name = False
        self._bound: Any = None  # the object Bind put into the namespace last (not "replaced" by itself)

        self._title = widgets.HTML("<b>Load a height map</b>")
        self._path = widgets.Combobox(
            description="File",
            placeholder="path of a .npz, .npy or .tmd file",
            ensure_option=False,
            layout=widgets.Layout(width="34em"),
        )
        self._refresh_button = widgets.Button(
            description="Refresh",
            icon="refresh",
            tooltip="list the files of the folder again",
            layout=widgets.Layout(width="8em"),
        )
        self._preview_image = widgets.Image(format="png", layout=widgets.Layout(max_width="380px", display="none"))
        self._summary = widgets.HTML(layout=widgets.Layout(width="auto", max_width="32em"))
        self._name = widgets.Text(description="Name", placeholder="variable name", layout=widgets.Layout(width="20em"))
        self._what = widgets.Dropdown(
            options=[("dict with metadata", "dict"), ("height map array only", "array")],
            value="dict",
            description="As",
            layout=widgets.Layout(width="20em"),
        )
        self._name_note = widgets.HTML()
        self._bind_button = widgets.Button(
            description="Bind", icon="check", button_style="primary", disabled=True, layout=widgets.Layout(width="8em")
        )
        self._progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, layout=widgets.Layout(width="20em"))
        self._status = widgets.HTML()
        for child, css in (
            (self._path, "tmd-load-path"),
            (self._refresh_button, "tmd-load-refresh"),
            (self._preview_image, "tmd-load-preview"),
            (self._summary, "tmd-load-summary"),
            (self._name, "tmd-load-name"),
            (self._what, "tmd-load-as"),
            (self._name_note, "tmd-load-name-note"),
            (self._bind_button, "tmd-load-bind"),
            (self._progress, "tmd-load-progress"),
            (self._status, "tmd-load-status"),
        ):
            child.add_class(css)
        super().__init__(
            [
                self._title,
                widgets.HBox([self._path, self._refresh_button]),
                self._progress,
                widgets.HBox([self._preview_image, self._summary], layout=widgets.Layout(align_items="flex-start")),
                widgets.HBox([self._name, self._what]),
                self._name_note,
                self._bind_button,
                self._status,
            ]
        )
        self.add_class("tmd-load-panel")
        self._path.observe(self._on_path, "value")
        self._name.observe(self._on_name, "value")
        self._what.observe(lambda _: self._validate(), "value")
        self._refresh_button.on_click(lambda _: self.refresh())
        self._bind_button.on_click(lambda _: self.bind())
        self.refresh()

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        """The variable name the data will be bound to."""
        return self._name.value

    @name.setter
    def name(self, value: str) -> None:
        self._name.value = value

    @property
    def data(self) -> dict[str, Any] | None:
        """The loaded ``{"height_map": ..., **metadata}``, or None if no file is loaded."""
        return self._data

    def refresh(self) -> None:
        """List the loadable files (.npz, .npy, .tmd) of the folder in the file field's suggestions."""
        folder = self._directory or os.getcwd()
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(folder)
                if entry.is_file() and entry.name.lower().endswith(_KNOWN_EXTENSIONS)
            )
        except OSError:
            names = []
        if self._directory is not None:
            names = [os.path.join(self._directory, n) for n in names]
        self._path.options = names
        if self._path.value.strip():
            self._load()

    def bind(self) -> str | None:
        """Put the loaded data into the namespace under :attr:`name`; return the name or None."""
        self._validate()
        problem = self._problem()
        if problem is not None:
            self._set_status(f"Not bound: {problem}", _RED, "\u2717")
            return None
        assert self._data is not None
        name = self._name.value.strip()
        replaced = name in self._namespace
        if self._what.value == "array":
            self._bound = self._data["height_map"]
            what = "the height map"
        else:
            self._bound = HeightMapResult(self._data)
            what = f"the height map and {count_text(len(self._data) - 1, 'metadata key')}"
        self._namespace[name] = self._bound
        self._set_status(
            f"{name} now holds {what} from {self._loaded_path}"
            + (" (it replaced the previous value)." if replaced else "."),
            _GREEN,
            "\u2713",
        )
        self._validate()
        return name

    # ------------------------------------------------------------------ internals

    def _target(self) -> str:
        text = os.path.expanduser(self._path.value.strip())
        if self._directory is not None and not os.path.isabs(text):
            text = os.path.join(self._directory, text)
        return os.path.abspath(text)

    def _on_path(self, change: dict[str, Any]) -> None:
        self._load()

    def _load(self) -> None:
        # Forget the previous file entirely: its data, its progress, and which value Bind put into
        # the namespace (binding new data over it must be flagged as a replacement again).
        self._data, self._loaded_path, self._bound = None, None, None
        self._progress.value, self._progress.bar_style = 0.0, ""
        self._preview_image.layout.display = "none"
        self._summary.value = ""
        text = self._path.value.strip()
        if not text:
            self._set_status("", None)
        else:
            target = self._target()
            if not os.path.isfile(target):
                self._set_status(
                    f"No file at {target}." if not os.path.isdir(target) else f"{target} is a folder; pick a file.",
                    "#666",
                )
            else:
                self._read(target)
        self._validate()

    def _read(self, target: str) -> None:
        start = time.perf_counter()
        self._set_status(f"Loading {target} \u2026", None)
        try:
            data = registry.load(target, progress=self._on_progress)
        except Exception as exc:  # even a bug is one line in the panel
            self._failed("Could not load", exc)
            return
        self._progress.value, self._progress.bar_style = 1.0, "success"
        elapsed = time.perf_counter() - start
        self._data, self._loaded_path = data, target
        _preview(self._preview_image, self._summary, data, os.path.basename(target), with_metadata=True)
        self._set_status(
            f"Loaded {target} ({size_text(os.path.getsize(target))}, {elapsed:.2f} s). Choose a name and press Bind.",
            None,
        )
        if not self._name_edited:
            self._setting_name = True
            try:
                self._name.value = _identifier_for(target)
            finally:
                self._setting_name = False

    def _on_name(self, change: dict[str, Any]) -> None:
        if not self._setting_name:
            self._name_edited = bool(change["new"].strip())
        self._validate()

    def _problem(self) -> str | None:
        name = self._name.value.strip()
        if self._data is None:
            return "no file is loaded; pick a .npz, .npy or .tmd file"
        if not name:
            return "type a variable name"
        if not is_variable_name(name):
            return f"{name!r} is not a valid Python variable name"
        return None

    def _validate(self) -> None:
        name = self._name.value.strip()
        problem = self._problem()
        if problem is not None and self._data is not None:
            self._name_note.value = _html_line(problem, _RED, "\u2717")
        elif problem is None and name in self._namespace and self._namespace[name] is not self._bound:
            self._name_note.value = _html_line(f"{name} already exists; Bind will replace it.", _ORANGE, "\u26a0")
        else:
            self._name_note.value = ""
        self._bind_button.disabled = problem is not None


def _identifier_for(path: str) -> str:
    """A variable name suggested by a file name: ``v2_Vickers Indentation.tmd`` -> ``v2_Vickers_Indentation``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in stem).strip("_") or "height_map"
    if name[0].isdigit():
        name = "scan_" + name
    if keyword.iskeyword(name):
        name += "_"
    return name if is_variable_name(name) else "height_map"
