"""What both panels share: colours, one-line messages, the preview, and the Panel base class."""

from __future__ import annotations

import html
import os
from collections.abc import MutableMapping
from typing import Any

import ipywidgets as widgets
import numpy as np

from ...errors import FormatError
from ...heightmap import split_height_map
from ..display import (
    preview_png,
    shape_text,
    size_text,
    stats_text,
    summary,
    summary_html,
)

__all__ = [
    "EXPECTED_ERRORS",
    "GREEN",
    "ORANGE",
    "RED",
    "Panel",
    "blocking_file",
    "facts_html",
    "html_line",
    "plain_error",
    "show_path",
    "show_preview",
    "user_namespace",
]

RED = "#c9302c"
GREEN = "#2e7d32"
ORANGE = "#b26a00"
INVALID_BORDER = f"2px solid {RED}"
#: What a bad file, path or value raises while saving or loading; anything else is reported as a bug.
EXPECTED_ERRORS = (FormatError, OSError, TypeError, ValueError, OverflowError, MemoryError)


def user_namespace(namespace: MutableMapping[str, Any] | None, who: str) -> MutableMapping[str, Any]:
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


def plain_error(exc: BaseException) -> str:
    """One sentence for the status line, from an exception, without a traceback."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip() or type(exc).__name__
    return text[0].upper() + text[1:]


def show_path(path: str | os.PathLike[str] | None) -> str:
    """``path`` as the messages show it: under the home folder from ``~`` (``~/scans/a.npz``).

    Shorter, and the same on every machine, so a screenshot or a copied message does not carry the
    user's account name. The panels' API (``save()``, ``path``) keeps the real absolute path.
    """
    path = str(path)
    home = os.path.expanduser("~")
    if home in ("~", os.sep) or not os.path.isabs(home):
        return path
    home = os.path.normpath(home)
    if path == home:
        return "~"
    if path.startswith(home + os.sep):
        return "~" + path[len(home) :]
    return path


def blocking_file(target: str) -> str | None:
    """The existing non-folder among the parents of ``target`` (where a folder would be needed), if any."""
    parent = os.path.dirname(target)
    while parent and not os.path.exists(parent):
        up = os.path.dirname(parent)
        if up == parent:
            return None
        parent = up
    return parent if parent and not os.path.isdir(parent) else None


def html_line(text: str, color: str | None = None, icon: str = "") -> str:
    body = html.escape(f"{icon} {text}".strip(), quote=False)  # element text: quotes need no escaping
    return f'<span style="color:{color}">{body}</span>' if color else body


def facts_html(array: np.ndarray) -> str:
    """Shape, dtype, size and value range of a height map (its metadata is in the editor below)."""
    info = summary(array)
    shape = html.escape(shape_text(info["shape"]))
    return (
        f"<b>height map</b> {shape} <code>{html.escape(info['dtype'])}</code> "
        f"({size_text(info['nbytes'])})<br/>{html.escape(stats_text(info))}"
    )


def show_preview(image: widgets.Image, info: widgets.HTML, data: Any, title: str, *, with_metadata: bool) -> None:
    """Fill the preview image and summary for ``data``; an unplottable map gets a plain note.

    The picture is set first: it is the slowest part for the browser to show, and the summary
    changing last tells a person (and a browser test) that the preview is complete.
    """
    array, meta = split_height_map(data)
    note = ""
    try:
        image.value = preview_png(array, max_pixels=256, title=title, metadata=meta)
        image.layout.display = None
    except (TypeError, ValueError) as exc:
        image.value = b""
        image.layout.display = "none"
        note = "<br/>" + html_line(f"No picture: {plain_error(exc)}", ORANGE)
    try:
        text = summary_html(data) if with_metadata else facts_html(array)
    except (TypeError, ValueError) as exc:
        text = html_line(f"No summary: {plain_error(exc)}", RED)
    info.value = text + note


class Panel(widgets.VBox):
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
        self._status.value = html_line(text, color, icon)

    def _on_progress(self, done: int, total: int) -> None:
        self._progress.value = done / total if total else 1.0

    def _failed(self, what: str, exc: Exception) -> None:
        """A failed save or load: a red bar and one line; an unexpected error (a bug) is named as such."""
        self._progress.bar_style = "danger"
        reason = plain_error(exc) if isinstance(exc, EXPECTED_ERRORS) else f"unexpected {type(exc).__name__}: {exc}"
        self._set_status(f"{what}: {reason}", RED, "\u2717")
