"""Gwyddion native files (``.gwy``): written through the ``gwyfile`` library, read by tmd_nb's own parser.

A ``.gwy`` file is ``GWYP`` followed by one serialized ``GwyContainer``: an object is its type
name (NUL-terminated), a uint32 byte size and its components; a component is a name, a type
code (``b c i q d s o`` scalars, strings and objects; ``C I Q D S O`` arrays of them, each with a
uint32 count) and its value, all little-endian.

What :func:`export_to_gwy` writes (keys of the top container)
--------------------------------------------------------------
``/0/data``
    A ``GwyDataField``: the heights in SI units as float64 (metres when the height unit is a
    length; units from ``height_unit``/``lateral_unit``, else ``units``, else millimetres;
    another unit Gwyddion channels use, :data:`OTHER_UNITS` such as ``"V"``, is written as it
    is, unscaled, and any other is a ValueError naming the key), ``xreal``/``yreal`` =
    ``x_length``/``y_length`` in metres (the pixel size is ``xreal / xres``, as in Gwyddion;
    without lengths, one lateral unit per pixel), ``xoff``/``yoff`` from the offsets,
    ``si_unit_xy`` and ``si_unit_z`` (``GwySIUnit``). Missing points (NaN, and infinities) are
    filled with the mean of the finite heights, so that whatever ignores the mask (colour
    range, statistics) sees values within the data's range, never an invented 0, and masked.
    The mean is summed a row at a time and the row sums added exactly (``math.fsum``), then
    clamped into the heights' range: the same bits however a map is chunked.
``/0/mask``
    A ``GwyDataField`` of the same grid, 1 where masked, 0 elsewhere: present when the map has
    missing points or its metadata holds a ``"mask"`` (a bool array of the map's shape).
    Gwyddion has one mask per channel, so it is the union of the two: points a Gwyddion user
    should leave out of statistics or select, as the user's mask says, and the filled points,
    which are no measurement. tmd_nb's record keeps the two apart: the user's ``"mask"`` comes
    back as it was, and the missing points as NaN.
``/0/data/title``
    The ``title`` key when it is a string, else ``"Height"``.
``/0/meta``
    A ``GwyContainer`` of strings, which Gwyddion's metadata browser shows: the metadata keys
    whose values are strings, numbers, booleans or dates, as text.
``/tmd_nb/record.json``, ``/tmd_nb/<name>``
    tmd_nb's record (:mod:`tmd_nb.storage.embedded`) as string entries: the JSON as it is, each
    NPY array in base64 (``height_map`` when the float64 metres do not give back the exact map).

The file is not compressed: a Dask height map is streamed into ``/0/data`` block row by block
row (at most two block rows in memory, besides the record), the same bytes as the map in memory
gives. What the rest of the file needs of the heights (the fill, the mask, the record's patch,
``__missing__`` and fingerprint) is gathered from the block values in the writing process, as
they are written (the blocks themselves may be computed anywhere), and the container's size,
which precedes everything, is written last. Heights are written as they come while every one is
finite; a missing point stops the writing, not the gathering, and the block rows from the first
such point are computed a second time and written filled (two passes over those: each block row
is checked to give the same values again). A map whose record needs an exact copy of it (more
differing points than a patch holds) is computed whole, once a block shows it, as is one whose
finite heights sum beyond float64. A Gwyddion object's size is a uint32: a map beyond 4 GiB is
refused.

What :func:`load_gwy` reads
---------------------------
A file tmd_nb wrote comes back exactly as saved. Other files give the first channel
(``/0/data``, else the lowest-numbered ``/N/data``): ``{"height_map": float64 in the file's z
unit, every value as stored, "x_length", "y_length", "x_offset", "y_offset", "lateral_unit",
"height_unit"}`` as Gwyddion reads them (a length unit is ``"m"``: Gwyddion drops a unit's
prefix and keeps the numbers, :func:`_as_gwyddion_reads`), plus ``mask`` (a bool array of the map's shape, True
where ``/N/mask`` is above 0.5: in Gwyddion a mask selects, grains or a region, and does not
erase measured heights), ``title`` and ``gwyddion_meta`` (a dict of the channel's ``/N/meta``
strings) when present. A NaN stored in the data (Gwyddion's importers fill missing points
instead) stays NaN. A file whose data, mask, lengths, offsets or units changed after tmd_nb
wrote it (a rescale in Gwyddion, say) loads the file's own values with a warning, keeping the
other tmd_nb metadata keys; the points tmd_nb filled as missing that the file still masks stay
NaN (they are no measurement, whatever else changed), and ``mask`` is the rest of the file's mask.

Reading is tmd_nb's own (:class:`_Walk`): the file's whole structure is walked first (:func:`scan`)
without building anything: every name and string must end within its object, every object and
array must fit in its parent, nesting is at most :data:`MAX_DEPTH` deep. The file is read into
one buffer as the walk reaches it (:class:`_Reader`), except number arrays with at least
:data:`HOLE_MIN` bytes not yet read, which are read when built, each whole at once (so that a
file changed meanwhile never gives an array of two times): arrays a load does not need (other
channels) are never read. Then only the entries a load needs are built (the channel's data field and
mask, title and metadata, tmd_nb's record), at most :data:`MAX_BUILT` components and objects
(millions of empty objects or arrays would take far more memory than their file), their arrays as
views of the buffer: nothing is copied that is not kept, so parsing is linear in the file
(``gwyfile``, which writes the file here, copied the rest of an object for each of its components
when it read). The channel's heights are read last: a block at a time into each thread's
cache-sized scratch buffer and converted back to the map there (tmd_nb's files,
:class:`~tmd_nb.storage.embedded.Blocks`), or straight into the map returned (other files), so
that their bytes cross memory once. The file stays open during a load: one replaced (renamed
over) meanwhile is read as it was opened; one cut short, or whose size changed by the end of
the load (rewritten with another layout), is a FormatError. With a ``progress``
callback the file is read whole first, reporting as it goes. Malformed files raise
:class:`~tmd_nb.errors.FormatError` naming the file. The writer refuses lengths that are not finite
in metres and records over the reader's limit, and shows at most :data:`MAX_META_KEYS` short keys
in ``/0/meta``, so that whatever it writes loads again.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import math
import os
import re
import stat
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from ..errors import FormatError, ModifiedFileWarning, renamed_keyword, warn
from ..heightmap import in_memory, is_dask_array, split_height_map
from ..storage import blockwise, embedded, limits, units
from ..storage._io import Progress, open_file, pread_exactly, pread_parallel, read_into
from ..storage._io import Reporter as _Reporter
from ..storage.atomic import atomic_write
from ..storage.blockwise import combine_crcs
from ..storage.libraries import b64decode, b64encode, crc32_of
from ..storage.npyfile import block_rows, c_order_header, write_data
from .base import Format, PathLike

__all__ = ["FORMAT", "MAGIC", "OTHER_UNITS", "check", "export_to_gwy", "load_from_gwy", "load_gwy", "scan"]

MAGIC = b"GWYP"
RECORD_PREFIX = "/tmd_nb/"
MAX_DEPTH = 32
MAX_NAME = 4096
#: Components and objects built for one load (the channel, its units, metadata and title hold a
#: few dozen): each costs a few bytes of file (an object in an object array 5, an empty array
#: with a 3-letter name 8) but a few hundred bytes of memory once built.
MAX_BUILT = 100_000
#: Longest text shown per key in ``/0/meta``.
MAX_META_TEXT = 1000
#: Keys shown in ``/0/meta`` (the first ones), and the longest key shown, in UTF-8 bytes: a
#: display for Gwyddion's metadata browser (gwyfile, and tmd_nb before, read a nested container
#: with copying quadratic in its entries).
MAX_META_KEYS = 256
MAX_META_KEY = 256
#: Height units written as they are, unscaled: base SI units of the quantities Gwyddion channels
#: hold besides lengths (a prefixed one, "mV", would be read as volts: refused).
OTHER_UNITS = ("", "V", "A", "N", "Pa", "Hz", "deg", "rad", "K", "s", "W", "T", "S", "C", "F")
#: Type codes of scalars and of arrays of numbers, and how each item is stored; the sizes follow.
_SCALAR_FORMATS = {ord("b"): "<B", ord("c"): "<B", ord("i"): "<i", ord("q"): "<q", ord("d"): "<d"}
_ARRAY_TYPES = {ord("C"): "u1", ord("I"): "<i4", ord("Q"): "<i8", ord("D"): "<f8"}
_SCALARS = {code: struct.calcsize(fmt) for code, fmt in _SCALAR_FORMATS.items()}
_ARRAYS = {code: np.dtype(kind).itemsize for code, kind in _ARRAY_TYPES.items()}
_CHANNEL = re.compile(r"0|[1-9][0-9]{0,8}", re.ASCII)


#: A number array of which at least this many bytes are still unread when the walk reaches it is
#: left unread (a hole) until a load builds it: arrays a load does not need (other channels) are
#: never read, and the channel's heights are read a block at a time as they are converted.
HOLE_MIN = 1 << 20
#: The first read of a file; each next one, as the walk goes on, twice the last, up to READ_MAX.
READ_FIRST = 1 << 18
READ_MAX = 1 << 24
#: Bytes searched at a time for the NUL ending a name or string: first (most are short), then each time.
_SEARCH_FIRST = 256
_SEARCH = 1 << 16


class _Reader:
    """A file read into ``raw`` (of its size) as :class:`_Walk` reaches its bytes, except the holes.

    Positions are the body's (after the magic), as the walk's. The walk goes forward, asking for
    the bytes it reads (:meth:`need`) and telling those of number arrays it passes over
    (:meth:`skip`); once it has walked the whole file, only the holes are unread, and a number
    array is read when it is built (:meth:`fill`). The file stays open until :meth:`close`.
    """

    def __init__(self, fp: BinaryIO, size: int, where: str) -> None:
        self.fp, self.fd, self.size, self.where = fp, fp.fileno(), size, where
        # numpy's allocation, not bytearray's: no pass to zero it, and pages never read cost nothing
        self.raw = np.empty(size, dtype=np.uint8)
        self.filled = 0  # the body is read up to here, but for the holes
        self.step = READ_FIRST
        self.holes: list[tuple[int, int]] = []
        self.cuts: list[int] = []  # where each read of the walk but the first began, in order
        self._read(-len(MAGIC), min(size, READ_FIRST) - len(MAGIC))
        self.filled = min(size, READ_FIRST) - len(MAGIC)

    def _read(self, start: int, stop: int) -> None:
        at = start + len(MAGIC)
        pread_parallel(self.fd, self.raw.data[at : stop + len(MAGIC)], at, self.where)

    def need(self, stop: int) -> None:
        """Read on to ``stop`` at least."""
        if stop <= self.filled:
            return
        end = min(self.size - len(MAGIC), max(stop, self.filled + self.step))
        self.cuts.append(self.filled)
        self._read(self.filled, end)
        self.filled, self.step = end, min(2 * self.step, READ_MAX)

    def skip(self, start: int, stop: int) -> None:
        """The walk passes over a number array's bytes ``start:stop``: leave them unread if they are many,
        or if two reads of the walk would share them (read whole when built, as a hole: a file changed
        between the two reads would otherwise give an array of two times)."""
        unread = max(start, self.filled)
        later = bisect.bisect_right(self.cuts, start)
        if stop - unread >= HOLE_MIN or start < self.filled < stop:
            self.holes.append((unread, stop))
            self.filled = max(self.filled, stop)
        elif later < len(self.cuts) and self.cuts[later] < stop:  # read already, in two pieces
            self.holes.append((start, stop))

    def unread(self, start: int, stop: int) -> bool:
        return any(a < stop and start < b for a, b in self.holes)

    def fill(self, start: int, stop: int) -> None:
        """Read ``start:stop`` if any of it is still unread: all of it, so that what the read-ahead
        took of it earlier is not mixed with the rest, read later, if the file changed in between."""
        if not self.unread(start, stop):
            return
        self._read(start, stop)
        kept = []
        for a, b in self.holes:
            kept += [piece for piece in ((a, min(b, start)), (max(a, stop), b)) if piece[0] < piece[1]]
        self.holes = kept


class _Walk:
    """State of :func:`scan` and of building values: the file's bytes (any contiguous buffer), with
    the :class:`_Reader` filling them as the walk goes when they are being read."""

    def __init__(self, buf: Any, where: str, reader: _Reader | None = None) -> None:
        self.buf, self.where, self.reader = buf, where, reader
        self.built = 0  # components and objects built so far
        #: While building: number arrays left unread, ``(start, stop)``, instead of read (see _Entries.field).
        self.deferred: list[tuple[int, int]] | None = None

    def need(self, stop: int) -> None:
        if self.reader is not None:
            self.reader.need(stop)

    def fail(self, pos: int, what: str) -> FormatError:
        return FormatError(f"{self.where} is not a well-formed Gwyddion file: {what} (at byte {pos + len(MAGIC)})")

    def cstring(self, pos: int, end: int, what: str) -> int:
        """Position just past the NUL ending the string at ``pos``, which must come before ``end``."""
        lo, size = pos, _SEARCH_FIRST
        while lo < end:  # a piece at a time (reading on as far as the string goes): memchr, not a whole copy
            hi = min(end, lo + size)
            self.need(hi)
            found = bytes(self.buf[lo:hi]).find(0)
            if found >= 0:
                return lo + found + 1
            lo, size = hi, min(16 * size, _SEARCH)  # a piece a little past a short string costs little
        raise self.fail(pos, f"{what} runs past the end of its object")

    def text(self, pos: int, stop: int, what: str) -> str:
        """The UTF-8 text from ``pos`` to its NUL at ``stop - 1``; FormatError naming the byte if it is not UTF-8."""
        try:
            return str(self.buf[pos : stop - 1], "utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(pos + exc.start, f"{what} is not UTF-8 text") from None

    def obj(self, pos: int, end: int, depth: int) -> int:
        """Check the object at ``pos`` (within ``end``); return where it ends."""
        if depth > MAX_DEPTH:
            raise self.fail(pos, f"objects nested more than {MAX_DEPTH} deep")
        body = self.cstring(pos, min(end, pos + MAX_NAME), "an object's type name")
        if body + 4 > end:
            raise self.fail(pos, "truncated object header")
        self.need(body + 4)
        (size,) = struct.unpack_from("<I", self.buf, body)
        body += 4
        body_end = body + size
        if body_end > end:
            raise self.fail(pos, f"an object declares {size} bytes but only {end - body} remain")
        p = body
        while p < body_end:
            p = self.component(p, body_end, depth)
        return body_end

    def component(self, pos: int, end: int, depth: int) -> int:
        p = self.cstring(pos, min(end, pos + MAX_NAME), "a component name")
        if p >= end:
            raise self.fail(pos, "a component without a type")
        self.need(p + 1)
        code = self.buf[p]
        p += 1
        if code in _SCALARS:
            p += _SCALARS[code]
        elif code == ord("s"):
            p = self.cstring(p, end, "a string")
        elif code == ord("o"):
            p = self.obj(p, end, depth + 1)
        elif code in _ARRAYS or code in (ord("S"), ord("O")):
            if p + 4 > end:
                raise self.fail(pos, "a truncated array count")
            self.need(p + 4)
            (count,) = struct.unpack_from("<I", self.buf, p)
            p += 4
            if code in _ARRAYS:
                values, p = p, p + count * _ARRAYS[code]
                if self.reader is not None and p <= end:
                    self.reader.skip(values, p)
            elif count > end - p:
                raise self.fail(pos, f"an array of {count} items in {end - p} bytes")
            elif code == ord("S"):
                for _ in range(count):
                    p = self.cstring(p, end, "a string")
            else:
                for _ in range(count):
                    p = self.obj(p, end, depth + 1)
        else:
            raise self.fail(pos, f"unknown type code {bytes([code])!r}")
        if p > end:
            raise self.fail(pos, "a component runs past the end of its object")
        return p

    # Building values, from a structure scan() has checked: only UTF-8 and their number can still be wrong.

    def count_built(self, pos: int) -> None:
        self.built += 1
        if self.built > MAX_BUILT:
            raise self.fail(pos, f"the entries a load reads hold more than {MAX_BUILT} components and objects")

    def value(self, pos: int) -> tuple[str, Any, int]:
        """The component at ``pos``: its name, its value and where it ends."""
        self.count_built(pos)
        p = self.cstring(pos, len(self.buf), "a component name")
        name = self.text(pos, p, "a component name")
        code = self.buf[p]
        p += 1
        value: Any
        if code in _SCALARS:
            fmt = _SCALAR_FORMATS[code]
            (value,) = struct.unpack_from(fmt, self.buf, p)
            value = value != 0 if code == ord("b") else value
            return name, value, p + _SCALARS[code]
        if code == ord("s"):
            q = self.cstring(p, len(self.buf), "a string")
            return name, self.text(p, q, "a string"), q
        if code == ord("o"):
            return (name, *self.object(p))
        (count,) = struct.unpack_from("<I", self.buf, p)
        p += 4
        if code in _ARRAYS:
            stop = p + count * _ARRAYS[code]
            if self.reader is not None and self.reader.unread(p, stop):
                if self.deferred is not None:
                    self.deferred.append((p, stop))
                else:
                    self.reader.fill(p, stop)
            # a view of the file's bytes: a reader copies what it keeps
            value = np.frombuffer(self.buf, dtype=_ARRAY_TYPES[code], count=count, offset=p)
            return name, value, stop
        items: list[Any] = []
        for _ in range(count):
            if code == ord("S"):
                q = self.cstring(p, len(self.buf), "a string")
                items.append(self.text(p, q, "a string"))
                p = q
            else:
                item, p = self.object(p)
                items.append(item)
        return name, items, p

    def object(self, pos: int) -> tuple[GwyObject, int]:
        self.count_built(pos)
        body = self.cstring(pos, len(self.buf), "an object's type name")
        obj = GwyObject(self.text(pos, body, "an object's type name"))
        (size,) = struct.unpack_from("<I", self.buf, body)
        p, end = body + 4, body + 4 + size
        while p < end:
            key, value, p = self.value(p)
            obj[key] = value
        return obj, end


class GwyObject(dict[str, Any]):
    """A Gwyddion object read from a file: its type name (``name``) and its components by name."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def scan(buf: Any, where: str) -> list[tuple[int, int]]:
    """Check the structure of a serialized top-level ``GwyContainer``; return its components' spans.

    ``buf`` is the file without its ``GWYP`` magic (any contiguous bytes-like buffer). Raises
    :class:`FormatError` naming ``where``.
    """
    return _scan(_Walk(buf, where))


def _scan(walk: _Walk) -> list[tuple[int, int]]:
    """:func:`scan` of ``walk``'s buffer (read as the walk goes, if it has a reader)."""
    buf, where = walk.buf, walk.where
    name_end = walk.cstring(0, min(len(buf), MAX_NAME), "the top object's type name")
    if bytes(buf[: name_end - 1]) != b"GwyContainer":
        raise FormatError(f"{where} holds a {bytes(buf[: min(name_end - 1, 40)])!r} object, not a GwyContainer")
    if name_end + 4 > len(buf):
        raise walk.fail(0, "truncated container header")
    walk.need(name_end + 4)
    (size,) = struct.unpack_from("<I", buf, name_end)
    end = name_end + 4 + size
    if end > len(buf):
        raise FormatError(
            f"{where} is truncated: its container declares {size} bytes but {len(buf) - name_end - 4} follow"
        )
    if end != len(buf):
        raise FormatError(f"{where} has {len(buf) - end} stray bytes after its container")
    spans = []
    p = name_end + 4
    while p < end:
        q = walk.component(p, end, 0)
        spans.append((p, q))
        p = q
    # The bytes the walk passed over without asking for them, and left no hole of (a number array or
    # a scalar ending the file beyond the read-ahead), are read now: a view of them must never show
    # the buffer's uninitialised memory.
    walk.need(end)
    return spans


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class _Entries:
    """The top-level entries of a ``.gwy`` file, checked by :func:`scan` and built only when asked for.

    Without a progress callback, the file is read as the walk reaches it (:class:`_Reader`), its
    large number arrays only when built, and the file stays open until :meth:`close` (a context
    manager); with one, it is read whole first, reporting progress.
    """

    def __init__(self, path: PathLike, where: str, progress: Progress | None) -> None:
        self.where = where
        self.reader: _Reader | None = None
        fp = open_file(path, where)
        try:
            st = os.fstat(fp.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise FormatError(f"{where} is not a regular file")
            if st.st_size > _MAX_FILE:  # before its buffer is allocated: a sparse file takes no disk space
                raise FormatError(
                    f"{where} is not a Gwyddion file: it is {st.st_size:,} bytes, and a Gwyddion file is one "
                    f"GwyContainer of at most {_MAX_SIZE:,} bytes"
                )
            if progress is None:
                self.reader = _Reader(fp, st.st_size, where)
                raw = self.reader.raw
            else:
                # numpy's allocation, not bytearray's: no pass to zero it, large pages for a large file
                raw = np.empty(st.st_size, dtype=np.uint8)
                read_into(fp, raw.data, where, _Reporter(progress, st.st_size))
                fp.close()
            if raw[: len(MAGIC)].tobytes() != MAGIC:
                raise FormatError(
                    f"{where} is not a Gwyddion file: it does not start with {MAGIC!r} "
                    f"(it starts with {raw[:8].tobytes()!r})"
                )
            self.raw = raw
            body = raw[len(MAGIC) :].data
            self.walk = _Walk(body, where, self.reader)
            self.spans: dict[str, int] = {}
            self.ends: dict[str, int] = {}
            for start, stop in _scan(self.walk):
                end = self.walk.cstring(start, len(body), "a component name")
                name = self.walk.text(start, end, "a component name")
                self.spans[name], self.ends[name] = start, stop
        except BaseException:
            fp.close()
            raise
        self.built: dict[str, Any] = {}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.fp.close()

    def check_size(self) -> None:
        """FormatError if the file's size changed while it was read: its structure was walked as it was
        then, and the arrays read later at the places it gave would be other bytes of another layout."""
        if self.reader is not None and (now := os.fstat(self.reader.fd).st_size) != self.reader.size:
            raise FormatError(
                f"{self.where} changed while being read (it was {self.reader.size:,} bytes, it is {now:,})"
            )

    def __enter__(self) -> _Entries:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __contains__(self, key: str) -> bool:
        return key in self.spans

    def __iter__(self) -> Iterator[str]:
        return iter(self.spans)

    def __getitem__(self, key: str) -> Any:
        if key not in self.built:
            self.built[key] = self.walk.value(self.spans[key])[1]
        return self.built[key]

    def get(self, key: str) -> Any:
        return self[key] if key in self.spans else None

    def text_bytes(self, key: str) -> memoryview | None:
        """The bytes of the string entry ``key`` (its text undecoded), or None if it is not a string."""
        walk = self.walk
        walk.count_built(self.spans[key])
        p = walk.cstring(self.spans[key], len(walk.buf), "a component name")
        # a string component ends with its string's NUL, as scan() found
        return walk.buf[p + 1 : self.ends[key] - 1] if walk.buf[p] == ord("s") else None

    def field(self, key: str) -> Any:
        """``self[key]``, but a ``data`` array of a data field left unread (see :meth:`blocks`)."""
        if key in self.built or self.reader is None:
            return self[key]
        deferred: list[tuple[int, int]] = []
        self.walk.deferred = deferred
        try:
            field = self[key]
        finally:
            self.walk.deferred = None
        data = field.get("data") if isinstance(field, GwyObject) else None
        span = self._span(data) if isinstance(data, np.ndarray) else None
        for start, stop in deferred:
            if (start, stop) != span:
                self.reader.fill(start, stop)
        return field

    def _span(self, array: np.ndarray) -> tuple[int, int]:
        """Where ``array``, a view of the file's bytes, lies in them (body positions)."""
        start = array.__array_interface__["data"][0] - self.raw.__array_interface__["data"][0] - len(MAGIC)
        return start, start + array.nbytes

    def blocks(self, data: np.ndarray) -> embedded.Blocks | None:
        """``data`` (the float64 values of a :meth:`field`) a block at a time, while it is unread.

        Each block is read from the file when asked for, into the thread's scratch buffer, never
        into ``data``: a reader converting the blocks as they come reads the file's bytes once.
        None when ``data`` is read already, or not of the machine's byte order.
        """
        start, stop = self._span(data)
        reader = self.reader
        if reader is None or not reader.unread(start, stop) or data.dtype != np.float64 or not data.dtype.isnative:
            return None
        fd, where, at, size = reader.fd, self.where, start + len(MAGIC), reader.size

        def read(lo: int, hi: int) -> np.ndarray:
            buf = blockwise.scratch(8 * (hi - lo))
            pread_exactly(fd, buf.data, at + 8 * lo, where, size)
            return buf.view(np.float64)

        return embedded.Blocks(data.shape, read)

    def copy(self, data: np.ndarray) -> np.ndarray:
        """A float64 copy of ``data``, a view of the file's bytes: read into it from the file while unread."""
        start, stop = self._span(data)
        if self.reader is None or not self.reader.unread(start, stop):
            return np.array(data, dtype=np.float64)
        out = np.empty(data.shape, dtype=data.dtype)
        pread_parallel(self.reader.fd, out.reshape(-1).view(np.uint8).data, start + len(MAGIC), self.where)
        return out.astype(np.float64, copy=False)

    def fill(self, data: np.ndarray) -> np.ndarray:
        """``data``, a view of the file's bytes, with all its bytes read."""
        if self.reader is not None:
            self.reader.fill(*self._span(data))
        return data


def _field(entries: _Entries, key: str, where: str, *, lazy: bool = False) -> tuple[np.ndarray, Any]:
    """The checked ``(yres, xres)`` float64 array of the data field at ``key`` (a view of the file), and the field.

    With ``lazy``, the array may be unread yet (:meth:`_Entries.field`): see ``blocks``, ``fill`` and ``copy``.
    """
    field = entries.field(key) if lazy else entries[key]
    if not isinstance(field, GwyObject) or field.name != "GwyDataField":
        raise FormatError(f"{where}: {key} is not a GwyDataField")
    xres, yres, data = field.get("xres"), field.get("yres"), field.get("data")
    if type(xres) is not int or type(yres) is not int or xres < 1 or yres < 1:
        raise FormatError(f"{where}: {key} has no valid xres/yres ({xres!r}, {yres!r})")
    if not isinstance(data, np.ndarray) or data.dtype != np.float64:
        kind = f"{data.dtype} values" if isinstance(data, np.ndarray) else f"a {type(data).__name__}"
        raise FormatError(f"{where}: {key} holds {kind} as its data, not float64 values")
    if data.size != xres * yres:
        raise FormatError(f"{where}: {key} holds {data.size} values, not xres x yres = {xres} x {yres}")
    return data.reshape(yres, xres), field


def _number(field: Any, key: str, default: float, where: str) -> float:
    value = field.get(key, default)
    if type(value) not in (float, int) or not np.isfinite(value):
        raise FormatError(f"{where}: the data field's {key} is not a finite number ({value!r})")
    return float(value)


def _unit(field: Any, key: str) -> str:
    unit = field.get(key)
    text = unit.get("unitstr") if isinstance(unit, Mapping) else None
    return text if isinstance(text, str) else ""


#: The SI prefixes Gwyddion recognises in a unit string (``gwysiunit.c``), micro in all its spellings.
_PREFIXES = frozenset("kcMmµμ~uGnTpPfEaZzYy")


def _as_gwyddion_reads(unit: str) -> str:
    """The unit of the stored numbers as Gwyddion reads ``unit``, a ``GwySIUnit`` string.

    Gwyddion drops a prefix when it reads a unit and keeps the numbers: ``xreal = 4`` with
    ``"mm"`` is 4 m in Gwyddion, and tmd_nb reads what Gwyddion shows. Every length unit is
    metres; a prefixed unit of :data:`OTHER_UNITS` (``"mV"``) is its base unit; others stay.
    """
    text = units.canonical(unit)
    if units.metres_per(text) is not None:
        return "m"
    if text in OTHER_UNITS:
        return text
    if len(text) > 1 and text[0] in _PREFIXES and text[1:] in OTHER_UNITS:
        return text[1:]
    return unit


def _fields(field: Any, where: str) -> dict[str, Any]:
    """What a reader sees of a data field besides its values: sizes and offsets (SI units), units."""
    return {
        "xreal": _number(field, "xreal", 1.0, where),
        "yreal": _number(field, "yreal", 1.0, where),
        "xoff": _number(field, "xoff", 0.0, where),
        "yoff": _number(field, "yoff", 0.0, where),
        "si_unit_xy": _unit(field, "si_unit_xy"),
        "si_unit_z": _unit(field, "si_unit_z"),
    }


def _channel(entries: _Entries, where: str) -> int:
    numbers = []
    for key in entries:
        parts = key.split("/")
        # Gwyddion's channel numbers: ASCII digits without leading zeros ("/00/data", "/²/data" and
        # "/٣/data" are other keys, whose int() would be another channel's number or fail).
        if len(parts) == 3 and parts[0] == "" and parts[2] == "data" and _CHANNEL.fullmatch(parts[1]):
            numbers.append(int(parts[1]))
    if not numbers:
        raise FormatError(f"{where} holds no image channel (/N/data)")
    return 0 if 0 in numbers else min(numbers)


@renamed_keyword("path", "file_path")
def load_from_gwy(file_path: PathLike, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load a height map and its metadata from a Gwyddion ``.gwy`` file.

    A file written by :func:`export_to_gwy` comes back exactly as saved; other files give their
    first channel in the units they state (see the module docstring).

    ``load_gwy`` is this function under its former name, kept as an alias; ``path=`` still
    works for ``file_path=``, with a :class:`~tmd_nb.TmdNbDeprecationWarning`.

    Parameters
    ----------
    file_path : str or os.PathLike
        The ``.gwy`` file.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the file is read.

    Returns
    -------
    dict
        ``{"height_map": array, **metadata}``.

    Raises
    ------
    FormatError
        The file is not a well-formed Gwyddion file with an image channel.
    OSError
        The file cannot be read.
    """
    where = repr(os.fspath(file_path))
    with _Entries(file_path, where, progress) as entries:
        loaded = _load(entries, where)
        entries.check_size()
        return loaded


def _load(entries: _Entries, where: str) -> dict[str, Any]:
    channel = _channel(entries, where)
    # a view of the file's bytes, maybe unread yet: read only through entries.blocks, .fill or .copy
    data, field = _field(entries, f"/{channel}/data", where, lazy=True)
    mask_key = f"/{channel}/mask"
    shown: tuple[np.ndarray, ...] = ()
    mask = None
    if mask_key in entries:
        shown = (_field(entries, mask_key, where)[0],)
        if shown[0].shape != data.shape:
            raise FormatError(f"{where}: {mask_key} has shape {shown[0].shape}, the data {data.shape}")
        mask = shown[0] > 0.5
    fields = _fields(field, where)
    standard = {
        "x_length": fields["xreal"],
        "y_length": fields["yreal"],
        "x_offset": fields["xoff"],
        "y_offset": fields["yoff"],
        "lateral_unit": _as_gwyddion_reads(fields["si_unit_xy"]),
        "height_unit": _as_gwyddion_reads(fields["si_unit_z"]),
    }
    found = {} if mask is None else {"mask": mask}
    names = [k[len(RECORD_PREFIX) :] for k in entries if k.startswith(RECORD_PREFIX)]
    if embedded.RECORD in names:
        members: dict[str, bytes] = {}
        for name in names:
            value = entries.text_bytes(RECORD_PREFIX + name)
            if value is None:
                raise FormatError(f"{where}: its tmd_nb entry {name!r} is not a string")
            try:
                # strict: only the alphabet and its padding; SIMD when pybase64 is there
                members[name] = bytes(value) if name == embedded.RECORD else b64decode(value)
            except ValueError:  # binascii.Error is one
                raise FormatError(f"{where}: its tmd_nb entry {name!r} is not valid base64") from None
        # Version 1 records fingerprinted the data with NaN under the mask (0 was written there).
        legacy = None if mask is None else lambda: np.where(mask, np.nan, entries.fill(data))
        rec = embedded.unpack(
            members,
            lambda: entries.fill(data),
            where,
            fields=fields,
            extra=shown,
            legacy=legacy,
            standard=_height_factor,
            blocks=entries.blocks(data),
        )
        if rec.current:
            return {"height_map": rec.height_map, **rec.metadata}
        seen = entries.copy(data)
        warn(
            f"{where}: its data changed after tmd_nb wrote it, or its mask, lengths, offsets or units did "
            "(edited by other software?); loaded the file's data and lengths, with the other tmd_nb metadata",
            ModifiedFileWarning,
        )
        # The record's "mask" went into the channel's mask (then the file's mask replaces it) or is metadata.
        recorded = _user_mask(rec.metadata, seen.shape)
        kept = {
            k: v
            for k, v in rec.metadata.items()
            if k not in units.PHYSICAL_KEYS and not (k == "mask" and recorded is not None)
        }
        if rec.missing is not None and mask is not None and (gone := rec.missing & mask).any():
            # Points tmd_nb filled and masked, still masked: still no measurement, whatever else changed.
            seen = np.where(gone, np.nan, seen)
            # There the file's one mask cannot tell the user's selection from the gap: the record can.
            selection = mask & ~gone if recorded is None else (mask & ~gone) | (recorded & gone)
            found = {"mask": selection} if selection.any() or recorded is not None else {}
        return {"height_map": seen, **kept, **standard, **found}
    out: dict[str, Any] = {"height_map": entries.copy(data), **standard, **found}
    title = entries.get(f"/{channel}/data/title")
    if isinstance(title, str):
        out["title"] = title
    meta = entries.get(f"/{channel}/meta")
    if isinstance(meta, Mapping):
        out["gwyddion_meta"] = {str(k): v for k, v in meta.items() if isinstance(v, str | int | float | bool)}
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


#: The former name of :func:`load_from_gwy`, kept as an alias (the same function).
load_gwy = load_from_gwy


def _gwy_text(text: str) -> str:
    """``text`` as a Gwyddion string can hold it: UTF-8 without NUL (escapes otherwise)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\0")


def _meta_text(value: Any) -> str | None:
    """A metadata value as Gwyddion's metadata browser shows it (display only: the record keeps it)."""
    if type(value) in (str, int, float, bool):
        text = str(value)
    elif type(value) in (dt.datetime, dt.date):
        text = value.isoformat()
    else:
        return None
    return _gwy_text(text if len(text) <= MAX_META_TEXT else text[:MAX_META_TEXT] + "...")


def check(data: Any) -> None:
    """Raise ``TypeError``/``ValueError`` if :func:`export_to_gwy` would refuse ``data`` (cheap: no heights copied)."""
    _, meta = split_height_map(data, lazy=True)  # checked, not computed
    units.written(meta)  # lengths and offsets written as given, or refused
    _units(meta)
    limits.check_lengths(units.physical(meta), "a Gwyddion file")
    limits.check_record(meta, "a Gwyddion file")


def _units(meta: Mapping[str, Any]) -> tuple[tuple[str, float], tuple[str, float]]:
    """``((xy unit, factor), (z unit, factor))`` to write; ValueError naming the key of a unit Gwyddion misreads."""
    units.check_unit_types(meta)
    phys = units.physical(meta)
    lateral = ("m", units.unit_factor(phys.lateral_unit, phys.lateral_key)) if phys.lateral_unit else ("", 1.0)
    factor = units.metres_per(phys.height_unit)
    if factor is not None:
        return lateral, ("m", factor)
    if phys.height_unit in OTHER_UNITS:
        return lateral, (phys.height_unit, 1.0)
    raise ValueError(
        f"{phys.height_key or 'height_unit'} {phys.height_unit!r} is not a unit tmd_nb can write to Gwyddion; "
        f"use a length ({', '.join(repr(u) for u in units.LENGTHS)}) or one of "
        f"{', '.join(repr(u) for u in OTHER_UNITS)}"
    )


def _height_factor(meta: Mapping[str, Any]) -> float:
    """Metres per height unit as :func:`export_to_gwy` writes ``meta``'s heights (NaN if it would refuse)."""
    try:
        return _units(meta)[1][1]
    except (TypeError, ValueError):
        return math.nan


class _Heights:
    """The count, sum, least and greatest of the finite standard heights, gathered rows at a time.

    Row by row, so that a map streamed a block row at a time (whatever its chunks) and the same
    map in memory are filled alike, bit for bit: each row is summed alone, as numpy sums a row,
    and the row sums are added exactly (``math.fsum``), in no order that chunks could change.
    """

    def __init__(self) -> None:
        self.count = 0
        self.sums: list[np.ndarray] = []
        self.lows: list[np.ndarray] = []
        self.highs: list[np.ndarray] = []

    def add(self, standard: np.ndarray, finite: np.ndarray) -> None:
        """Take whole rows of the standard heights (2-D) and where they are finite."""
        # C order: numpy sums a row of a Fortran-ordered map in another order (other last bits),
        # and a map's file must not depend on its memory layout.
        standard, finite = np.ascontiguousarray(standard), np.ascontiguousarray(finite)
        if finite.all():
            self.count += standard.size
            with np.errstate(over="ignore"):  # a sum beyond float64: fill() says so
                self.sums.append(standard.sum(axis=1))
            self.lows.append(standard.min(axis=1))
            self.highs.append(standard.max(axis=1))
            return
        self.count += int(np.count_nonzero(finite))
        with np.errstate(over="ignore"):
            self.sums.append(np.where(finite, standard, 0.0).sum(axis=1))
        self.lows.append(np.where(finite, standard, np.inf).min(axis=1))
        self.highs.append(np.where(finite, standard, -np.inf).max(axis=1))

    def fill(self) -> float | None:
        """The mean of the finite heights within their range (0.0 without any); None if their sum is beyond float64."""
        if not self.count:
            return 0.0
        sums = np.concatenate(self.sums)
        if not np.isfinite(sums).all():
            return None
        try:
            mean = math.fsum(sums.tolist()) / self.count
        except OverflowError:
            return None
        low, high = float(np.min(np.concatenate(self.lows))), float(np.max(np.concatenate(self.highs)))
        return min(max(mean, low), high)


def _filled(standard: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """``standard`` with its missing points set to the mean of the finite ones: within the data's range."""
    if finite.all():
        return standard
    heights = _Heights()
    heights.add(standard, finite)
    fill = heights.fill()
    if fill is None:  # the sum overflowed (heights near float64's limit): the mean term by term
        kept = standard[finite]
        fill = min(max(float(np.sum(kept / kept.size)), float(kept.min())), float(kept.max()))
    return np.where(finite, standard, fill)


def _user_mask(meta: Mapping[str, Any], shape: tuple[int, ...]) -> np.ndarray | None:
    """The metadata's ``"mask"`` when it is a bool array of the map's shape (else it is only metadata)."""
    mask = meta.get("mask")
    if isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == shape:
        return mask
    return None


class _Stream:
    """A component whose value the streaming writer makes as it goes: ``size`` bytes, written by
    ``write(fp)``; a data field's values (``D``, ``count`` of them) or a string (``s``, its NUL
    included)."""

    def __init__(self, code: str, size: int, write: Callable[[BinaryIO], None], count: int = 0) -> None:
        self.code, self.size, self.write, self.count = code, size, write, count


def _pieces(obj: Any) -> tuple[list[bytes | np.ndarray | _Stream], int]:
    """gwyfile's serialization of ``obj`` as pieces to write in turn, and their length in bytes.

    Byte for byte what ``obj.serialize()`` gives, but float64 arrays (a data field's ``data``)
    stay arrays, written from their own buffer: no copy of the map is joined into one bytes
    object (that join, not the disk, was most of a save's time). A :class:`_Stream` value is a
    piece of its own.
    """
    from gwyfile.objects import guess_typecode, serialize_component

    body: list[bytes | np.ndarray | _Stream] = []
    size = 0
    for key in obj:
        value = obj[key]
        if isinstance(value, _Stream):
            head = key.encode("utf-8") + b"\0" + value.code.encode("ascii")
            head += struct.pack("<I", value.count) if value.code == "D" else b""
            body += [head, value]
            size += len(head) + value.size
            continue
        code = obj.typecodes.get(key) or guess_typecode(value)
        if code == "o":
            sub, n = _pieces(value)
            head = key.encode("utf-8") + b"\0o"
            body += [head, *sub]
            size += len(head) + n
        elif code == "D" and isinstance(value, np.ndarray):
            flat = np.ascontiguousarray(value, dtype="<f8").reshape(-1)
            head = key.encode("utf-8") + b"\0D" + struct.pack("<I", len(flat))
            body += [head, flat]
            size += len(head) + flat.nbytes
        else:
            raw = serialize_component(key, value, code)
            body.append(raw)
            size += len(raw)
    if size > _MAX_SIZE:
        raise ValueError(f"a Gwyddion {obj.name} holds at most {_MAX_SIZE:,} bytes; this one would be {size:,}")
    head = obj.name.encode("utf-8") + b"\0" + struct.pack("<I", size)
    return [head, *body], len(head) + size


def _write_pieces(fp: BinaryIO, pieces: list[bytes | np.ndarray | _Stream]) -> None:
    for piece in pieces:
        if isinstance(piece, bytes):
            fp.write(piece)
        elif isinstance(piece, _Stream):
            piece.write(fp)
        else:  # a map's values, from their own buffer, written back to disk as they go
            write_data(fp, piece, None)


#: The largest object a ``.gwy`` file holds: its size is a uint32.
_MAX_SIZE = 0xFFFF_FFFF
#: The largest ``.gwy`` file: the magic, the top container's type name and size, and its components.
_MAX_FILE = len(MAGIC) + len(b"GwyContainer\0") + 4 + _MAX_SIZE


#: Bytes encoded to base64 at a time.
_BASE64_PIECE = 3 << 18


def _base64_stream(parts: Iterable[bytes | memoryview], size: int) -> _Stream:
    """A string entry holding the base64 text of the concatenated ``parts`` (``size`` bytes in
    all), encoded a piece at a time as they are written: the text of the whole, never whole."""

    def write(fp: BinaryIO) -> None:
        carry = b""
        for part in parts:
            view = memoryview(part).cast("B")
            for start in range(0, len(view), _BASE64_PIECE):
                data = carry + view[start : start + _BASE64_PIECE]
                cut = len(data) - len(data) % 3  # whole 3-byte groups: their text is the whole's, cut
                fp.write(b64encode(data[:cut]))
                carry = data[cut:]
        fp.write(b64encode(carry) + b"\0")

    return _Stream("s", 4 * -(-size // 3) + 1, write)


class _Plan:
    """What :func:`export_to_gwy` writes besides the heights, checked before anything is written."""

    def __init__(self, shape: tuple[int, ...], meta: dict[str, Any]) -> None:
        """ValueError/TypeError naming a unit, length or offset that cannot be written, or a record over the limits."""
        phys = units.written(meta)  # TypeError/ValueError naming a length or offset that cannot be written as given
        (self.xy_unit, lateral), (self.z_unit, self.height) = _units(meta)
        limits.check_lengths(phys, "a Gwyddion file")
        limits.check_record(meta, "a Gwyddion file")
        rows, cols = shape if math.prod(shape) else (1, 1)  # an empty map's grid is one missing point
        x_length, y_length = phys.x_length or float(cols), phys.y_length or float(rows)
        unit = phys.lateral_unit
        self.xreal = units.in_si("x_length", x_length, unit, lateral)
        self.yreal = units.in_si("y_length", y_length, unit, lateral)
        self.xoff = units.in_si("x_offset", phys.x_offset, unit, lateral)
        self.yoff = units.in_si("y_offset", phys.y_offset, unit, lateral)
        title = meta.get("title")
        self.title = _gwy_text(title) if isinstance(title, str) else "Height"
        self.shown: dict[str, str] = {}
        for k, v in meta.items():  # display only: the record keeps every key
            name = _gwy_text(k)
            if (
                len(self.shown) < MAX_META_KEYS
                and len(name.encode()) <= MAX_META_KEY
                and (t := _meta_text(v)) is not None
            ):
                self.shown[name] = t
        self.fields = _fields(self.field(np.zeros((1, 1))), "")

    def field(self, values: np.ndarray | _Stream, shape: tuple[int, int] = (1, 1)) -> Any:
        """A data field of ``values``: an array, or a stream of a ``shape`` grid's values."""
        from gwyfile.objects import GwyDataField, GwySIUnit

        field = GwyDataField(  # gwyfile would flatten (copy) a map given here: it is set below
            np.zeros((1, 1)),
            xreal=self.xreal,
            yreal=self.yreal,
            xoff=self.xoff,
            yoff=self.yoff,
            si_unit_xy=GwySIUnit(unitstr=self.xy_unit),
            si_unit_z=GwySIUnit(unitstr=self.z_unit),
        )
        if isinstance(values, _Stream):
            field["yres"], field["xres"] = shape
            field["data"] = values
        else:
            field["yres"], field["xres"] = values.shape
            field["data"] = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        return field

    def container(self, entries: dict[str, Any], record: Mapping[str, bytes | _Stream]) -> Any:
        """The top-level container: ``entries`` (the data, title and mask), ``/0/meta`` and the record."""
        from gwyfile.objects import GwyContainer

        entries = dict(entries)
        if self.shown:
            entries["/0/meta"] = GwyContainer(self.shown, typecodes=dict.fromkeys(self.shown, "s"))
        for name, content in record.items():
            if isinstance(content, _Stream):
                entries[RECORD_PREFIX + name] = content
            elif name == embedded.RECORD:
                entries[RECORD_PREFIX + name] = content.decode("utf-8")
            elif len(content) > _BASE64_PIECE:  # a large array (a patch, a mask): no whole copy of its text
                entries[RECORD_PREFIX + name] = _base64_stream([content], len(content))
            else:
                entries[RECORD_PREFIX + name] = b64encode(content).decode("ascii")
        typecodes = {k: ("s" if isinstance(v, str | _Stream) else "o") for k, v in entries.items()}
        return GwyContainer(entries, typecodes=typecodes)


def _build(data: Any) -> Any:
    """Validate ``data`` and make the file's top-level container; ValueError/TypeError before anything is written."""
    array, meta = split_height_map(in_memory(data))  # a Dask array is computed: this is the way of a map in memory
    plan = _Plan(array.shape, meta)
    height = plan.height
    user_mask = _user_mask(meta, array.shape) if array.size else None  # an empty map's grid is one missing point
    # Every height finite (the usual map): one blockwise pass gives what the file and record need.
    surveyed = embedded.survey(array, height)
    if surveyed is not None:
        seen = values = surveyed.heights
        mask = user_mask
    else:
        standard = embedded.standard_heights(embedded.grid(array), height)
        finite = np.isfinite(standard)
        seen = np.where(finite, standard, np.nan)
        values = _filled(standard, finite)
        mask = ~finite if user_mask is None else user_mask | ~finite

    entries: dict[str, Any] = {"/0/data": plan.field(values), "/0/data/title": plan.title}
    masks: tuple[np.ndarray, ...] = ()
    if mask is not None and (user_mask is not None or mask.any()):
        masks = (mask.astype(np.float64),)
        entries["/0/mask"] = plan.field(masks[0])
    if surveyed is not None:
        record = embedded.pack(array, meta, seen, height, fields=plan.fields, extra=masks, surveyed=surveyed)
    else:
        record = embedded.pack(array, meta, seen, height, fields=plan.fields, extra=masks, filled=values)
    return plan.container(entries, record)


class _Whole(Exception):
    """A Dask map whose file streaming cannot write as the map in memory gives it: its record needs
    an exact copy of the map, or its heights' sum is beyond float64. It is computed whole instead."""


#: Bytes of float64 heights handled at a time within a block row: the temporaries of a save.
_GROUP = 1 << 22


class _Streamed:
    """A Dask map's ``/0/data`` values, written block row by block row, and what the rest of the
    file needs of them, gathered from the blocks as they are written (in this process: the blocks
    themselves may be computed anywhere).

    Heights written as they come while every one is finite. The first missing point stops the
    writing (the fill, the mean of every finite height, is not known yet) but not the gathering;
    the block rows from there on are then computed a second time and written filled, each checked
    to give the same values again.
    """

    def __init__(self, array: Any, factor: float) -> None:
        self.array, self.factor = array, factor
        rows, cols = array.shape
        self.shape: tuple[int, int] = (rows, cols)
        self.step = max(1, _GROUP // (8 * cols))  # rows per group
        self.heights = _Heights()
        #: Where each group's points are missing (packed bits, None for none), and its points.
        self.gaps: list[tuple[np.ndarray | None, int]] = []
        self.crcs: list[tuple[int, int]] = []  # CRC-32 and length of the values written, in order
        self.at: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.index = np.dtype(np.uint32 if array.size <= 1 << 32 else np.intp)  # as pack() stores the indices
        self.cost, self.budget, self.patched = self.index.itemsize + array.dtype.itemsize, array.nbytes // 4, 0

    @property
    def missing(self) -> bool:
        return any(packed is not None for packed, _ in self.gaps)

    def patch(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The record's patch, as :func:`embedded.pack` makes it (None without one)."""
        if not self.at:
            return None
        at, values = np.concatenate(self.at), np.concatenate(self.values).astype(self.array.dtype, copy=False)
        self.at, self.values = [], []
        return at, values

    def _put(self, fp: BinaryIO, values: np.ndarray) -> None:
        raw = np.ascontiguousarray(values, dtype="<f8").reshape(-1).view(np.uint8).data
        fp.write(raw)
        self.crcs.append((crc32_of(raw), len(raw)))

    def write(self, fp: BinaryIO) -> None:
        """Write the values of ``/0/data``: every block row computed once, those from the first
        with a missing point twice; :class:`_Whole` if the record needs an exact copy."""
        cols = self.shape[1]
        redo: int | None = None  # the first block row with a missing point
        restart = fp.tell()
        kept = 0
        again: list[int] = []  # CRC-32 of the block rows computed again, to check they are the same
        row = 0
        for i, band in enumerate(block_rows(self.array)):
            if redo is None:
                restart, kept = fp.tell(), len(self.crcs)
            for r in range(0, band.shape[0], self.step):
                part = band[r : r + self.step]
                standard = embedded.standard_heights(part, self.factor, origin=(row + r, 0))
                finite = np.isfinite(standard)
                whole = bool(finite.all())
                self.heights.add(standard, finite)
                self.gaps.append((None if whole else np.packbits(~finite.reshape(-1)), finite.size))
                at = embedded.unrestored(part, standard if whole else np.where(finite, standard, np.nan), self.factor)
                if at.size:
                    self.patched += at.size
                    if self.patched * self.cost > self.budget:
                        raise _Whole(f"block row {i}: the record needs an exact copy of the map")
                    self.at.append((at + (row + r) * cols).astype(self.index))
                    self.values.append(part.reshape(-1)[at])
                if redo is None and not whole:
                    redo = i
                    fp.seek(restart)  # this block row is written filled, once the fill is known
                    del self.crcs[kept:]
                if redo is None:
                    self._put(fp, standard)
            if redo is not None:
                again.append(crc32_of(band.reshape(-1).view(np.uint8).data))
            row += band.shape[0]
        if redo is None:
            return
        fill = self.heights.fill()
        if fill is None:
            raise _Whole("the heights' sum is beyond float64")
        for k, band in enumerate(block_rows(self.array, redo)):
            if crc32_of(band.reshape(-1).view(np.uint8).data) != again[k]:
                raise ValueError(
                    f"block row {redo + k} of the Dask array computed to other values the second time: a "
                    "Gwyddion save of a map with missing points computes the block rows from the first such "
                    "point twice; persist the array first"
                )
            for r in range(0, band.shape[0], self.step):
                standard = embedded.standard_heights(band[r : r + self.step], self.factor)
                finite = np.isfinite(standard)
                self._put(fp, standard if finite.all() else np.where(finite, standard, fill))

    def _gap_groups(self) -> Iterator[np.ndarray]:
        """Where points are missing, a group at a time (bool, flat)."""
        for packed, size in self.gaps:
            yield np.zeros(size, np.bool_) if packed is None else np.unpackbits(packed, count=size).view(np.bool_)

    def mask(self, user_mask: np.ndarray | None) -> _Stream:
        """``/0/mask``'s values (the user's mask or a missing point, as 1.0), their CRC-32 going on
        after the heights' as :func:`embedded.fingerprint` takes them."""
        rows, cols = self.shape
        users = None if user_mask is None else np.ascontiguousarray(user_mask).reshape(-1)

        def write(fp: BinaryIO) -> None:
            self.crcs.append((zlib.crc32(repr(self.shape).encode("ascii")), len(repr(self.shape))))
            start = 0
            for gaps in self._gap_groups():
                shown = gaps if users is None else gaps | users[start : start + gaps.size]
                start += gaps.size
                self._put(fp, shown.astype(np.float64))

        return _Stream("D", 8 * rows * cols, write, rows * cols)

    def missing_member(self) -> tuple[int, _Stream]:
        """The CRC-32 of the record's :data:`embedded.MISSING` member (NPY bytes of a bool array),
        and the member as a string entry: its base64 text, streamed."""
        head = c_order_header(np.dtype(np.bool_), self.shape)
        crc = zlib.crc32(head)
        for gaps in self._gap_groups():
            crc = zlib.crc32(gaps.view(np.uint8).data, crc)
        parts = itertools.chain([memoryview(head)], (gaps.view(np.uint8).data for gaps in self._gap_groups()))
        return crc, _base64_stream(parts, len(head) + self.array.size)

    def crc(self) -> int:
        return combine_crcs(self.crcs)


def _write_streamed(fp: BinaryIO, array: Any, meta: dict[str, Any], plan: _Plan, record: embedded.Streamed) -> None:
    """Write the ``.gwy`` file of a Dask map: ``/0/data``'s values block row by block row, then
    the title, the mask and the record, gathered as they went; the container's size last."""
    from gwyfile.objects import GwyContainer

    rows, cols = array.shape
    user_mask = _user_mask(meta, array.shape)
    heights = _Streamed(array, plan.height)
    fp.write(MAGIC)
    top = fp.tell()
    fp.write(b"GwyContainer\0" + b"\0" * 4)  # its size, known at the end
    data = {"/0/data": plan.field(_Stream("D", 8 * rows * cols, heights.write, rows * cols), (rows, cols))}
    _write_pieces(fp, _pieces(GwyContainer(data, typecodes={"/0/data": "o"}))[0][1:])
    after: dict[str, Any] = {"/0/data/title": plan.title}
    if user_mask is not None or heights.missing:
        after["/0/mask"] = plan.field(heights.mask(user_mask), (rows, cols))
    _write_pieces(fp, _pieces(GwyContainer(after, typecodes={"/0/data/title": "s", "/0/mask": "o"}))[0][1:])
    missing = heights.missing_member() if heights.missing else None
    members = record.pack(
        array.dtype,
        (rows, cols),
        plan.height,
        heights.crc(),
        fields=plan.fields,
        patch=heights.patch(),
        missing=None if missing is None else missing[0],
    )
    streams: dict[str, bytes | _Stream] = {}
    for name, content in members.items():  # the one member given as None is the streamed one
        streams[name] = content if content is not None else missing[1] if missing is not None else b""
    _write_pieces(fp, _pieces(plan.container({}, streams))[0][1:])
    size = fp.tell() - top - len(b"GwyContainer\0") - 4
    if size > _MAX_SIZE:
        raise ValueError(f"a Gwyddion GwyContainer holds at most {_MAX_SIZE:,} bytes; this one would be {size:,}")
    end = fp.tell()
    fp.seek(top + len(b"GwyContainer\0"))
    fp.write(struct.pack("<I", size))
    fp.seek(end)


def export_to_gwy(
    data: np.ndarray | Mapping[str, Any], output_path: PathLike, *, progress: Progress | None = None
) -> str:
    """Save a height map and its metadata as a Gwyddion ``.gwy`` file.

    Gwyddion reads the heights and lengths in SI units (converted from ``height_unit`` and
    ``lateral_unit``, else ``units``, millimetres by default), missing points masked and filled
    within the data's range, a ``"mask"`` bool array as the channel's mask; tmd_nb reads back
    exactly what was saved (the layout is in the module docstring).

    Parameters
    ----------
    data : numpy.ndarray or mapping
        A 2-D height map, or a dict with a ``"height_map"`` array and metadata (any value
        :func:`tmd_nb.export_to_npz` stores).
        A Dask height map is streamed block row by block row (a map larger than memory is saved
        in bounded memory), the same file as the map in memory gives. A map with missing points
        has its block rows from the first such point computed twice (the fill, their mean, is
        known only after the last block); one whose record needs an exact copy is computed
        whole (see the module docstring). Dask metadata values are computed.
    output_path : str or os.PathLike
        Where to write; the file is replaced atomically.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called when the file is written.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    TypeError
        A metadata value cannot be stored (the message names its key), or the height map is not
        a numeric 2-D array; raised before anything is written.
    ValueError
        A unit Gwyddion would misread (the message names the key and the units it takes), or a
        map beyond the 4 GiB a Gwyddion object holds. A height beyond float64 range in SI units
        is found as the heights are read (in a Dask map, as its blocks stream); whatever is
        raised, a file at ``output_path`` stays as it was.
    """
    array, meta = split_height_map(data, lazy=True)
    if is_dask_array(array) and array.size:  # an empty map is written as one missing point, and a copy of it
        meta = in_memory(meta)  # metadata values are small: computed, as a map in memory has them
        plan = _Plan(array.shape, meta)
        record = embedded.Streamed(meta)  # TypeError naming a key that cannot be stored, before writing
        if 8 * array.size > _MAX_SIZE:
            raise ValueError(
                f"a {array.shape[0]} x {array.shape[1]} map is {8 * array.size:,} bytes of float64 heights; "
                f"a Gwyddion data field holds at most {_MAX_SIZE:,}"
            )
        try:
            with atomic_write(output_path) as fp:
                _write_streamed(fp, array, meta, plan, record)
                size = fp.tell()
            if progress is not None:
                progress(size, size)
            return os.path.abspath(output_path)
        except _Whole:
            pass  # the temporary file is gone: the map is computed and written whole below
        data = {**meta, "height_map": np.asarray(array.compute())}
    pieces, size = _pieces(_build(data))
    with atomic_write(output_path) as fp:
        fp.write(MAGIC)
        _write_pieces(fp, pieces)
    if progress is not None:
        progress(size + len(MAGIC), size + len(MAGIC))
    return os.path.abspath(output_path)


FORMAT = Format(
    name="gwy",
    title="GWY",
    extensions=(".gwy",),
    summary="Gwyddion file: data field in SI units + mask + metadata, tmd_nb metadata kept",
    recognise=lambda head, path: head.startswith(MAGIC),
    load=load_gwy,
    save=export_to_gwy,
    check=check,
    label="Gwyddion",
    library="gwyfile",
)
