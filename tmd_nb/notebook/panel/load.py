"""The load panel: pick a scan file, look at it, bind it to a variable."""

from __future__ import annotations

import keyword
import os
import time
from collections.abc import MutableMapping
from typing import Any

import ipywidgets as widgets

from ...formats import registry
from ..arguments import is_variable_name, name_problem
from ..display import (
    HeightMapResult,
    count_text,
    size_text,
)
from .common import GREEN, ORANGE, RED, Panel, html_line, show_path, show_preview, user_namespace

__all__ = ["LoadPanel"]


class LoadPanel(Panel):
    """Load a height-map file interactively: pick it, see its summary and preview, bind it to a name.

    The bound value is ``{"height_map": array, **metadata}`` (a
    :class:`tmd_nb.notebook.display.HeightMapResult`, which is a dict) or the bare array when
    "height map only" is chosen. An instrument's file with several channels shows a Channel
    choice (the topography first picked). Public API: :attr:`path`, :attr:`name`,
    :attr:`channel`, :attr:`data`, :attr:`status`, :meth:`refresh` and :meth:`bind`.

    Parameters
    ----------
    namespace : dict, optional
        Receives the variable. Default: the IPython user namespace (what ``%tmd_panel --load``
        passes).
    directory : str or os.PathLike, optional
        The folder whose scan files are listed. Default: the working directory.

    Raises
    ------
    RuntimeError
        No ``namespace`` is given and no IPython shell is running.
    """

    def __init__(
        self, namespace: MutableMapping[str, Any] | None = None, directory: str | os.PathLike[str] | None = None
    ) -> None:
        self._namespace = user_namespace(namespace, "LoadPanel")
        self._directory = os.path.abspath(os.fspath(directory)) if directory is not None else None
        self._data: dict[str, Any] | None = None
        self._loaded_path: str | None = None
        self._name_edited = False
        self._setting_name = False
        self._bound: Any = None  # the object Bind put into the namespace last (not "replaced" by itself)
        self._channels_of: str | None = None  # the file whose channels the Channel choice lists
        self._setting_channel = False

        self._title = widgets.HTML("<b>Load a height map</b>")
        self._path = widgets.Combobox(
            description="File",
            placeholder=f"path of a {registry.readable_text()}",
            ensure_option=False,
            layout=widgets.Layout(width="34em"),
        )
        self._refresh_button = widgets.Button(
            description="Refresh",
            icon="refresh",
            tooltip="list the files of the folder again",
            layout=widgets.Layout(width="8em"),
        )
        self._channel = widgets.Dropdown(
            options=[], description="Channel", layout=widgets.Layout(width="34em", display="none")
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
            (self._channel, "tmd-load-channel"),
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
                self._channel,
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
        self._channel.observe(self._on_channel, "value")
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
    def channel(self) -> str | None:
        """The channel of an instrument's file that is loaded (None for a file of one height map)."""
        return self._channel.value if self._channel.options else None

    @channel.setter
    def channel(self, value: str) -> None:
        self._channel.value = value

    @property
    def data(self) -> dict[str, Any] | None:
        """The loaded ``{"height_map": ..., **metadata}``, or None if no file is loaded."""
        return self._data

    def refresh(self) -> None:
        """List the loadable files (every extension of the registry) of the folder in the file field's suggestions."""
        folder = self._directory or os.getcwd()
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(folder)
                if entry.is_file() and entry.name.lower().endswith(registry.extensions())
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
        problem = self._bind_blocker()
        if problem is not None:
            self._set_status(f"Not bound: {problem}", RED, "\u2717")
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
            f"{name} now holds {what} from {show_path(self._loaded_path)}"
            + (" (it replaced the previous value)." if replaced else "."),
            GREEN,
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
                    f"No file at {show_path(target)}."
                    if not os.path.isdir(target)
                    else f"{show_path(target)} is a folder; pick a file.",
                    "#666",
                )
            else:
                self._read(target)
        self._validate()

    def _read(self, target: str) -> None:
        start = time.perf_counter()
        self._set_status(f"Loading {show_path(target)} \u2026", None)
        try:
            data = registry.load(target, channel=self._list_channels(target), progress=self._on_progress)
        except Exception as exc:  # even a bug is one line in the panel
            self._failed("Could not load", exc)
            return
        self._progress.value, self._progress.bar_style = 1.0, "success"
        elapsed = time.perf_counter() - start
        self._data, self._loaded_path = data, target
        show_preview(self._preview_image, self._summary, data, os.path.basename(target), with_metadata=True)
        self._set_status(
            f"Loaded {show_path(target)} ({size_text(os.path.getsize(target))}, {elapsed:.2f} s). "
            "Choose a name and press Bind.",
            None,
        )
        if not self._name_edited:
            self._setting_name = True
            try:
                self._name.value = _identifier_for(target)
            finally:
                self._setting_name = False

    def _list_channels(self, target: str) -> str | None:
        """Fill the Channel choice for ``target`` (once per file); the channel to load, or None."""
        if target != self._channels_of:
            self._channels_of = None
            found = registry.channels(target) if registry.recognise(target).channels is not None else []
            self._setting_channel = True
            try:
                self._channel.options = [(f"{c['name']} ({c['unit'] or 'no unit'})", c["name"]) for c in found]
                if found:
                    self._channel.value = next((c["name"] for c in found if c["is_height"]), found[0]["name"])
            finally:
                self._setting_channel = False
            self._channel.layout.display = "" if len(found) > 1 else "none"
            self._channels_of = target
        return self.channel

    def _on_channel(self, change: dict[str, Any]) -> None:
        if not self._setting_channel:
            self._load()

    def _on_name(self, change: dict[str, Any]) -> None:
        if not self._setting_name:
            self._name_edited = bool(change["new"].strip())
        self._validate()

    def _bind_blocker(self) -> str | None:
        """Why Bind cannot run yet, or None."""
        name = self._name.value.strip()
        if self._data is None:
            return f"no file is loaded; pick a {registry.readable_text()}"
        if not name:
            return "type a variable name"
        return name_problem(name)

    def _validate(self) -> None:
        name = self._name.value.strip()
        problem = self._bind_blocker()
        if problem is not None and self._data is not None:
            self._name_note.value = html_line(problem, RED, "\u2717")
        elif problem is None and name in self._namespace and self._namespace[name] is not self._bound:
            self._name_note.value = html_line(f"{name} already exists; Bind will replace it.", ORANGE, "\u26a0")
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
