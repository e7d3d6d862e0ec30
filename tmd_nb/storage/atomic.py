"""Crash-safe file replacement.

Every writer in tmd_nb saves through :func:`atomic_write`: the bytes go to a hidden temporary
file beside the target, are flushed to disk with ``fsync`` and only then renamed over the
target, so that at any instant the path holds either the complete old file or the complete new
one. On an exception the temporary file is removed and the target is untouched; if the process
is killed, the hidden temporary file is the only trace, and the next save of that file removes it.

Temporary names
    ``.<name>.<host>-<pid>-<random>.tmp``: ``<host>`` is 8 hex digits of a hash of the host name,
    ``<pid>`` the writing process's id in 8 hex digits, ``<random>`` 8 random hex digits. A
    ``<name>`` too long for the temporary name to fit in 255 bytes is cut (at a byte) to fit.
    The host and pid say whose file it is: :func:`stale_temporaries` finds only those left by a
    process of this host that no longer runs, so two programs saving into one folder never
    remove each other's temporary files.

What is never replaced (checked before anything is written, and again just before the rename)
    * anything that exists and is not a regular file (a symbolic link to one is followed): a
      directory raises ``IsADirectoryError``; a FIFO, socket, character or block device (such as
      ``/dev/null``) raises ``FileExistsError`` naming it and its kind;
    * a file the user may not write: ``PermissionError`` naming it. That is the case when
      ``os.access`` says so, and also for a file with no write permission bit at all (mode
      ``0444``) even when running as root, who may write anything: the owner marked it read-only.
      ``np.save`` would raise there too; a forced overwrite does not override a file's permissions.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import socket
import stat
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write", "check_replaceable", "stale_temporaries", "temporary_name"]


_NAME_MAX = 255  # bytes in one path component on the usual file systems
_SUFFIX_BYTES = len(".00000000-00000000-00000000.tmp")
_ROOM = _NAME_MAX - 1 - _SUFFIX_BYTES  # bytes of the target's name kept in a temporary name
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
_SUFFIX = re.compile(rb"\.([0-9a-f]{8})-([0-9a-f]{8})-[0-9a-f]{8}\.tmp\Z")


def _kept(name: str) -> bytes:
    """The part of a target's name that its temporary names start with (after the dot)."""
    return os.fsencode(name)[:_ROOM]


def temporary_name(target: str, pid: int | None = None) -> str:
    """A fresh hidden temporary path for writing ``target`` (see "Temporary names" above).

    ``pid`` defaults to this process; it fits the temporary name into 255 bytes wherever the
    target's own name fits.
    """
    directory, name = os.path.split(target)
    pid = os.getpid() if pid is None else pid
    suffix = f".{_HOST}-{pid:08x}-{secrets.token_hex(4)}.tmp"
    return os.path.join(directory, os.fsdecode(b"." + _kept(name) + os.fsencode(suffix)))


def _running(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie, killed and not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process, alive
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
    except FileNotFoundError:  # it ended meanwhile, or there is no /proc (not Linux)
        return not os.path.isdir("/proc/self")
    except OSError:
        return True
    return state not in ([b"Z"], [b"X"])


def stale_temporaries(*targets: str) -> list[str]:
    """The temporary files of ``targets`` whose writer, a process of this host, no longer runs.

    What killed saves left behind; a running writer's file (of this or another program) is
    never among them, and neither are files from other hosts sharing the folder. Each folder
    is listed once, however many targets it holds.
    """
    folders: dict[str, set[bytes]] = {}
    for target in targets:
        directory, name = os.path.split(target)
        folders.setdefault(directory, set()).add(b"." + _kept(name))
    stale = []
    for directory, prefixes in folders.items():
        try:
            names = os.listdir(os.fsencode(directory or "."))
        except OSError:
            continue
        for candidate in names:
            match = _SUFFIX.search(candidate, max(0, len(candidate) - _SUFFIX_BYTES))
            if (
                match
                and candidate[: match.start()] in prefixes
                and match[1].decode() == _HOST
                and not _running(int(match[2], 16))
            ):
                stale.append(os.path.join(directory, os.fsdecode(candidate)))
    return sorted(stale)


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


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_replaceable(target: str) -> None:
    """Raise unless ``target`` is absent or a regular file the user may write (see the module doc).

    ``target`` has its symbolic links resolved already.
    """
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "a special file")
        raise FileExistsError(errno.EEXIST, f"not a regular file ({kind}), so it is not replaced", target)
    if not os.access(target, os.W_OK) or not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(errno.EACCES, "write-protected (no write permission), so it is not replaced", target)


def _naming(exc: OSError, target: str) -> OSError:
    """The same error about the file the user asked for, not about our hidden temporary file."""
    return type(exc)(exc.errno, exc.strerror, target)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a binary file that replaces ``path`` atomically when the block ends without error.

    Parent directories are created. A new file gets the usual permissions (``0o666`` less the
    umask); a replaced file keeps its mode. A symbolic link at ``path`` is kept and the file it
    points to is replaced. Special and write-protected files are refused (see the module doc):
    ``IsADirectoryError``, ``FileExistsError``, ``PermissionError``, all naming the file.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.islink(target):
        target = os.path.realpath(target)
    check_replaceable(target)
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
        check_replaceable(target)  # again: it may have changed while the data were written
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise _naming(exc, target) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    for stale in stale_temporaries(target):  # what killed saves of this file left (their writers are gone)
        with contextlib.suppress(OSError):
            os.unlink(stale)
    _fsync_directory(directory)
