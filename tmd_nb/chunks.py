"""Height maps read a window at a time, for maps bigger than memory: :func:`open_dask`, :func:`load_metadata`.

What is read, and what it costs
    NPY files, and NPZ members stored without compression (``compress=False`` or ``level=0``)
        are memory-mapped: a window reads only the pages it covers.
    NPZ members tmd_nb deflated at levels 1-3 (the default is 2)
        carry a chunk index of the points where their deflate stream restarts from scratch (about
        every 4 MiB of uncompressed bytes, at most 256 points per member; see
        :mod:`tmd_nb.storage.archive`). A window inflates every stretch between restart points
        that holds any of its rows, whole: it costs the rows it spans (at full width), plus at
        most one stretch before its first row and one after its last.
    Other deflated members (written by ``numpy.savez_compressed``, or by tmd_nb at levels 4-9)
        are one deflate stream with no restart point: every window inflates the whole member (to
        check its CRC-32), so reading a map in N blocks costs inflating it N times.
        :func:`open_dask` names such arrays ``tmd_nb-from-start-...`` so their graphs say so; convert
        the file (``tmd_nb.convert`` or ``tmd_nb.save``) to make it cheap.

    Memory: a window holds its own result and one piece (1 MiB) of inflated bytes at a time.

What a window checks
    The file: every read checks that the path still names the file that was opened (device,
    inode, size and modification time in ns, as :func:`open_windows` found them). A file saved
    again (tmd_nb saves by renaming a new file over the old one), replaced or rewritten since is a
    :class:`FormatError` naming it, never numbers from the new file read with the old layout.
    A rewrite that keeps the size and the modification time (to the clock's resolution) is not seen.
    The data, for deflated members: every stretch a window inflates must inflate to exactly the
    length the chunk index gives it and end exactly where the index says, and its CRC-32 must match
    (the member's CRC-32 for members without an index). Files tmd_nb writes now store a CRC-32 per
    stretch beside the index (:mod:`tmd_nb.storage.archive`), which :func:`open_windows` checks,
    combined, against the member's CRC-32: an index that does not match the stream is refused
    before any window is read. Files of older tmd_nb versions carry the index without those
    checksums: their windows check the lengths and ends of the stretches they read, not the
    bytes (:func:`tmd_nb.load` checks the member's CRC-32; saving the file again adds the
    checksums). NPY files have no checksum, and a stored member's CRC-32 covers all of it: their
    windows check the file's identity only.

Distributed
    The array-like objects handed to Dask hold a path, offsets and the header's dtype and shape,
    and nothing else: they pickle in a few hundred bytes, so the graph runs on a
    ``dask.distributed`` cluster whose workers see the same file system.

This module imports dask only inside :func:`open_dask`.
"""

from __future__ import annotations

import io
import itertools
import os
import zlib
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .errors import FormatError
from .formats import npy, npz, registry, tmd
from .formats.base import PathLike
from .heightmap import HEIGHT_MAP, check_height_map_header
from .storage import npyfile
from .storage._io import describe, open_file
from .storage.archive import checked_members, read_npz
from .storage.inflate import MemberStream
from .storage.libraries import INFLATE_ERRORS, crc32_combine, crc32_of

_inflater: ModuleType
try:  # the same inflater the archive reader uses, when installed
    from isal import isal_zlib as _inflater
except ImportError:  # pragma: no cover - isal is a declared dependency
    _inflater = zlib

__all__ = ["DASK_MISSING", "HeightMapWindows", "load_metadata", "open_dask", "open_windows"]

#: What :func:`open_dask` says when dask is not installed.
DASK_MISSING = "open_dask needs dask: pip install 'tmd_nb[dask]'"
# Compressed bytes read, and uncompressed bytes produced, per step while inflating a window.
_STEP = 1 << 20


class HeightMapWindows:
    """A stored 2-D height map that reads any window on demand: ``windows[r0:r1, c0:c1]`` is a numpy array.

    Made by :func:`open_windows`; what :func:`open_dask` wraps. It holds the file's path, identity
    and offsets only, so it pickles small and works in other processes.
    """

    def __init__(
        self,
        path: str,
        dtype: np.dtype,
        shape: tuple[int, int],
        fortran: bool,
        *,
        data_offset: int,
        identity: tuple[int, int, int, int],
        deflated: bool = False,
        header_size: int = 0,
        csize: int = 0,
        crc: int = 0,
        index: Sequence[tuple[int, int]] = (),
        crcs: Sequence[int] | None = None,
    ) -> None:
        self.path, self.dtype, self.shape, self.fortran = path, dtype, shape, fortran
        #: File offset of the array bytes (memory-mapped) or of the member's deflate stream.
        self.data_offset = data_offset
        #: (device, inode, size, mtime in ns) of the file when it was opened: every read checks it.
        self.identity = identity
        self.deflated, self.header_size, self.csize, self.crc = deflated, header_size, csize, crc
        #: Restart points of the deflate stream: (compressed, uncompressed) offsets in the member.
        self.index = list(index)
        #: CRC-32 of each piece between restart points (None: a file of an older tmd_nb, lengths only).
        self.crcs = None if crcs is None else list(crcs)

    ndim = 2

    @property
    def from_start(self) -> bool:
        """Whether every window must be inflated from the start of the stream (no restart points)."""
        return self.deflated and not self.index

    @property
    def kind(self) -> str:
        return "from-start" if self.from_start else "deflate" if self.deflated else "mmap"

    @property
    def usize(self) -> int:
        """The member's uncompressed size: NPY header and array data."""
        return self.header_size + npyfile.data_size(self.dtype, self.shape)

    def __repr__(self) -> str:
        return f"HeightMapWindows({self.path!r}, {self.kind}, shape={self.shape}, dtype={self.dtype})"

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (self.path, self.identity, self.data_offset, self.kind, self.shape, self.dtype.str)

    def __getitem__(self, key: Any) -> np.ndarray:
        """``windows[rows, cols]``: slices, ints or integer arrays (each axis on its own, as Dask asks)."""
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) > 2 or any(k is Ellipsis or k is None for k in key):
            raise IndexError(f"index a height map with at most two ints, slices or integer arrays, not {key!r}")
        key = key + (slice(None),) * (2 - len(key))
        picks: list[range | np.ndarray] = []
        drop = []
        for axis, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                picks.append(range(*k.indices(n)))
                continue
            index = np.asarray(k)
            if index.dtype == bool:
                if index.shape != (n,):
                    raise IndexError(f"boolean index of shape {index.shape} does not match axis {axis} of size {n}")
                index = np.flatnonzero(index)
            if index.dtype.kind not in "iu" or index.ndim > 1:
                raise IndexError(f"index {k!r} on axis {axis} is not an int, a slice or a 1-D integer array")
            if index.size and not (-n <= index.min() and index.max() < n):
                raise IndexError(f"index {k!r} is out of bounds for axis {axis} with size {n}")
            if index.ndim == 0:
                drop.append(axis)
            picks.append(np.atleast_1d(index % n if n else index))
        rows, cols = picks
        # A Fortran-order file holds the transpose in C order.
        window = self._window(cols, rows, self.shape[::-1]).T if self.fortran else self._window(rows, cols, self.shape)
        return window.reshape([n for axis, n in enumerate(window.shape) if axis not in drop]) if drop else window

    def _check_identity(self, f: io.FileIO) -> None:
        """Refuse a file that is not the one opened: replaced (another inode) or rewritten (size, time)."""
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self.identity:
            raise FormatError(
                f"{describe(self.path)} has changed since open_dask opened it (replaced or rewritten); open it again"
            )

    def _window(self, rows: range | np.ndarray, cols: range | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``stored[rows][:, cols]`` of the C-order array of ``shape`` the file holds."""
        if not len(rows) or not len(cols):
            return np.empty((len(rows), len(cols)), dtype=self.dtype)
        r0, r1, c0, c1 = min(rows), max(rows) + 1, min(cols), max(cols) + 1
        plain = isinstance(rows, range) and isinstance(cols, range) and rows.step == 1 and cols.step == 1
        if not plain:  # read the rectangle around the selection, then pick
            around = self._window(range(r0, r1), range(c0, c1), shape)
            return around[np.subtract(rows, r0)][:, np.subtract(cols, c0)]
        with open_file(self.path, describe(self.path)) as f:
            self._check_identity(f)
            if not self.deflated:
                mapped = np.memmap(f, dtype=self.dtype, mode="r", offset=self.data_offset, shape=shape)
                out = np.array(mapped[r0:r1, c0:c1])
                del mapped
            else:
                out = self._inflated(f, r0, r1, c0, c1, shape)
            self._check_identity(f)  # not rewritten while it was read
        return out

    def _inflated(self, f: io.FileIO, r0: int, r1: int, c0: int, c1: int, shape: tuple[int, int]) -> np.ndarray:
        out = np.empty((r1 - r0, c1 - c0), dtype=self.dtype)
        row_bytes = shape[1] * self.dtype.itemsize
        done = 0
        pending = bytearray()
        for piece in self._inflate(f, self.header_size + r0 * row_bytes, self.header_size + r1 * row_bytes):
            pending += piece
            n = len(pending) // row_bytes
            if n:
                block = np.frombuffer(pending, dtype=self.dtype, count=n * shape[1]).reshape(n, shape[1])
                out[done : done + n] = block[:, c0:c1]
                del block
                del pending[: n * row_bytes]
                done += n
        return out

    def _inflate(self, f: io.FileIO, begin: int, end: int) -> Iterator[bytes]:
        """The member's uncompressed bytes ``[begin, end)``, in pieces, each stretch between restart points checked.

        Every stretch the window touches is inflated whole, from its restart point to the next
        (from the start of the member to its end when there is no index), and must inflate to
        exactly the length the index gives it and end exactly where the index says; its CRC-32
        is checked against the stored one (the member's own CRC-32 when there is no index).
        """
        where = f"{describe(self.path)} member 'height_map.npy'"
        bounds = [(0, 0), *self.index, (self.csize, self.usize)]
        crcs = [self.crc] if not self.index else self.crcs
        for k, ((cs, us), (ce, ue)) in enumerate(itertools.pairwise(bounds)):
            if ue <= begin or us >= end:
                continue
            last = k == len(bounds) - 2
            d = _inflater.decompressobj(-15)
            f.seek(self.data_offset + cs)
            cpos, upos, crc, tail = cs, us, 0, b""
            try:
                while True:
                    if not tail and cpos < ce:
                        tail = f.read(min(_STEP, ce - cpos))
                        if not tail:
                            raise FormatError(f"{where} is truncated: its compressed data is cut off")
                        cpos += len(tail)
                    out = d.decompress(tail, _STEP)
                    tail = d.unconsumed_tail
                    if out:
                        if upos + len(out) > ue:
                            raise FormatError(
                                f"{where} is corrupt or has a damaged tmd_nb chunk index: the stretch "
                                f"from byte {us} inflates to more than its {ue - us} bytes"
                            )
                        crc = crc32_of(out, crc)
                        if upos + len(out) > begin and upos < end:
                            yield out[max(0, begin - upos) : end - upos]
                        upos += len(out)
                    elif d.eof or cpos >= ce:
                        break
            except INFLATE_ERRORS as exc:
                raise FormatError(f"{where} is corrupt: {exc}") from None
            if upos != ue or tail or d.unused_data or d.eof != last:
                raise FormatError(
                    f"{where} is corrupt or has a damaged tmd_nb chunk index: the stretch from byte {us} "
                    f"inflates to {upos - us} bytes, not {ue - us}"
                )
            if crcs is not None and crc != crcs[k]:
                raise FormatError(
                    f"{where} is corrupt: CRC-32 {crc:#010x} of bytes {us}-{ue} does not match "
                    f"the stored {crcs[k]:#010x}"
                )


def open_windows(path: PathLike) -> HeightMapWindows:
    """The height map of an NPY file or of an NPZ archive's ``height_map`` member, ready to read in windows.

    Reads and checks the headers only. Raises :class:`FormatError` for a malformed file or one of
    another format, ``OSError`` if it cannot be read.
    """
    where = describe(path)
    full = os.path.abspath(os.fspath(path))
    fmt = registry.recognise(path)
    with open_file(path, where) as f:
        st = os.fstat(f.fileno())
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if fmt is npy.FORMAT:
            dtype, shape, fortran, offset = npyfile.parse_header(f, where)
            check_height_map_header(dtype, shape, where)
            if offset + npyfile.data_size(dtype, shape) != st.st_size:
                raise FormatError(
                    f"{where}: header claims {npyfile.data_size(dtype, shape)} data bytes "
                    f"but the file stores {st.st_size - offset}"
                )
            return HeightMapWindows(full, dtype, (shape[0], shape[1]), fortran, data_offset=offset, identity=identity)
        if fmt is not npz.FORMAT:
            raise FormatError(
                f"{where} is a {fmt.title} file; open_dask reads NPY and NPZ files: "
                "convert it first (tmd_nb.convert or tmd_nb.save)"
            )
        members = {m.key: m for m in checked_members(f, where)}
        m = members.get(HEIGHT_MAP)
        if m is None:
            raise FormatError(f"{where} has no 'height_map' array")
        member = f"{where} member {m.name!r}"
        stream = MemberStream(f, m, member)
        problem = None
        try:
            head = stream.read(min(m.usize, 12))
            hlen = npyfile.header_length(head, member)
            if hlen > m.usize:
                raise FormatError(f"{member} is shorter than its own NPY header")
            head += stream.read(hlen - len(head))
        except INFLATE_ERRORS as exc:
            problem = f"{member} is corrupt: {exc}"
        if problem is not None:
            raise FormatError(problem)
        dtype, shape, fortran, offset = npyfile.parse_header(io.BytesIO(head), member)
        check_height_map_header(dtype, shape, member)
        if offset != len(head) or offset + npyfile.data_size(dtype, shape) != m.usize:
            raise FormatError(f"{member}: its NPY header does not match the {m.usize} bytes the archive stores")
        if not m.deflated:
            return HeightMapWindows(
                full, dtype, (shape[0], shape[1]), fortran, data_offset=m.start + offset, identity=identity
            )
        points = [(0, 0), *m.index, (m.csize, m.usize)]
        if any(not (c0 < c1 and u0 < u1) for (c0, u0), (c1, u1) in itertools.pairwise(points)):
            raise FormatError(f"{member} has a malformed tmd_nb chunk index")
        if m.crcs is not None:  # the pieces' CRCs, combined, give the member's: the index is what was written
            whole = 0
            for crc, ((_, u0), (_, u1)) in zip(m.crcs, itertools.pairwise(points), strict=True):
                whole = crc32_combine(whole, crc, u1 - u0)
            if whole != m.crc:
                raise FormatError(
                    f"{member} has a damaged tmd_nb chunk index: its checksums do not add up to the member's CRC-32"
                )
        return HeightMapWindows(
            full,
            dtype,
            (shape[0], shape[1]),
            fortran,
            data_offset=m.start,
            identity=identity,
            deflated=True,
            header_size=offset,
            csize=m.csize,
            crc=m.crc,
            index=m.index,
            crcs=m.crcs,
        )


def open_dask(path: PathLike, chunks: Any = "auto") -> Any:
    """A lazy Dask array of the height map of an NPY file or of an NPZ archive tmd_nb (or numpy) wrote.

    Nothing is read but the headers until the array (or a window of it) is computed; then each
    task reads only its own block: memory-mapped for NPY files and stored NPZ members, inflated
    from the nearest restart point for deflated members tmd_nb wrote, and from the start of the
    stream for other deflated members (the top of :mod:`tmd_nb.chunks` says what each
    costs). Slicing before computing reads only the slice: ``open_dask(p)[:256, :256].compute()``.

    Parameters
    ----------
    path : str or os.PathLike
        An ``.npy`` file, or an ``.npz`` archive with a ``height_map`` member.
    chunks : optional
        Any chunks ``dask.array.from_array`` takes. ``"auto"`` (the default) gives deflated
        members bands of whole rows (a block inflates whole rows anyway) and memory-mapped arrays
        blocks of Dask's usual size.

    Returns
    -------
    dask.array.Array
        Named ``tmd_nb-mmap-...``, ``tmd_nb-deflate-...``, or ``tmd_nb-from-start-...`` when every
        block must be inflated from the start of the stream. Its tasks hold the path and offsets,
        so it computes on a ``dask.distributed`` cluster whose workers see the file.
        :func:`load_metadata` gives the metadata.

    Raises
    ------
    ImportError
        dask is not installed (``pip install 'tmd_nb[dask]'``).
    FormatError
        The file is malformed, has no height map, or is of another format.
    OSError
        The file cannot be read.
    """
    try:
        import dask.array as da
        from dask.base import tokenize
    except ImportError as exc:
        raise ImportError(DASK_MISSING) from exc
    windows = open_windows(path)
    if isinstance(chunks, str) and chunks == "auto" and windows.deflated:
        chunks = (-1, "auto") if windows.fortran else ("auto", -1)
    name = f"tmd_nb-{windows.kind}-{tokenize(windows, chunks)}"
    meta = np.empty((0, 0), dtype=windows.dtype)
    # Dask fuses slicing into the reads (x[:256, :256] reads only that window) when fancy is left on.
    return da.from_array(windows, chunks=chunks, name=name, asarray=False, meta=meta)


def load_metadata(path: PathLike) -> dict[str, Any]:
    """The metadata of a saved height map (what :func:`tmd_nb.load` returns besides ``"height_map"``).

    NPZ archives: every member but the height map is read (its header is checked, its data are
    not). NPY files hold no metadata (``{}``, after checking the header). TMD files: the header,
    with the heights memory-mapped, never read. Other formats are loaded whole.

    Parameters
    ----------
    path : str or os.PathLike
        A file of any format :func:`tmd_nb.load` reads.

    Returns
    -------
    dict
        The metadata keys and values.

    Raises
    ------
    FormatError
        The file is malformed or of no supported format.
    OSError
        The file cannot be read.
    """
    fmt = registry.recognise(path)
    if fmt is npz.FORMAT:
        windows = open_windows(path)
        members = read_npz(path, skip={HEIGHT_MAP}, check=npz.check_member)  # the same limits as load_from_npz
        # The height map is only checked (dtype and shape), so it is stood in for by a view of no size.
        members[HEIGHT_MAP] = np.broadcast_to(np.zeros((), dtype=windows.dtype), windows.shape)
        result = npz.decode_npz_members(members, describe(path))
    elif fmt is npy.FORMAT:
        open_windows(path)
        return {}
    elif fmt is tmd.FORMAT:
        result = tmd.load_tmd(path, mmap=True)
    else:
        result = fmt.load(path)
    result.pop(HEIGHT_MAP, None)
    return result
