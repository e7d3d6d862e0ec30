"""The NPY encoding: the header numpy writes and reads, and the array bytes, streamed and read defensively.

The NPY format itself (a height map alone in a ``.npy`` file) is :mod:`tmd_nb.formats.npy`; the
zip archive (NPZ members), the deflate pieces and the embedded record use the encoding here.

Format (as :mod:`numpy.lib.format` defines it; tmd_nb writes byte-identical files)
    * 6 bytes of magic, ``\\x93NUMPY`` (:data:`NPY_MAGIC`);
    * 2 bytes of version, major then minor: ``1 0``, or ``2 0`` when the header needs more than
      65535 bytes (only versions 1.0 and 2.0 are read);
    * the header length ``HEADER_LEN``: 2 bytes (version 1.0) or 4 bytes (2.0), little-endian;
    * the header: the ASCII repr of a Python dict with the keys ``'descr'`` (the dtype, as
      :func:`numpy.lib.format.dtype_to_descr` gives it), ``'fortran_order'`` (bool) and
      ``'shape'`` (tuple of ints), padded with spaces and ended with ``\\n`` so that the array
      data start at a multiple of 64 bytes;
    * the array data: ``prod(shape) * itemsize`` bytes, in C order, or Fortran order when
      ``fortran_order`` is true, nothing after them.

Speed
    Writing streams the bytes of the array in pieces (slices of a contiguous array, copies of at
    most one piece of any other), so no copy of the array is ever made; reading goes straight into
    the preallocated result, or memory-maps the file.

Safety
    No pickle is ever loaded: object dtypes are refused, and so are structured and subarray
    dtypes (the kinds read are :data:`ALLOWED_KINDS`); headers longer than
    :data:`MAX_HEADER_SIZE` are refused, and the size the header claims must be exactly what the
    file stores before anything is allocated for it. Every malformed input raises
    :class:`~tmd_nb.errors.FormatError` naming the file and the problem.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npformat

from ..errors import FormatError
from ..heightmap import is_dask_array
from . import _io
from ._io import Progress, Reporter, WriteBehind, describe, open_file, read_into

__all__ = ["NPY_MAGIC", "read_npy", "write_npy"]

NPY_MAGIC = b"\x93NUMPY"
# dtype kinds a member may have: bool, integers, floats, complex, str, bytes, datetime64, timedelta64.
ALLOWED_KINDS = frozenset("biufcUSMm")
MAX_HEADER_SIZE = 10_000


def is_array_kind(dtype: np.dtype) -> bool:
    """Whether arrays of ``dtype`` are stored and read (no pickle): an allowed kind, no fields or subarrays."""
    return dtype.kind in ALLOWED_KINDS and dtype.fields is None and dtype.subdtype is None


def parse_header(fp: BinaryIO, where: str, available: int | None = None) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """Read an NPY header from ``fp``; return dtype, shape, fortran order and header length.

    The header's declared length is checked (against :data:`MAX_HEADER_SIZE` and, when given,
    the ``available`` bytes the file or member holds) before it is read, so that a lying length
    costs nothing; only then does numpy's parser see the header bytes.
    """
    prefix = fp.read(12)
    hlen = header_length(prefix, where)
    if available is not None and hlen > available:
        raise FormatError(f"{where} is truncated: its NPY header claims {hlen} bytes, the data hold {available}")
    head = prefix[:hlen] + fp.read(hlen - len(prefix)) if hlen > len(prefix) else prefix[:hlen]
    if len(head) != hlen:
        raise FormatError(f"{where} is truncated: its NPY header is cut off")
    if hlen < len(prefix):
        fp.seek(hlen - len(prefix), io.SEEK_CUR)
    buffer = io.BytesIO(head)
    try:
        with warnings.catch_warnings():
            # numpy parses the header as a Python literal: a hostile one with "\c" in a string
            # would also print Python's DeprecationWarning/SyntaxWarning about the escape.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            version = npformat.read_magic(buffer)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(buffer, max_header_size=MAX_HEADER_SIZE)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(buffer, max_header_size=MAX_HEADER_SIZE)
            else:
                raise FormatError(f"{where} uses unsupported NPY format version {version}")
    except FormatError:
        raise
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError...
        problem: str | None = str(exc)
    else:
        problem = None
    if problem is not None:
        raise FormatError(f"{where} has a malformed NPY header: {problem}")
    if buffer.tell() != hlen:
        raise FormatError(f"{where} has a malformed NPY header")
    if dtype.hasobject:
        raise FormatError(
            f"{where} holds Python objects (dtype {dtype}); loading them would need pickle, which is refused"
        )
    if not is_array_kind(dtype):
        raise FormatError(f"{where} has unsupported dtype {dtype}")
    if dtype.itemsize == 0:  # numpy would allocate one byte per item for a shape no data vouch for
        raise FormatError(f"{where} has zero-size items (dtype {dtype.str}), which are refused")
    if any(n < 0 for n in shape):
        raise FormatError(f"{where} has a negative dimension in its shape {shape}")
    return dtype, tuple(int(n) for n in shape), bool(fortran), hlen


def header_length(prefix: bytes, where: str) -> int:
    """The whole header's length from its first 12 bytes (fewer if the data are shorter).

    Lets a stream read exactly the header, and no more, before parsing it.
    """
    if not prefix.startswith(NPY_MAGIC) or len(prefix) < 10:
        if prefix.startswith(NPY_MAGIC) or (len(prefix) < len(NPY_MAGIC) and NPY_MAGIC.startswith(prefix)):
            raise FormatError(f"{where} is truncated: its NPY header is cut off")
        raise FormatError(f"{where} is not an NPY array (bad magic bytes {prefix[:8]!r})")
    if prefix[6:8] == b"\x01\x00":
        hlen = 10 + struct.unpack_from("<H", prefix, 8)[0]
    elif len(prefix) < 12:
        raise FormatError(f"{where} is truncated: its NPY header is cut off")
    else:
        hlen = 12 + struct.unpack_from("<I", prefix, 8)[0]
    if hlen > MAX_HEADER_SIZE + 12:
        raise FormatError(f"{where} has an NPY header of {hlen} bytes, more than the {MAX_HEADER_SIZE} allowed")
    return hlen


def data_size(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize


def header_bytes(array: np.ndarray, what: str) -> bytes:
    """The NPY header numpy itself would write for ``array`` (format 1.0, or 2.0 if it must).

    A Dask array gets the header of the same data in memory (C order).
    """
    dtype = array.dtype
    if dtype.hasobject:
        raise ValueError(f"{what} has dtype {dtype}: Python objects cannot be saved without pickle, which is refused")
    if not is_array_kind(dtype):
        raise TypeError(f"{what} has unsupported dtype {dtype}; use a bool, numeric, str, bytes or datetime dtype")
    if is_dask_array(array):  # written in C order, block row by block row
        return c_order_header(dtype, tuple(array.shape))
    return _header(npformat.header_data_from_array_1_0(array))


def c_order_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The NPY header of an array of ``dtype`` and ``shape`` in C order, as numpy writes it: for
    data written a piece at a time, never whole in memory."""
    return _header({"descr": npformat.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})


def _header(header: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    try:
        npformat.write_array_header_1_0(buf, header)
    except ValueError:  # header longer than 64 KiB (a huge number of dimensions)
        buf = io.BytesIO()
        npformat.write_array_header_2_0(buf, header)
    return buf.getvalue()


def data_pieces(array: np.ndarray, piece: int) -> Iterator[memoryview]:
    """The bytes of ``array`` in the order its NPY header promises, in pieces of at most ``piece``.

    Contiguous arrays (C or Fortran order) are sliced without copying; other layouts are copied
    one piece at a time, never as a whole. A Dask array is computed one block row at a time
    (:func:`block_row_pieces`).
    """
    if array.nbytes == 0:
        return
    if is_dask_array(array):
        yield from block_row_pieces(array, piece)
        return
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
    elif array.flags.f_contiguous:
        flat = array.T.reshape(-1)
    else:
        flat = None
    if flat is not None:
        raw = flat.view(np.uint8).data
        for start in range(0, len(raw), piece):
            yield raw[start : start + piece]
        return
    step = max(1, piece // array.itemsize)
    for block in np.nditer(array, flags=["external_loop", "buffered", "zerosize_ok"], buffersize=step, order="C"):
        # nditer reuses its buffer: this copy is one piece only. With external_loop it yields arrays;
        # numpy's stubs type the items as tuples.
        yield memoryview(block.tobytes())  # type: ignore[attr-defined]


def block_row(array: Any, i: int) -> np.ndarray:
    """Block row ``i`` of a 2-D Dask array, computed, as a C-contiguous numpy array of the promised shape."""
    computed = array.blocks[i].compute()
    if isinstance(computed, np.ma.MaskedArray):  # ascontiguousarray would drop the mask: masked points saved as heights
        raise TypeError(
            f"block row {i} of the Dask array computed to a masked array; make the masked points NaN "
            "(da.ma.filled(array, np.nan)) and save the mask as a separate metadata entry"
        )
    band = np.ascontiguousarray(computed)
    if band.shape != (array.chunks[0][i], array.shape[1]) or band.dtype != array.dtype:
        raise ValueError(
            f"block row {i} of the Dask array computed to shape {band.shape} and dtype {band.dtype}, "
            f"not the {(array.chunks[0][i], array.shape[1])} and {array.dtype} its chunks promise"
        )
    return band


def block_rows(array: Any, start: int = 0) -> Iterator[np.ndarray]:
    """The block rows of a 2-D Dask array from block row ``start`` on, computed in turn
    (:func:`block_row`): the next one on a helper thread while the caller handles this one, so that
    at most two are held at a time."""
    count = array.numblocks[0]
    if start >= count:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmd_nb-block-row")
    try:
        ahead = pool.submit(block_row, array, start)
        for i in range(start, count):
            band = ahead.result()
            if i + 1 < count:
                ahead = pool.submit(block_row, array, i + 1)
            yield band
            del band
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def block_row_pieces(array: Any, piece: int) -> Iterator[memoryview]:
    """The C-order bytes of a 2-D Dask array, computed one block row at a time, in pieces of ``piece``.

    Every piece but the last is exactly ``piece`` bytes, as :func:`data_pieces` cuts an array in
    memory, so that what is made of the pieces (a deflate stream cut into chunks) is byte for byte
    the same. A piece straddling two block rows is the only copy made. The next block row is
    computed on a helper thread while this one is written (Dask's own latency hidden behind the
    compression), so at most two block rows are held at a time, besides the pieces in flight.
    """
    carry = bytearray()
    for band in block_rows(array):
        raw = band.reshape(-1).view(np.uint8).data
        pos = 0
        if carry:
            pos = min(piece - len(carry), len(raw))
            carry += raw[:pos]
            if len(carry) < piece:
                continue
            yield memoryview(bytes(carry))
            carry = bytearray()
        while len(raw) - pos >= piece:
            yield raw[pos : pos + piece]
            pos += piece
        carry += raw[pos:]
        del band, raw
    if carry:
        yield memoryview(bytes(carry))


def write_npy(fp: BinaryIO, array: np.ndarray, progress: Progress | None = None) -> None:
    """Write ``array`` to ``fp`` in NPY format (no pickle), streamed in pieces without a copy.

    ``progress(done_bytes, total_bytes)`` is called after each piece of array data. A Dask
    array is streamed one block row at a time, into the same bytes as the array in memory.
    """
    if not is_dask_array(array):
        array = np.asanyarray(array)
    fp.write(header_bytes(array, "array"))
    write_data(fp, array, progress)


def write_data(fp: BinaryIO, array: np.ndarray, progress: Progress | None) -> None:
    """Stream the bytes of ``array`` into ``fp`` in pieces (no copy), starting write-back as they go."""
    reporter = Reporter(progress, array.nbytes)
    behind = WriteBehind(fp, array.nbytes)
    try:
        for piece in data_pieces(array, _io.CHUNK):
            fp.write(piece)
            behind.wrote(len(piece))
            reporter.add(len(piece))
    finally:
        behind.close()
    reporter.finish()


def read_npy(
    path: str | os.PathLike[str],
    *,
    mmap: bool = False,
    progress: Progress | None = None,
    check: Callable[[np.dtype, tuple[int, ...], str], None] | None = None,
) -> np.ndarray:
    """Read an NPY file; with ``mmap`` the result is a read-only memory map.

    The data are read straight into the result (no intermediate buffer), in pieces that drive
    ``progress(done_bytes, total_bytes)``. ``check(dtype, shape, where)`` may refuse the array
    from its header alone, before any data is read.
    """
    where = describe(path)
    with open_file(path, where) as fp:
        size = os.fstat(fp.fileno()).st_size
        dtype, shape, fortran, offset = parse_header(fp, where, available=size)
        if check is not None:
            check(dtype, shape, where)
        expected = offset + data_size(dtype, shape)
        if expected != size:
            raise FormatError(
                f"{where}: header claims {expected - offset} data bytes but the file stores {size - offset}"
            )
        if mmap and math.prod(shape) > 0:
            array: np.ndarray = np.memmap(
                fp, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C"
            )
            if progress is not None:
                progress(array.nbytes, array.nbytes)
            return array
        array = empty_array(dtype, shape, fortran, where)
        reporter = Reporter(progress, array.nbytes)
        read_into(fp, bytes_of(array), where, reporter)
        reporter.finish()
        return array


def empty_array(dtype: np.dtype, shape: tuple[int, ...], fortran: bool, where: str) -> np.ndarray:
    try:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    except (MemoryError, ValueError) as exc:
        raise FormatError(f"{where}: cannot allocate an array of shape {shape} and dtype {dtype}: {exc}") from None


def bytes_of(array: np.ndarray) -> memoryview:
    """A writable byte view of a freshly allocated (hence contiguous) array."""
    if array.nbytes == 0:
        return memoryview(bytearray())
    return array.reshape(-1, order="A").view(np.uint8).data
