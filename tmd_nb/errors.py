"""Exceptions and warnings shared by every reader and writer of tmd_nb."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "MAX_MESSAGE",
    "ChecksumWarning",
    "DroppedContentWarning",
    "FormatError",
    "LegacyFormatWarning",
    "MetadataNotStoredWarning",
    "ModifiedFileWarning",
    "SlowCodecWarning",
    "TmdNbDeprecationWarning",
    "TmdNbWarning",
    "UndecodedMetadataWarning",
    "renamed_keyword",
    "shorten",
    "warn",
]

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


class TmdNbWarning(UserWarning):
    """Base of every warning tmd_nb gives: ``warnings.simplefilter("ignore", TmdNbWarning)`` silences them all.

    Each points at the line of the caller's code that called tmd_nb (see :func:`warn`), and its
    message is one line in lower case (format names aside) naming the file as ``'path'``.
    """


class MetadataNotStoredWarning(TmdNbWarning):
    """Metadata was handed to a format that does not hold it (NPY, TMD), so it is not saved."""


class UndecodedMetadataWarning(TmdNbWarning):
    """A foreign file's metadata could not be decoded, so it is returned as the text it is."""


class ModifiedFileWarning(TmdNbWarning):
    """A file tmd_nb wrote was changed by other software since; its own data was loaded."""


class ChecksumWarning(TmdNbWarning):
    """A file's checksum does not match its content; the content was loaded anyway."""


class LegacyFormatWarning(TmdNbWarning):
    """A file uses an older version of its format, read as the current one."""


class DroppedContentWarning(TmdNbWarning):
    """Part of a file is not loaded (extra layers, a rotation, an oversized trailer)."""


class SlowCodecWarning(TmdNbWarning, RuntimeWarning):
    """An installed compression library is unusable, so a slower one stands in (same files)."""


class TmdNbDeprecationWarning(TmdNbWarning, FutureWarning):
    """An old spelling (a keyword name) still works but will go; the message names the new one."""


#: Frames from these files are tmd_nb's own, or the machinery between its frames (``with`` blocks, imports).
_OWN = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _own(filename: str) -> bool:
    return filename.startswith((_OWN, "<frozen ")) or filename.endswith("contextlib.py")


def warn(message: str, category: type[Warning] = TmdNbWarning) -> None:
    """``warnings.warn`` pointing at the first frame outside tmd_nb: the caller's line, however deep the call."""
    frame = sys._getframe(1)
    level = 2  # warnings.warn's count: 1 is this frame, 2 our caller
    while frame.f_back is not None and _own(frame.f_code.co_filename):
        frame = frame.f_back
        name = frame.f_code.co_filename
        if not ("importlib" in name and "_bootstrap" in name):  # warnings.warn does not count these
            level += 1
    warnings.warn(shorten(message), category, stacklevel=level)


F = TypeVar("F", bound=Callable[..., Any])


def renamed_keyword(old: str, new: str) -> Callable[[F], F]:
    """Let ``func`` take its old keyword ``old=`` for ``new=``, with a :class:`TmdNbDeprecationWarning`."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{func.__name__}() got both {old}= and {new}=; give {new}= only")
                warn(f"{func.__name__}({old}=...) is now {func.__name__}({new}=...)", TmdNbDeprecationWarning)
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
