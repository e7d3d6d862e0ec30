"""Exceptions and warnings shared by every reader and writer of tmd_nb."""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_MESSAGE", "FormatError", "MetadataNotStoredWarning", "UndecodedMetadataWarning", "shorten"]

#: Longest :class:`FormatError` message, in characters (see SECURITY.md): whatever a hostile file
#: holds, the error about it stays one short line.
MAX_MESSAGE = 500


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, at most ``limit`` characters: the middle is cut, so both ends stay readable."""
    if len(text) > limit:
        marker = " \u2026 "
        head = (limit - len(marker)) // 2
        text = text[:head] + marker + text[len(text) - (limit - len(marker) - head) :]
    return " ".join(text.splitlines())


class FormatError(ValueError):
    """A file's content is not what its format promises.

    Raised for malformed, truncated, hostile or unsupported files. The message names the
    file and what is wrong with it, on one line of at most :data:`MAX_MESSAGE` characters
    (a longer one is cut in the middle). Operating-system problems (missing file, permission
    denied, a directory) are left as their usual ``OSError`` subclasses.
    """

    def __init__(self, message: Any = "", *args: Any) -> None:
        super().__init__(shorten(str(message)), *args)


class MetadataNotStoredWarning(UserWarning):
    """Metadata was handed to a format that holds the array only (NPY), so it is not saved."""


class UndecodedMetadataWarning(UserWarning):
    """A foreign file's metadata could not be decoded, so it is returned as the text it is."""
