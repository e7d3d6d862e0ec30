"""Exceptions and warnings shared by every reader and writer of tmd_nb."""

from __future__ import annotations

__all__ = ["FormatError", "MetadataNotStoredWarning"]


class FormatError(ValueError):
    """A file's content is not what its format promises.

    Raised for malformed, truncated, hostile or unsupported files. The message names the
    file and what is wrong with it. Operating-system problems (missing file, permission
    denied, a directory) are left as their usual ``OSError`` subclasses.
    """


class MetadataNotStoredWarning(UserWarning):
    """Metadata was handed to a format that holds the array only (NPY), so it is not saved."""
