"""NPY files and NPZ (zip) archives of NPY members, read defensively and written in one pass.

This layer knows nothing about height maps or metadata: it moves named numpy arrays. What it
promises is safety: no pickle is ever loaded, a header's claimed size is compared with the
bytes actually stored before anything is allocated for it, and every malformed input raises
:class:`~tmd_nb.errors.FormatError` naming the file (``OSError`` subclasses pass through).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npformat

from .errors import FormatError

__all__ = ["Progress", "read_npy", "read_npz", "write_npy", "write_npz", "NPY_MAGIC", "ZIP_MAGIC"]

Progress = Callable[[int, int], None]

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# dtype kinds a member may have: bool, integers, floats, complex, str, bytes, datetime64, timedelta64.
ALLOWED_KINDS = frozenset("biufcUSMm")
MAX_HEADER_SIZE = 10_000
# Deflate cannot expand data by more than about 1032:1; anything claiming more is lying.
MAX_DEFLATE_RATIO = 1100
CHUNK = 1 << 22


def _describe(path: str | os.PathLike[str]) -> str:
    return repr(os.fspath(path))


def _parse_header(fp: BinaryIO, where: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Read an NPY header from ``fp``; return dtype, shape, fortran order and header length."""
    magic = fp.read(len(NPY_MAGIC))
    if magic != NPY_MAGIC:
        raise FormatError(f"{where} is not an NPY array (bad magic bytes {magic[:8]!r})")
    try:
        fp.seek(0)
        version = npformat.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fp, max_header_size=MAX_HEADER_SIZE)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fp, max_header_size=MAX_HEADER_SIZE)
        else:
            raise FormatError(f"{where} uses unsupported NPY format version {version}")
    except FormatError:
        raise
    except Exception as exc:  # numpy's header parser tokenizes untrusted text: any failure is a bad header
        raise FormatError(f"{where} has a malformed NPY header: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject:
        raise FormatError(f"{where} holds Python objects (dtype {dtype}); loading them would need pickle, which is refused")
    if dtype.kind not in ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise FormatError(f"{where} has unsupported dtype {dtype}")
    return dtype, tuple(int(n) for n in shape), bool(fortran), fp.tell()


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize


def _read_into(fp: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], fortran: bool, where: str,
               progress: Progress | None = None) -> np.ndarray:
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    buf = memoryview(array.reshape(-1, order="A").view(np.uint8)) if array.size else memoryview(b"")
    total = len(buf)
    done = 0
    while done < total:
        n = fp.readinto(buf[done:done + CHUNK])
        if not n:
            raise FormatError(f"{where} is truncated: {done} of {total} data bytes present")
        done += n
        if progress is not None:
            progress(done, total)
    return array


def write_npy(fp: BinaryIO, array: np.ndarray, progress: Progress | None = None) -> None:
    """Write ``array`` to ``fp`` in NPY format (no pickle)."""
    npformat.write_array(fp, array, allow_pickle=False)
    if progress is not None:
        progress(array.nbytes, array.nbytes)


def read_npy(path: str | os.PathLike[str], *, mmap: bool = False, progress: Progress | None = None) -> np.ndarray:
    """Read an NPY file; with ``mmap`` the result is a read-only memory map."""
    where = _describe(path)
    with open(path, "rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        dtype, shape, fortran, offset = _parse_header(fp, where)
        expected = offset + _nbytes(dtype, shape)
        if expected != size:
            raise FormatError(
                f"{where}: header claims {expected - offset} data bytes but the file stores {size - offset}")
        if mmap and math.prod(shape) > 0:
            return np.memmap(fp, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        return _read_into(fp, dtype, shape, fortran, where, progress)


def write_npz(fp: BinaryIO, members: Mapping[str, np.ndarray], *, compress: bool = True, level: int | None = None,
              progress: Progress | None = None) -> None:
    """Write ``members`` as ``<name>.npy`` entries of a zip archive that ``numpy.load`` opens."""
    total = sum(a.nbytes for a in members.values())
    done = 0
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(fp, "w", compression=method, compresslevel=level, allowZip64=True) as zf:
        for name, array in members.items():
            with zf.open(name + ".npy", "w", force_zip64=array.nbytes > 0x7FFF0000) as member:
                npformat.write_array(member, array, allow_pickle=False)
            done += array.nbytes
            if progress is not None:
                progress(done, total)


def read_npz(path: str | os.PathLike[str], *, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Read every ``.npy`` member of a zip archive, in archive order, keyed by name without ``.npy``."""
    where = _describe(path)
    with open(path, "rb") as raw:
        try:
            zf = zipfile.ZipFile(raw)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OverflowError, MemoryError,
                NotImplementedError, UnicodeDecodeError) as exc:
            raise FormatError(f"{where} is not a readable NPZ (zip) archive: {exc}") from None
        with zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise FormatError(f"{where} has duplicate member names")
            total = sum(i.file_size for i in infos)
            done = 0
            out: dict[str, np.ndarray] = {}
            for info in infos:
                member = f"{where} member {info.filename!r}"
                if not info.filename.endswith(".npy"):
                    raise FormatError(f"{member} is not an NPY array")
                if info.flag_bits & 0x1:
                    raise FormatError(f"{member} is encrypted")
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise FormatError(f"{member} uses unsupported compression method {info.compress_type}")
                try:
                    out[info.filename[:-4]] = _read_member(zf, info, member)
                except FormatError:
                    raise
                except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OverflowError, MemoryError,
                        NotImplementedError, RuntimeError, io.UnsupportedOperation) as exc:
                    raise FormatError(f"{member} is corrupt: {exc}") from None
                done += info.file_size
                if progress is not None:
                    progress(done, total)
            return out


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    with zf.open(info) as fp:
        header = io.BytesIO(fp.read(min(info.file_size, MAX_HEADER_SIZE + 16)))
        dtype, shape, fortran, offset = _parse_header(header, where)
        nbytes = _nbytes(dtype, shape)
        if offset + nbytes != info.file_size:
            raise FormatError(f"{where}: header claims {nbytes} data bytes but the archive stores "
                              f"{info.file_size - offset}")
        limit = info.compress_size if info.compress_type == zipfile.ZIP_STORED else info.compress_size * MAX_DEFLATE_RATIO
        if info.file_size > limit + 1024:
            raise FormatError(f"{where} claims {info.file_size} bytes from {info.compress_size} stored bytes")
        rest = header.read()

        class _Prefixed(io.RawIOBase):
            def readinto(self, b):  # type: ignore[override]
                nonlocal rest
                if rest:
                    n = min(len(b), len(rest))
                    b[:n] = rest[:n]
                    rest = rest[n:]
                    return n
                return fp.readinto(b)

        array = _read_into(_Prefixed(), dtype, shape, fortran, where)
        if fp.read(1):
            raise FormatError(f"{where} has bytes after the array data")
        return array
