"""Plumbing tmd_nb's readers and writers share: opening and reading files safely, progress, write-behind.

Tunables here are read as ``_io.CHUNK`` (never imported by name) by the other modules, so that
one assignment changes them everywhere (tests lower them to exercise many chunks cheaply).
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Callable
from typing import BinaryIO

from ..errors import FormatError
from . import blockwise

__all__ = ["Progress"]

Progress = Callable[[int, int], None]

# Unit of I/O and of progress reports when reading and writing uncompressed data.
CHUNK = 1 << 23
# Large saves start writing back to disk every this many bytes, while they go on (see WriteBehind).
WRITE_BEHIND = 1 << 24


def describe(path: str | os.PathLike[str]) -> str:
    return repr(os.fspath(path))


def open_file(path: str | os.PathLike[str], where: str) -> io.FileIO:
    """Open for unbuffered reading; refuse a FIFO or socket, whose open or read could block forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0  # let open() raise the proper OSError
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        raise FormatError(f"{where} is not a regular file (a pipe or socket)")
    return io.FileIO(path, "rb")


class WriteBehind:
    """Start the disk write-back of a large save while it is still being written.

    The caller fsyncs at the end for durability (tmd_nb saves through ``atomic_write``); by then
    most of the data is already on disk, because a helper thread has been calling ``fdatasync``
    every :data:`WRITE_BEHIND` bytes, overlapping the disk with the compression. Files without a
    descriptor, and small saves, are left alone. Errors here are ignored: the final fsync is the
    one that reports them.
    """

    def __init__(self, fp: BinaryIO, total: int) -> None:
        self.fp = fp
        self.pending = 0
        self.thread: threading.Thread | None = None
        self.fd = -1
        if total < 2 * WRITE_BEHIND:
            return
        try:
            self.fd = fp.fileno()
        except (AttributeError, OSError, ValueError):
            return
        self.wake = threading.Event()
        self.stop = False
        self.requested = False
        self.thread = threading.Thread(target=self._run, name="tmd_nb-write-behind", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.requested:
                self.requested = False
                try:
                    sync(self.fd)
                except OSError:
                    return
            if self.stop:
                return

    def wrote(self, n: int) -> None:
        if self.thread is None:
            return
        self.pending += n
        if self.pending >= WRITE_BEHIND:
            self.pending = 0
            self.fp.flush()
            self.requested = True
            self.wake.set()

    def close(self) -> None:
        if self.thread is not None:
            self.stop = True
            self.wake.set()
            self.thread.join()
            self.thread = None


class Reporter:
    """Running total for ``progress(done_bytes, total_bytes)``, fed by whoever writes the bytes."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def add(self, n: int) -> None:
        if n and self.progress is not None:
            self.done += n
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress is not None and self.total == 0:
            self.progress(0, 0)


def pread_exactly(fd: int, buf: memoryview, offset: int, where: str, size: int | None = None) -> None:
    """Fill ``buf`` with the bytes of the file ``fd`` from ``offset`` (any thread: ``preadv`` keeps no position).

    Callers have checked the file's size (``size``, said in the error; else up to the end of
    ``buf``), so a file that runs out of bytes shrank while being read.
    """
    done, total = 0, len(buf)
    while done < total:
        n = os.preadv(fd, [buf[done:]], offset + done)
        if not n:
            # the file's size now, not where this piece stopped: of pieces read on several threads,
            # any may be the first to find the end
            try:
                present = min(os.fstat(fd).st_size, offset + done)
            except OSError:
                present = offset + done
            raise FormatError(
                f"{where} is truncated: it shrank while being read ({present} of "
                f"{offset + total if size is None else size} bytes present)"
            )
        done += n


def pread_parallel(fd: int, buf: memoryview, offset: int, where: str) -> None:
    """:func:`pread_exactly`, a block at a time on every core for a large ``buf``: copying out of
    the page cache is most of a read, and it shares."""
    size = offset + len(buf)
    blockwise.map_blocks(
        len(buf), 1, lambda start, stop: pread_exactly(fd, buf[start:stop], offset + start, where, size)
    )


def read_into(fp: io.RawIOBase | io.BufferedIOBase, buf: memoryview, where: str, reporter: Reporter) -> None:
    """Fill ``buf`` from ``fp`` in pieces of :data:`CHUNK` bytes, reporting each to ``reporter``.

    Callers have checked the file's size against ``len(buf)``, so a file that runs out of bytes
    shrank while being read. (Without progress to report, :func:`pread_parallel` reads on every core.)
    """
    done, total = 0, len(buf)
    while done < total:
        n = fp.readinto(buf[done : done + CHUNK])
        if not n:
            raise FormatError(
                f"{where} is truncated: it shrank while being read ({done} of {total} data bytes present)"
            )
        done += n
        reporter.add(n)
