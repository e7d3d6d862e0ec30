"""The export panel: pick a height map of the notebook, edit its metadata, save it in any format."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any

import ipywidgets as widgets

from ...formats import registry
from ...formats.deflate import LEVEL_NAMES
from ...heightmap import exportable, keys_text, split_height_map
from ..display import (
    count_text,
    shape_text,
    size_text,
)
from ..saving import save_reporting
from .common import (
    GREEN,
    ORANGE,
    RED,
    Panel,
    blocking_file,
    html_line,
    show_path,
    show_preview,
    user_namespace,
)
from .rows import MetadataRow, ReadOnlyRow, Row
from .values import SUGGESTED_KEYS, TYPE_NAMES, render_value

__all__ = ["FORMATS", "ExportPanel"]


#: (label, format id, file extension) of the output format dropdown.
def format_choices() -> list[tuple[str, str, str]]:
    """One choice per registered format; one more, uncompressed, for a format that compresses."""
    choices = []
    for f in registry.writable():
        if "compress" in f.options:
            choices.append((f"{f.title}, compressed", f.name, f.extensions[0]))
            choices.append((f"{f.title}, uncompressed", f"{f.name}-uncompressed", f.extensions[0]))
        else:
            choices.append((f"{f.title} ({f.label})" if f.label else f.title, f.name, f.extensions[0]))
    return choices


FORMATS: list[tuple[str, str, str]] = format_choices()
EXTENSION = {fmt: ext for _, fmt, ext in FORMATS}
#: (label, level) of the compression dropdown: the ladder of :mod:`tmd_nb.formats.deflate`, fastest first.
_LEVEL_LABELS = {
    "fastest": "fastest (default)",
    "balanced": "balanced: within 1% of numpy's size",
    "smallest": "smallest: smaller than numpy's",
}
LEVELS: list[tuple[str, str]] = [(_LEVEL_LABELS.get(name, name), name) for name in LEVEL_NAMES]


def takes_level(choice: str) -> bool:
    """Whether a format choice of the dropdown compresses, so that a level applies to it."""
    return not choice.endswith("-uncompressed") and "level" in registry.by_name(choice).options


_EXISTS_PROBLEM = "the file exists; tick 'Overwrite the existing file' to replace it"


class ExportPanel(Panel):
    """Export a height map of the notebook interactively: pick, preview, edit metadata, save.

    The public API mirrors the widgets, so a script or a test can drive the panel as a person
    would: :attr:`selected`, :attr:`path`, :attr:`format`, :attr:`level`, :attr:`overwrite`,
    :attr:`metadata`, :attr:`status`, :meth:`refresh`, :meth:`add_row` and :meth:`save`.

    Parameters
    ----------
    namespace : dict, optional
        Where the exportable variables are listed from. Default: the IPython user namespace
        (what ``%tmd_panel`` passes).

    Raises
    ------
    RuntimeError
        No ``namespace`` is given and no IPython shell is running.
    """

    def __init__(self, namespace: MutableMapping[str, Any] | None = None) -> None:
        self._namespace = user_namespace(namespace, "ExportPanel")
        self._objects: dict[str, Any] = {}  # name -> object listed in the picker
        self._rows: list[Row] = []
        self._path_edited = False  # False while the path is the one we suggested
        self._setting_path = False
        self._blocker: str | None = None
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
        self._level = widgets.Dropdown(
            options=LEVELS,
            value="fastest",
            description="Level",
            tooltip="compression: fastest, balanced (file within 1% of numpy's) or smallest (smaller than numpy's)",
            layout=widgets.Layout(width="24em"),
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
        self._blocker_note = widgets.HTML()
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
            (self._level, "tmd-panel-level"),
            (self._path, "tmd-panel-path"),
            (self._exists_note, "tmd-panel-exists"),
            (self._overwrite, "tmd-panel-overwrite"),
            (self._blocker_note, "tmd-panel-problems"),
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
                widgets.HBox([self._format, self._level]),
                self._path,
                widgets.HBox([self._exists_note, self._overwrite]),
                self._blocker_note,
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
        self._show_level()
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
        if value not in EXTENSION:
            raise ValueError(f"unknown format {value!r}; choose one of {', '.join(EXTENSION)}")
        self._format.value = value

    @property
    def level(self) -> str:
        """The compression level of the ladder (``"fastest"``, ``"balanced"``, ``"smallest"``; see
        :mod:`tmd_nb.formats.deflate`), used when :attr:`format` compresses."""
        return self._level.value

    @level.setter
    def level(self, value: str) -> None:
        if value not in LEVEL_NAMES:
            raise ValueError(f"unknown level {value!r}; choose one of {', '.join(LEVEL_NAMES)}")
        self._level.value = value

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
        if self._blocker is not None:
            raise ValueError(self._blocker)
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
            self._empty_note.value = html_line(
                "No height map found. Create a 2-D numpy array or a dict with a 'height_map' array, "
                "then press Refresh.",
                ORANGE,
            )
        self._validate()

    def add_row(self, key: str = "", value: Any = "", kind: str | None = None) -> None:
        """Add an editable metadata row; ``value`` may be text or a Python value (then rendered)."""
        if isinstance(value, str) and kind is not None:
            kind_text: tuple[str, str] = (kind, value)
        elif isinstance(value, str) and kind is None:
            kind_text = (SUGGESTED_KEYS.get(key, "str") if not value else "str", value)
        else:
            rendered = render_value(value)
            if rendered is None:
                raise TypeError(f"{type(value).__name__} values cannot be typed in the editor")
            kind_text = rendered
        if kind_text[0] not in TYPE_NAMES:
            raise ValueError(f"unknown value type {kind_text[0]!r}; choose one of {', '.join(sorted(TYPE_NAMES))}")
        row = MetadataRow(
            "", kind_text[0], kind_text[1], on_change=self._validate, on_remove=self._remove_row, taken=self._taken_keys
        )
        self._rows.append(row)
        self._rows_box.children = tuple(self._rows)
        if key:
            row.set_key(key)
        self._validate()

    def save(self) -> str | None:
        """Write the selected height map with the edited metadata; return the absolute path or None.

        Nothing is written while a metadata row is invalid or an existing file has not been
        confirmed for overwriting; the status line says why.
        """
        self._validate()
        if self._blocker is not None:
            self._set_status(f"Not saved: {self._blocker}", RED, "\u2717")
            return None
        name = self._picker.value
        array, _ = split_height_map(self._objects[name])
        data = {"height_map": array, **{row.key: row.parsed for row in self._rows}}
        target = self._target()
        fmt, compress = (
            self._format.value.removesuffix("-uncompressed"),
            not self._format.value.endswith("-uncompressed"),
        )
        level = self._level.value if takes_level(self._format.value) else None

        self._save_button.disabled = True
        self._progress.bar_style = ""
        self._progress.value = 0.0
        self._set_status(f"Saving {name} to {show_path(target)} \u2026", None)
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:  # shown in the status line
                warnings.simplefilter("always")
                saved = save_reporting(
                    data, target, format=fmt, compress=compress, level=level, progress=self._on_progress
                )
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
        message = f"Saved {name} to {show_path(written)} ({size_text(os.path.getsize(written))}, {elapsed:.2f} s)."
        if saved.lost:
            keeping = registry.one_of([f.title for f in registry.lossless()])
            notes.append(
                f"{fmt.upper()} holds {registry.by_name(fmt).holds} only, so the metadata ({keys_text(saved.lost)}) "
                f"was not stored; choose {keeping} to keep it."
            )
        self._set_status(" ".join([message, *notes]), ORANGE if notes else GREEN, "\u2713")
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
            rendered = render_value(item) if isinstance(key, str) else None
            if rendered is None:
                self._rows.append(ReadOnlyRow(key, item, on_remove=self._remove_row))
            else:
                self._rows.append(
                    MetadataRow(
                        key, *rendered, on_change=self._validate, on_remove=self._remove_row, taken=self._taken_keys
                    )
                )
        self._rows_box.children = tuple(self._rows)
        show_preview(self._preview_image, self._summary, value, name, with_metadata=False)
        if not self._path_edited:
            self._set_path(name + EXTENSION[self._format.value])

    def _remove_row(self, row: Row) -> None:
        if row in self._rows:
            self._rows.remove(row)
            self._rows_box.children = tuple(self._rows)
        self._validate()

    def _on_suggest(self, button: widgets.Button) -> None:
        key = button.description
        for row in self._rows:
            if row.key == key and not row.readonly:
                self._set_status(f"{key!r} is already in the metadata; edit its row.", ORANGE)
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

    def _show_level(self) -> None:
        self._level.layout.display = None if takes_level(self._format.value) else "none"

    def _on_format(self, change: dict[str, Any]) -> None:
        self._show_level()
        root, ext = os.path.splitext(self._path.value)
        wanted = EXTENSION[change["new"]]
        if ext.lower() in registry.extensions(writing=True) and ext.lower() != wanted:
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
            self._exists_note.value = html_line(f"{show_path(target)} already exists.", ORANGE, "\u26a0")
            self._overwrite.layout.display = None
        else:
            self._exists_note.value = ""
            self._overwrite.layout.display = "none"
        self._save_button.description = "Overwrite" if exists and self._overwrite.value else "Save"

        if self._picker.value is None:
            self._blocker = "there is no height map to save; create one and press Refresh"
        elif first is not None:
            self._blocker = first
        elif target is None:
            self._blocker = "type a file name in Path"
        elif os.path.isdir(target):
            self._blocker = f"{show_path(target)} is a folder; add a file name"
        elif (blocking := blocking_file(target)) is not None:
            self._blocker = f"{blocking} is a file, not a folder, so it cannot hold {os.path.basename(target)}"
        elif exists and not self._overwrite.value:
            self._blocker = _EXISTS_PROBLEM
        else:
            self._blocker = None
        # An unconfirmed overwrite is explained by the note beside its checkbox.
        shown = None if self._blocker in (None, _EXISTS_PROBLEM) else self._blocker
        self._blocker_note.value = "" if shown is None else html_line(f"Cannot save yet: {shown}", RED, "\u2717")
        self._save_button.disabled = self._blocker is not None
