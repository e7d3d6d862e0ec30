"""The compression libraries: ISA-L, libdeflate and zlib, and the checks libdeflate passes at import; base64.

ISA-L (``isal``) and libdeflate (the ``deflate`` package) are optional here: without them zlib
makes the same files, more slowly. libdeflate's whole-buffer decompressor is called through ctypes
(:class:`_WholeInflater`), and both its compressor and its decompressor are checked against known
vectors when this module is imported; a release that fails is not used (:data:`LIBDEFLATE_PROBLEM`
says why). :mod:`.deflate` and :mod:`.inflate` read :data:`isal_zlib`, :data:`libdeflate` and
:data:`whole_inflater` from here when they run, so one place decides which library is used.
"""

from __future__ import annotations

import binascii
import ctypes
import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import FormatError, SlowCodecWarning, warn

isal_zlib: ModuleType | None
try:  # ISA-L: the same deflate format, several times faster. A declared dependency, but optional here.
    from isal import isal_zlib as isal_zlib
except ImportError:  # pragma: no cover - exercised by monkeypatching isal_zlib to None
    isal_zlib = None

libdeflate: ModuleType | None
try:  # libdeflate: whole streams only, but closer to zlib's sizes at several times its speed. Optional here.
    import deflate as libdeflate
except ImportError:  # pragma: no cover - exercised by monkeypatching libdeflate to None
    libdeflate = None

pybase64: ModuleType | None
try:  # SIMD base64: tens of times binascii's speed. A declared dependency, but optional here.
    import pybase64 as pybase64
except ImportError:  # pragma: no cover - exercised by monkeypatching pybase64 to None
    pybase64 = None

__all__ = [
    "INFLATE_ERRORS",
    "LIBDEFLATE_PROBLEM",
    "b64decode",
    "b64encode",
    "crc32_combine",
    "crc32_of",
    "isal_zlib",
    "libdeflate",
    "whole_inflater",
]

#: The libdeflate levels the named levels of :mod:`.deflate` use, checked at import.
LIBDEFLATE_LEVELS = (2, 10)

# What inflating a damaged stream can raise (besides ValueError and the like).
INFLATE_ERRORS: tuple[type[BaseException], ...] = (zlib.error,)
if isal_zlib is not None:
    INFLATE_ERRORS += (isal_zlib.error,)


def crc32_of(data: Any, crc: int = 0) -> int:
    return (isal_zlib.crc32 if isal_zlib is not None else zlib.crc32)(data, crc)


def b64decode(text: Any) -> bytes:
    """The bytes of the base64 ``text`` (ASCII ``str`` or any bytes-like object), strictly: only the
    alphabet, then its padding, nothing after; :class:`binascii.Error` (a ValueError) otherwise."""
    if pybase64 is not None:
        return pybase64.b64decode(text, validate=True)
    data = binascii.a2b_base64(text, strict_mode=True)
    # strict mode still takes padding after a whole group ("QUJD=", "QUJD===="), which pybase64
    # refuses: a file must not load or fail depending on whether pybase64 is installed
    if len(text) != 4 * -(-len(data) // 3):
        raise binascii.Error("Excess padding after the data")
    return data


def b64encode(data: Any) -> bytes:
    """The base64 text of ``data`` (any bytes-like object), without a newline."""
    if pybase64 is not None:
        return pybase64.b64encode(data)
    return binascii.b2a_base64(data, newline=False)


_CRC_POLY = 0xEDB88320  # CRC-32's polynomial, bit-reversed


def _multmodp(a: int, b: int) -> int:
    """``a * b`` modulo CRC-32's polynomial (zlib's multmodp: bit-reversed, x^0 in the top bit)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial, for k = 0..31
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc1`` of ``a``, ``crc2`` of ``b`` and ``len(b)`` (zlib's algorithm).

    ISA-L's when it has one; Python's zlib module has none, and this is a few microseconds.
    """
    if isal_zlib is not None and hasattr(isal_zlib, "crc32_combine"):
        return int(isal_zlib.crc32_combine(crc1, crc2, len2))
    p, k, n = 1 << 31, 3, len2  # x^(8 * len2): the shift of crc1 past len2 bytes
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


class _WholeInflater:
    """libdeflate's ``libdeflate_deflate_decompress_ex`` through ctypes, from the ``deflate`` package's own library.

    The package's Python API returns a new buffer and does not say where the stream ended; the C
    call inflates into a buffer we own and reports how many input bytes the stream took, so bytes
    after its end are refused as on the streaming path. The GIL is released during the call.
    Unavailable (None) when the library does not export the symbol (then the streaming path is used).
    """

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        self.alloc = lib.libdeflate_alloc_decompressor
        self.alloc.restype, self.alloc.argtypes = ctypes.c_void_p, []
        self.free = lib.libdeflate_free_decompressor
        self.free.restype, self.free.argtypes = None, [ctypes.c_void_p]
        self.run = lib.libdeflate_deflate_decompress_ex
        self.run.restype = ctypes.c_int
        size_p = ctypes.POINTER(ctypes.c_size_t)
        self.run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
        self.run.argtypes += [size_p, size_p]

    def __call__(self, data: np.ndarray, out: np.ndarray, where: str) -> None:
        """Inflate all of ``data`` into all of ``out`` (contiguous uint8 arrays), or raise FormatError."""
        d = self.alloc()
        if not d:  # pragma: no cover - out of memory
            raise MemoryError("libdeflate could not allocate a decompressor")
        used, made = ctypes.c_size_t(0), ctypes.c_size_t(0)
        try:
            result = self.run(
                d, data.ctypes.data, data.nbytes, out.ctypes.data, out.nbytes, ctypes.byref(used), ctypes.byref(made)
            )
        finally:
            self.free(d)
        if result == 3:  # LIBDEFLATE_INSUFFICIENT_SPACE
            raise FormatError(f"{where} holds more data than its sizes say")
        if result != 0:  # LIBDEFLATE_BAD_DATA: corrupt or cut off
            raise FormatError(f"{where} is corrupt or truncated: its deflate stream does not inflate")
        if made.value != out.nbytes:
            raise FormatError(f"{where}: its deflate stream ends after {made.value} of {out.nbytes} bytes")
        if used.value != data.nbytes:
            raise FormatError(f"{where} has {data.nbytes - used.value} bytes after the end of its deflate stream")


# libdeflate at import: known vectors
# ------------------------------------
# The ``deflate`` package's public API compresses well (``deflate_compress``), but its inflate
# neither says where the stream ended (so bytes after it could not be refused) nor releases the GIL,
# and it allocates the result itself: so the whole-member inflate calls the library inside the
# package's extension module through ctypes, with signatures declared here. pyproject.toml caps the
# package at the releases tested; and at import both directions are checked against known vectors
# (a stream zlib made, a fixed stream, a trailing byte, a short buffer, corrupt data). A release
# that fails any check is not used: named levels fall back to zlib's (see the top of :mod:`.deflate`),
# and members inflate through ISA-L or zlib, with a warning saying why.

# A fixed raw deflate stream (zlib level 9, fixed Huffman codes) and what it inflates to.
_KNOWN_STREAM = bytes.fromhex("2bc94d89cf4bb2524854c848cd4ccf2851c84d2cd051c84e2d285148ca2c5148cb2f02d17a0a2554560700")
_KNOWN_PLAIN = b"tmd_nb: a height map, kept bit for bit. " * 3
# Varied, partly compressible input (dynamic Huffman codes, short and long matches), 19 KB: a few ms.
_VECTOR = b"".join(i.to_bytes(4, "little") for i in range(2000)) + b"height map " * 1000


def _compressor_problem(lib: Any) -> str | None:
    """Why ``lib.deflate_compress`` does not make raw deflate streams zlib inflates back, or None."""
    for level in LIBDEFLATE_LEVELS:
        try:
            out = lib.deflate_compress(_VECTOR, level)
            d = zlib.decompressobj(-15)
            back = d.decompress(bytes(out))
        except Exception as exc:
            return f"its deflate_compress at level {level} fails the known vector ({type(exc).__name__}: {exc})"
        if back != _VECTOR or not d.eof or d.unused_data:
            return f"its deflate_compress at level {level} makes a stream that does not inflate to its input"
    return None


def _inflater_problem(inflate: Callable[[np.ndarray, np.ndarray, str], None]) -> str | None:
    """Why ``inflate`` (a :class:`_WholeInflater`) does not inflate the known vectors as it should, or None."""

    def run(stream: bytes, size: int) -> bytes:
        out = np.zeros(size, dtype=np.uint8)
        inflate(np.frombuffer(stream, dtype=np.uint8).copy(), out, "known vector")
        return out.tobytes()

    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    made = c.compress(_VECTOR) + c.flush()
    checks: list[tuple[str, bytes, int, bytes | str]] = [
        ("a stream zlib made", made, len(_VECTOR), _VECTOR),
        ("a fixed stream", _KNOWN_STREAM, len(_KNOWN_PLAIN), _KNOWN_PLAIN),
        ("a stream with a byte after its end", made + b"\0", len(_VECTOR), "after the end"),
        ("a stream into a buffer one byte short", made, len(_VECTOR) - 1, "more data than its sizes say"),
        ("a stream into a buffer one byte long", made, len(_VECTOR) + 1, f"ends after {len(_VECTOR)} of"),
        ("corrupt data", b"\xff" * 64, 1000, "does not inflate"),
    ]
    for what, stream, size, expected in checks:
        try:
            got: bytes | str = run(stream, size)
        except FormatError as exc:
            got = str(exc)
        except Exception as exc:
            return f"its decompressor fails on {what} ({type(exc).__name__}: {exc})"
        if got != expected and not (isinstance(expected, str) and isinstance(got, str) and expected in got):
            return f"its decompressor gets {what} wrong"
    return None


def _checked_libdeflate(lib: Any) -> tuple[Any, _WholeInflater | None, str | None]:
    """The ``deflate`` module and the whole-member inflater, each None unless it passes its checks; and why not."""
    if lib is None:
        return None, None, None
    problem = _compressor_problem(lib)
    if problem is not None:
        return None, None, problem
    try:
        inflater: _WholeInflater | None = _WholeInflater(lib._deflate.__file__)
    except (OSError, AttributeError):  # a build that does not export libdeflate's API: streaming inflate
        return lib, None, None
    assert inflater is not None
    problem = _inflater_problem(inflater)
    return lib, (None if problem else inflater), problem


libdeflate_package = libdeflate
#: Why the installed ``deflate`` package (libdeflate) is not used, or not all of it; None when it is.
LIBDEFLATE_PROBLEM: str | None
libdeflate, whole_inflater, LIBDEFLATE_PROBLEM = _checked_libdeflate(libdeflate_package)
if LIBDEFLATE_PROBLEM is not None:
    warn(
        f"tmd_nb does not use the installed deflate package {getattr(libdeflate_package, '__version__', '?')} "
        f"(libdeflate) as it is: {LIBDEFLATE_PROBLEM}; ISA-L and zlib stand in (the same files, made more slowly)",
        SlowCodecWarning,
    )
