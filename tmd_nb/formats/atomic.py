"""Crash-safe file replacement.

Every writer in tmd_nb saves through :func:`atomic_write`: the bytes go to a hidden temporary
file beside the target (``.<name>.<random>.tmp``), are flushed to disk with ``fsync`` and only
then renamed over the target, so that at any instant the path holds either the complete old
file or the complete new one. On an exception the temporary file is removed and the target is
untouched; if the process is killed, the hidden temporary file is the only trace.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write", "temporary_name"]


_NAME_MAX = 255  # bytes in one path component on the usual file systems


def temporary_name(target: str) -> str:
    """The hidden temporary path used while ``target`` is being written.

    Named after the target; a very long target name is shortened so that the temporary name
    still fits where the target's own name fits.
    """
    directory, name = os.path.split(target)
    suffix = f".{secrets.token_hex(4)}.tmp"
    room = _NAME_MAX - 1 - len(suffix)
    encoded = os.fsencode(name)
    if len(encoded) > room:
        name = os.fsdecode(encoded[:room])
    return os.path.join(directory, f".{name}{suffix}")


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _naming(exc: OSError, target: str) -> OSError:
    """The same error about the file the user asked for, not about our hidden temporary file."""
    return type(exc)(exc.errno, exc.strerror, target)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``path`` atomically when the block ends without error.

    Parent directories are created. A new file gets the usual permissions (``0o666`` less the
    umask); a replaced file keeps its mode. A symbolic link at ``path`` is kept and the file it
    points to is replaced.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.islink(target):
        target = os.path.realpath(target)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    try:
        mode = os.stat(target).st_mode & 0o7777
    except FileNotFoundError:
        mode = None

    while True:
        tmp = temporary_name(target)
        try:
            # O_EXCL: never reuse a stranger's file; 0o666 lets the umask decide as for open().
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        except OSError as exc:
            raise _naming(exc, target) from exc
        break
    try:
        with os.fdopen(fd, "wb") as fp:
            yield fp
            fp.flush()
            os.fsync(fp.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _naming(exc, target) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
