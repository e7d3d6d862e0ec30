"""Read and write TrueMap / GelSight ``.tmd`` height-map files.

On-disk layout
--------------
All numbers are little-endian. Offsets below are from the start of the file.

``header``
    ASCII text ending in a NUL byte. It starts with ``Binary TrueMap Data File`` (real files
    vary in letter case, e.g. ``Binary Truemap Data File``), followed by

    * ``" v2.0\\r\\n\\0"`` in TrueMap v2.0 files: 32 bytes in all, so the header fills the
      32-byte field exactly, with no padding;
    * ``"\\r\\n\\0"`` in the older v1 files: 27 bytes, not padded either.

``comment``
    ASCII text ending in a NUL byte, of any length, starting right after the header's NUL;
    it may be empty (the NUL alone). TrueMap v6 writes ``"Created by TrueMap v6\\r\\n\\0"``
    (24 bytes, so its dimensions start at byte 56); GelSight writes an empty comment (its
    dimensions start at byte 33); v1 files seen so far have an empty comment (byte 27, so
    their dimensions start at byte 28).

``dimensions``
    ``uint32 width``, ``uint32 height``, ``float32 x_length``, ``float32 y_length`` (in mm),
    then, in v2.0 files only, ``float32 x_offset``, ``float32 y_offset``.

``data``
    ``width * height`` float32 heights, row-major: ``height`` rows of ``width`` values.

Nothing follows the data: the file size must equal the end of the dimensions plus
``4 * width * height``, and a file where it does not is rejected. The version (hence whether
offsets are present) is read from the header text; both dimensions must be at least 1.

Units and missing points
------------------------
Lengths, offsets and heights are millimetres (the TrueMap convention). TrueMap marks a point
without data with the fill height :data:`FILL`, the float32 nearest to -1e10 (bits
``0xd01502f9``): exactly that value, and no other, counts as missing. Real TrueMap v6 scans hold
it wherever the sensor saw nothing (29 % of one 648 x 642 scan); a height of -10 km is no
height, while any other value, however large, is kept as measured.

Python mapping
--------------
:func:`load_tmd` returns ``{"height_map": float32 array (height, width), "x_length",
"y_length", "x_offset", "y_offset": float, "lateral_unit": "mm", "height_unit": "mm",
"comment": str, "tmd_version": int}``. Fill heights are NaN (missing points are NaN in memory,
in every format tmd_nb reads); with ``mmap=True`` the heights are the file's own values, fill
included, since a memory map cannot change them (:func:`missing` finds them). Lengths and
offsets are the exact float32 values as Python floats. ``tmd_version`` is ``2`` for v2.0 files
and ``1`` for v1 files; v1 files store no offsets, and theirs are reported as ``0.0`` (the
origin) so that code over a folder of mixed scans needs no special case; ``tmd_version == 1``
tells they were not stored. The comment is returned verbatim (trailing ``"\\r\\n"``
included), decoded as Latin-1 so that any byte survives; it is ASCII in every known file.

:func:`export_to_tmd` always writes a v2.0 file with the canonical header
``Binary TrueMap Data File v2.0\\r\\n\\0``. It converts lengths and offsets from
``lateral_unit`` and heights from ``height_unit`` (or ``units``; millimetres when none is given;
``docs/FORMAT.md``) into millimetres by the exact power of ten, and writes every NaN height as
:data:`FILL`; a height given in another unit that converts onto :data:`FILL` is refused (it would
load as a missing point), while in millimetres :data:`FILL` is the fill itself. Loading a v2.0
file and exporting the result reproduces the file byte for byte, fill points included, except
that a header spelled in another letter case (``Truemap``) is written in the canonical case,
and a NaN stored in the file itself (TrueMap writes none) is written back as the fill: both
mean "no data".

This module imports only numpy, the standard library and tmd_nb's own codec modules.
"""

from __future__ import annotations

import math
import numbers
import os
import stat
import struct
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FormatError, MetadataNotStoredWarning
from ..heightmap import in_memory, keys_text, split_height_map
from . import units
from ._io import Progress, Reporter, open_file, read_into
from .atomic import atomic_write
from .base import Format
from .npy import write_data

__all__ = [
    "FIELDS",
    "FILL",
    "FORMAT",
    "HEADER_V2",
    "MAGIC",
    "UNIT",
    "export_to_tmd",
    "load_tmd",
    "looks_like_tmd",
    "missing",
]

MAGIC = b"Binary TrueMap Data File"
HEADER_V2 = MAGIC + b" v2.0\r\n\0"
HEADER_V1 = MAGIC + b"\r\n\0"
_MAGIC_LOWER = MAGIC.lower()
_DTYPE = np.dtype("<f4")
_DIMS_V1 = struct.Struct("<IIff")
_DIMS_V2 = struct.Struct("<IIffff")
_HEADER_MAX = 64  # the header's NUL must come within this many bytes
_HEAD_READ = 64 << 10
#: The metadata a .tmd file holds besides the heights (and what load_tmd adds: "tmd_version").
FIELDS = ("x_length", "y_length", "x_offset", "y_offset", "comment")
#: The unit of every length and height in a .tmd file.
UNIT = "mm"
#: The height TrueMap writes where a point has no data: float32(-1e10), and only that value.
FILL = np.float32(-1e10)
_FILL_BITS = FILL.view(np.uint32)
#: Keys a writer honours by converting into millimetres, and load_tmd gives back as "mm".
_UNIT_KEYS = frozenset(units.UNIT_KEYS)
_KNOWN_KEYS = frozenset({"height_map", *FIELDS, "tmd_version"})

PathLike = str | os.PathLike[str]


def looks_like_tmd(head: bytes | bytearray) -> bool:
    """Whether ``head`` (the first bytes of a file) starts with the TrueMap header, in any letter case."""
    return bytes(head[: len(MAGIC)]).lower() == _MAGIC_LOWER


class _Head:
    """The start of an open file, read on demand, never past the file's size."""

    def __init__(self, fp: Any, size: int) -> None:
        self.fp = fp
        self.size = size
        self.buf = bytearray()

    def ensure(self, n: int) -> None:
        """Read until ``n`` bytes (or the whole file, if shorter) are in ``buf``."""
        n = min(n, self.size)
        while len(self.buf) < n:
            chunk = self.fp.read(max(n - len(self.buf), _HEAD_READ))
            if not chunk:
                break
            self.buf += chunk

    def find_nul(self, start: int) -> int:
        """Index of the first NUL at or after ``start``, or -1 if the file has none."""
        pos = start
        while True:
            i = self.buf.find(0, pos)
            if i >= 0 or len(self.buf) >= self.size:
                return i
            pos = len(self.buf)
            self.ensure(len(self.buf) + _HEAD_READ)
            if len(self.buf) == pos:  # the file shrank under us
                return -1


def missing(heights: np.ndarray) -> np.ndarray:
    """Where ``heights`` (float32, as stored in a ``.tmd`` file) hold :data:`FILL`: bool, same shape."""
    return np.asarray(heights, dtype=_DTYPE).view(np.uint32) == _FILL_BITS


def _parse_version(header: bytes, where: str) -> int:
    rest = header[len(MAGIC) :].strip(b" \r\n\t").lower()
    if rest == b"":
        return 1
    if rest in (b"v2.0", b"v2"):
        return 2
    raise FormatError(
        f"{where} is a TrueMap file of unsupported version {rest.decode('latin-1')!r} (supported: v1 and v2.0)"
    )


def load_tmd(path: PathLike, *, mmap: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Load a TrueMap v1 / v2.0 or GelSight ``.tmd`` file (layout: see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.
    mmap : bool, default False
        Return the height map as a read-only memory map of the file instead of reading it; its
        fill heights stay :data:`FILL` (find them with :func:`missing`).
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the heights are read.

    Returns
    -------
    dict
        ``{"height_map": float32 array (height, width), "x_length", "y_length", "x_offset",
        "y_offset", "lateral_unit", "height_unit", "comment", "tmd_version"}``: lengths and
        heights in mm, fill heights as NaN (except with ``mmap``); v1 files report offsets
        ``0.0`` and ``tmd_version`` 1. Every value is a type :func:`tmd_nb.export_to_npz` stores.

    Raises
    ------
    FormatError
        The file is not a well-formed ``.tmd`` file; its size is checked against its header
        before anything is allocated.
    OSError
        The file cannot be read.
    """
    where = repr(os.fspath(path))
    with open_file(path, where) as fp:  # refuses a pipe before opening it: open() would block
        st = os.fstat(fp.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{where} is not a regular file")
        size = st.st_size
        if size == 0:
            raise FormatError(f"{where} is empty, not a TrueMap .tmd file")
        head = _Head(fp, size)
        head.ensure(_HEAD_READ)
        if len(head.buf) < len(MAGIC) and _MAGIC_LOWER.startswith(bytes(head.buf).lower()):
            raise FormatError(f"{where} is truncated: its {size} bytes end inside the header")
        if not looks_like_tmd(head.buf):
            raise FormatError(
                f"{where} is not a TrueMap .tmd file: it does not start with {MAGIC.decode()!r} "
                f"(it starts with {bytes(head.buf[:32])!r})"
            )
        header_end = head.buf.find(0, len(MAGIC), _HEADER_MAX)
        if header_end < 0:
            if size <= _HEADER_MAX and len(head.buf) == size:
                raise FormatError(
                    f"{where} is truncated: its {size} bytes end inside the header "
                    "(no NUL after 'Binary TrueMap Data File...')"
                )
            raise FormatError(f"{where} has a malformed header: no NUL within its first {_HEADER_MAX} bytes")
        version = _parse_version(bytes(head.buf[:header_end]), where)
        comment_start = header_end + 1
        comment_end = head.find_nul(comment_start)
        if comment_end < 0:
            raise FormatError(
                f"{where} is truncated: the comment starting at byte {comment_start} has no "
                f"terminating NUL before the end of the file ({size} bytes)"
            )
        comment = bytes(head.buf[comment_start:comment_end]).decode("latin-1")
        dims = _DIMS_V2 if version == 2 else _DIMS_V1
        data_start = comment_end + 1 + dims.size
        if data_start > size:
            raise FormatError(
                f"{where} is truncated: its {size} bytes end inside the dimensions "
                f"(bytes {comment_end + 1}..{data_start - 1})"
            )
        head.ensure(data_start)
        if len(head.buf) < data_start:
            raise FormatError(f"{where} is truncated: it shrank to {len(head.buf)} bytes while being read")
        values = dims.unpack_from(head.buf, comment_end + 1)
        width, height, x_length, y_length = values[:4]
        x_offset, y_offset = values[4:] if version == 2 else (0.0, 0.0)
        if width == 0 or height == 0:
            raise FormatError(
                f"{where} declares an empty height map ({width} x {height}); a scan has at least one point"
            )
        # Python ints: no overflow, and the size is checked before anything is allocated.
        count = width * height
        expected = data_start + _DTYPE.itemsize * count
        if expected != size:
            problem = (
                f"is truncated: {size - data_start} of {expected - data_start} data bytes present"
                if expected > size
                else f"has {size - expected} bytes after the height data"
            )
            raise FormatError(
                f"{where} {problem} (header: TrueMap v{'2.0' if version == 2 else '1'}, "
                f"{width} x {height} float32 heights from byte {data_start}, so "
                f"{expected} bytes in all; the file has {size})"
            )
        if mmap:
            height_map: np.ndarray = np.memmap(fp, dtype=_DTYPE, mode="r", offset=data_start, shape=(height, width))
        else:
            fp.seek(data_start)
            height_map = np.empty((height, width), dtype=_DTYPE)  # no per-value Python work
            read_into(fp, height_map.data.cast("B"), where, Reporter(progress, height_map.nbytes))
    if not height_map.dtype.isnative:  # pragma: no cover - big-endian hosts only
        height_map = height_map.astype(np.float32)
    if not mmap:
        height_map[missing(height_map)] = np.nan  # in place: no second copy of the heights
    return {
        "height_map": height_map,
        "x_length": x_length,
        "y_length": y_length,
        "x_offset": x_offset,
        "y_offset": y_offset,
        "lateral_unit": UNIT,
        "height_unit": UNIT,
        "comment": comment,
        "tmd_version": version,
    }


def _float32_heights(array: np.ndarray, unit: str) -> np.ndarray:
    """``array`` (heights in ``unit``) as little-endian float32 millimetres, NaN as :data:`FILL`.

    In millimetres, any value that float32 would change is refused; from another unit the
    conversion rounds to the nearest float32 (the exact factor applied in float64 first).
    """
    kind = array.dtype.kind
    if kind == "c":
        raise ValueError(
            f"height map has complex dtype {array.dtype}; a .tmd file holds real float32 heights "
            "(save .real / .imag separately, or use export_to_npz)"
        )
    if kind not in "biuf":  # pragma: no cover - split_height_map already refuses these
        raise ValueError(f"height map has dtype {array.dtype}, not a real numeric dtype")
    if units.convert(1.0, unit, UNIT) != 1.0:
        with np.errstate(over="ignore", invalid="ignore"):
            converted = units.convert(np.asarray(array, dtype=np.float64), unit, UNIT).astype(_DTYPE)
            overflow = np.isinf(converted) & ~np.isinf(array)
        if overflow.any():
            bad = np.unravel_index(int(np.argmax(overflow)), array.shape)
            raise ValueError(
                f"height {array[bad].item()!r} {unit} at index {tuple(int(i) for i in bad)} is beyond "
                "float32 range in mm, so a .tmd file cannot hold it"
            )
        # In mm, FILL is the fill (a loaded scan's own); a height converted onto it would load as missing.
        fill = missing(converted)
        if fill.any() and (onto_fill := fill & ~np.isnan(array)).any():
            bad = np.unravel_index(int(np.argmax(onto_fill)), array.shape)
            raise ValueError(
                f"height {array[bad].item()!r} {unit} at index {tuple(int(i) for i in bad)} is TrueMap's "
                "fill value -1e10 in mm, which a .tmd file holds as a missing point"
            )
    else:
        converted = _exact_float32(array)
    nan = np.isnan(converted)
    if nan.any():
        converted = np.where(nan, FILL, converted)
    return converted


def _exact_float32(array: np.ndarray) -> np.ndarray:
    """``array`` as little-endian float32, refusing any value that float32 would change."""
    kind = array.dtype.kind
    if array.dtype == _DTYPE or kind == "b" or (kind in "iuf" and array.dtype.itemsize <= 2):
        return array.astype(_DTYPE, copy=False)  # float16, (u)int8/16 and bool are exact in float32
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(_DTYPE)
        if kind == "f":
            back = converted.astype(array.dtype)
            exact = (back == array) | (np.isnan(back) & np.isnan(array))
        else:
            # Compare as integers: a float64 comparison would round large int64 values.
            wide = converted.astype(np.float64)
            info = np.iinfo(array.dtype)
            in_range = (wide >= info.min) & (wide <= float(info.max)) & (wide < 2.0 ** (info.bits - (kind == "i")))
            back = np.where(in_range, wide, 0).astype(array.dtype)
            exact = in_range & (back == array)
    if not exact.all():
        bad = np.unravel_index(int(np.argmin(exact)), array.shape)
        raise ValueError(
            f"height map of dtype {array.dtype} holds values that float32 cannot represent exactly "
            f"(first at index {tuple(int(i) for i in bad)}: {array[bad].item()!r}); a .tmd file stores float32, "
            "so convert explicitly with height_map.astype(numpy.float32) if rounding is acceptable"
        )
    return converted


def _float32_value(meta: Mapping[str, Any], key: str, default: float, unit: str) -> bytes:
    """The float32 bytes of ``meta[key]`` (or ``default``), a length in ``unit``, in millimetres."""
    value = meta.get(key)
    if value is None:
        value = default
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{key} must be a real number, not {type(value).__module__}.{type(value).__qualname__}")
    try:
        as_float = units.convert(float(value), unit, UNIT)
    except OverflowError:  # an int beyond float range
        as_float = math.inf
    with np.errstate(over="ignore"):
        as_f32 = np.array([as_float], dtype=_DTYPE)
    if not math.isfinite(as_float) or not np.isfinite(as_f32[0]):
        raise ValueError(f"{key} must be a finite number within float32 range, not {value!r}")
    if key.endswith("length") and as_float != 0 and as_f32[0] == 0:  # an offset may round to the origin
        raise ValueError(f"{key} {value!r} {unit} is too small for a .tmd file: it rounds to 0 mm in float32")
    return as_f32.tobytes()


def export_to_tmd(
    data: np.ndarray | Mapping[str, Any], output_path: PathLike, *, progress: Progress | None = None
) -> str:
    """Save a height map as a TrueMap v2.0 ``.tmd`` file at exactly ``output_path``.

    A ``.tmd`` file holds millimetres: lengths and offsets given in ``lateral_unit`` and heights
    in ``height_unit`` (or ``units`` for both; millimetres when no unit key is given) are
    converted by the exact power of ten, then stored as float32, so a conversion rounds each
    value to the nearest float32. Data in millimetres is stored exactly (values
    :func:`load_tmd` returned come back bit for bit). NaN heights are written as the fill
    :data:`FILL`, TrueMap's mark of a missing point. Everything is validated before the file is
    touched, and the file is replaced atomically.

    Parameters
    ----------
    data : numpy.ndarray or mapping
        A 2-D array, or a dict with ``"height_map"`` and optionally ``x_length``, ``y_length``
        (default: width and height, i.e. one lateral unit per pixel), ``x_offset``, ``y_offset``
        (default 0.0), ``lateral_unit``, ``height_unit``, ``units`` (default mm) and ``comment``
        (ASCII without NUL; default empty, written verbatim).
        A Dask array is computed first: a ``.tmd`` file is written in one piece.
    output_path : str or os.PathLike
        Where to write.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the heights are written.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    ValueError
        A height in mm that float32 cannot represent exactly (the message names it), or that a
        conversion puts onto :data:`FILL`, an empty or too large map, a length that is not a
        finite float32 (or that float32 rounds to 0 mm), a comment that is not ASCII, a unit
        that is not a known length (the message names the key and the known units).
    TypeError
        ``data`` is not a height map, or a field has the wrong type.

    Warns
    -----
    MetadataNotStoredWarning
        ``data`` holds keys a ``.tmd`` file cannot store; the warning names them.
    """
    array, meta = split_height_map(in_memory(data))  # a Dask array is computed: TMD is written whole
    height, width = array.shape
    if width == 0 or height == 0:
        raise ValueError(f"height map is empty (shape {array.shape}); a .tmd file holds at least one point")
    if width > 0xFFFFFFFF or height > 0xFFFFFFFF:
        raise ValueError(f"height map shape {array.shape} is too large for a .tmd file (uint32 dimensions)")
    lateral, height_unit = _units(meta)
    heights = np.ascontiguousarray(_float32_heights(array, height_unit))
    comment = meta.get("comment")
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise TypeError(f"comment must be a str, not {type(comment).__module__}.{type(comment).__qualname__}")
    if not comment.isascii() or "\0" in comment:
        raise ValueError(f"comment must be ASCII text without NUL characters to fit a .tmd file: {comment[:80]!r}")
    fields = b"".join(
        [
            _float32_value(meta, "x_length", float(width), lateral),
            _float32_value(meta, "y_length", float(height), lateral),
            _float32_value(meta, "x_offset", 0.0, lateral),
            _float32_value(meta, "y_offset", 0.0, lateral),
        ]
    )
    # A unit key is honoured by converting, so it is not "lost"; one that is no string is.
    extra = [k for k in meta if k not in _KNOWN_KEYS and not (k in _UNIT_KEYS and isinstance(meta[k], str))]
    if extra:
        warnings.warn(
            f"a .tmd file stores the height map, lengths, offsets and comment only; not saved to "
            f"{os.fspath(output_path)!r}: {keys_text(extra, 10)}. Use export_to_npz to keep them.",
            MetadataNotStoredWarning,
            stacklevel=2,
        )
    header = HEADER_V2 + comment.encode("ascii") + b"\0" + struct.pack("<II", width, height) + fields
    with atomic_write(output_path) as fp:
        fp.write(header)
        write_data(fp, heights, progress)  # C-contiguous, so its bytes go out row-major
    return os.path.abspath(output_path)


def _units(meta: Mapping[str, Any]) -> tuple[str, str]:
    """The lateral and height units of ``meta``; ``ValueError`` naming the key of one that is no known length."""
    units.factors(meta)
    phys = units.physical(meta)
    return phys.lateral_unit, phys.height_unit


FORMAT = Format(
    name="tmd",
    title="TMD",
    extensions=(".tmd",),
    summary="TrueMap / GelSight scan: heights, lengths, offsets, comment",
    recognise=lambda head, path: looks_like_tmd(head),
    load=load_tmd,
    save=export_to_tmd,
    keeps=frozenset(FIELDS),
    derived=frozenset({"tmd_version", *units.UNIT_KEYS}),
    label="TrueMap",
    holds="the height map, lengths, offsets and comment",
)
