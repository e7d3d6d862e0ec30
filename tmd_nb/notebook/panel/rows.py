"""The rows of the export panel's metadata editor: editable typed rows and read-only ones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from .common import GREEN, INVALID_BORDER, RED, html_line
from .values import PLACEHOLDERS, SUGGESTED_KEYS, VALUE_TYPES, check_storable, describe_value, parse_value

__all__ = ["MetadataRow", "ReadOnlyRow", "Row"]


class Row(widgets.HBox):
    """What the export panel asks of every metadata row, editable or not."""

    #: Whether the value is shown as text only and saved unchanged.
    readonly: bool
    #: Why the row cannot be saved, or None.
    error: str | None
    #: The value Save stores (valid only while ``error`` is None).
    parsed: Any

    @property
    def key(self) -> Any:
        raise NotImplementedError

    def validate(self, problem: str | None) -> None:
        """Check the row; ``problem`` is a key problem the panel found (empty, duplicate...)."""
        raise NotImplementedError

    def refresh_suggestions(self) -> None:
        """Offer the suggested keys no other row has taken (editable rows only)."""


class MetadataRow(Row):
    """One editable metadata entry: key, type, value text, a check mark or the reason it is invalid."""

    def __init__(
        self,
        key: str = "",
        kind: str = "str",
        text: str = "",
        *,
        on_change: Callable[[], None],
        on_remove: Callable[[Row], None],
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

    def set_key(self, key: str) -> None:
        """Type ``key`` into the key field, as a person would: a suggested key brings its usual type."""
        self._key.value = key

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
        self._value.placeholder = "(no value)" if none else PLACEHOLDERS.get(self._type.value, "value")

    def validate(self, problem: str | None) -> None:
        """Parse the value and show the verdict; ``problem`` is a key problem found by the panel."""
        self.parsed, self.error = None, problem
        if problem is None:
            try:
                self.parsed = parse_value(self._type.value, self._value.value)
                check_storable(self.key, self.parsed)
            except ValueError as exc:
                self.error = str(exc)
        self._show()

    def _show(self) -> None:
        if self.error is None:
            self._check.value = html_line("", GREEN, "\u2713")
            self._value.layout.border = None
            self.remove_class("tmd-invalid")
        else:
            self._check.value = html_line(self.error, RED, "\u2717")
            self._value.layout.border = INVALID_BORDER
            self.add_class("tmd-invalid")


class ReadOnlyRow(Row):
    """A metadata entry the editor cannot represent exactly: shown, kept and saved unchanged."""

    readonly = True

    def __init__(self, key: Any, value: Any, *, on_remove: Callable[[Row], None]) -> None:
        self.original_key = key
        self.original = value
        self.parsed = value
        self.error: str | None = None
        self._key = widgets.Text(
            value=key if isinstance(key, str) else repr(key), disabled=True, layout=widgets.Layout(width="11em")
        )
        self._type = widgets.Label("read-only", layout=widgets.Layout(width="8.5em"))
        self._value = widgets.Text(value=describe_value(value), disabled=True, layout=widgets.Layout(width="22em"))
        self._remove = widgets.Button(
            icon="trash", tooltip="do not save this key", layout=widgets.Layout(width="2.6em")
        )
        self._check = widgets.HTML(html_line("kept as is", "#666"))
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

    def validate(self, problem: str | None) -> None:
        self.error = problem
        if problem is None and isinstance(self.original_key, str):
            try:
                check_storable(self.original_key, self.original)
            except ValueError as exc:
                self.error = f"cannot be saved: {exc}"
        if self.error is None:
            self._check.value = html_line("kept as is", "#666")
            self.remove_class("tmd-invalid")
        else:
            self._check.value = html_line(self.error, RED, "\u2717")
            self.add_class("tmd-invalid")
