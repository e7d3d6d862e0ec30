"""Instruments' own files (read only), through SurfaceTopography.

Digital Surf SUR, Alicona AL3D, Zygo MetroPro DAT, Sensofar PLU, Bruker/Veeco NanoScope, Park
Systems TIFF, Igor IBW, Dektak OPDx, Keyence VK, plain x-y-z text and the other formats of
SurfaceTopography (:data:`VENDORS`). SurfaceTopography is an optional extra
(``pip install 'tmd_nb[instruments]'``) and its import takes seconds, so it is imported only when
no other format of tmd_nb recognises a file; without it, a file that looks like one of
:data:`VENDORS` (by its first bytes, else its extension) gives one line naming the format and
the install command.

What :func:`load_from_instrument` returns, whatever the vendor
    ``height_map``
        float64, rows x columns as Gwyddion shows them (SurfaceTopography indexes (x, y): the
        array is transposed); missing points NaN. A profile (one line scan) is one row.
    ``x_length``, ``y_length``, ``lateral_unit``
        The physical size of the scan, when the file states its unit (in tmd_nb's unit names:
        ``"um"`` for SurfaceTopography's ``"µm"``). A profile has no ``y_length``.
    ``height_unit``
        The unit of the heights; ``""`` (no unit) for a channel that is not a length (phase,
        amplitude, intensity) or whose file names no unit.
    ``channel``, ``instrument_format``
        The channel read (its distinct name, :func:`channels_of`) and the vendor format's title.
    ``instrument``, ``acquisition_time``, ``vendor_header``
        The file's own metadata, as SurfaceTopography reads it: instrument name and parameters
        (a dict), the date of the measurement (``datetime``) and the vendor header (a dict), made
        into types ``export_to_npz`` keeps (numpy scalars become Python numbers, anything else
        without a typed form becomes its text).

The default channel is the first whose unit is a length (the topography), never a deflection,
phase or intensity; a file without one has its first channel read.

Safety (``SECURITY.md``): before any heights are read, the number of points the header of the
chosen channel claims is checked against the file's size (:data:`MAX_POINTS_PER_BYTE`), so a
damaged header cannot make the reader allocate gigabytes; every error of the library becomes one
:class:`~tmd_nb.errors.FormatError` naming the file, except ``MemoryError``, which is never passed off
as damage (the fuzz tests load under a memory cap and would not see it).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import math
import os
import struct
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from io import BufferedReader, FileIO
from typing import Any

import numpy as np

from ..errors import FormatError, renamed_keyword
from ..storage import units
from ..storage._io import Progress, open_file
from .base import Format, PathLike

__all__ = [
    "EXTENSIONS",
    "FORMAT",
    "GENERIC",
    "INSTALL",
    "MAX_POINTS_PER_BYTE",
    "VENDORS",
    "Vendor",
    "channels_of",
    "load_from_instrument",
    "load_instrument",
    "recognise",
]

#: What to run to read these files.
INSTALL = "pip install 'tmd_nb[instruments]'"


@dataclass(frozen=True)
class Vendor:
    """One of SurfaceTopography's formats, as menus and messages show it."""

    #: SurfaceTopography's format id (``reader.format()``).
    name: str
    title: str
    extensions: tuple[str, ...]
    #: ``(offset, bytes)`` signatures that tell the format without SurfaceTopography.
    magic: tuple[tuple[int, bytes], ...] = ()


#: The formats read through SurfaceTopography 1.27 (the ones tmd_nb reads itself are left out).
VENDORS: tuple[Vendor, ...] = (
    Vendor("sur", "Digital Surf SUR", (".sur",), ((0, b"DIGITAL SURF"), (0, b"DSCOMPRESSED"))),
    Vendor("al3d", "Alicona AL3D", (".al3d",), ((0, b"AliconaImaging"),)),
    Vendor(
        "metropro",
        "Zygo MetroPro DAT",
        (".dat",),
        ((0, b"\x88\x1b\x03\x6f"), (0, b"\x88\x1b\x03\x70"), (0, b"\x88\x1b\x03\x71")),
    ),
    Vendor("datx", "Zygo DATX", (".datx",)),
    Vendor("plu", "Sensofar PLU", (".plu", ".apx")),
    Vendor("plux", "Sensofar PLUX", (".plux",)),
    Vendor("di", "Bruker/Veeco NanoScope", (".di", ".spm", ".001", ".002", ".003", ".004", ".005")),
    Vendor("ps", "Park Systems TIFF", (".tiff", ".tif")),
    Vendor("ibw", "Igor binary wave (Asylum)", (".ibw",)),
    Vendor("opdx", "Bruker Dektak OPDx", (".opdx",), ((0, b"VCA DATA\x01\x00\x00\x55"),)),
    Vendor("opd", "Wyko OPD", (".opd",), ((2, b"Directory"),)),
    Vendor("vk", "Keyence VK", (".vk3", ".vk4", ".vk6", ".vk7"), ((0, b"VK3_"), (0, b"VK4_"), (0, b"VK6"))),
    Vendor("zon", "Keyence ZON", (".zon",), ((0, b"KPK0"), (0, b"KPK1"))),
    Vendor("frt", "FRT MicroProf", (".frt",), ((0, b"FRTM_GLIDERV"),)),
    Vendor("ezd", "Nanosurf easyScan", (".ezd", ".nid")),
    Vendor("mdt", "NT-MDT", (".mdt",), ((0, b"\x01\xb0\x93\xff"),)),
    Vendor("mi", "Molecular Imaging MI", (".mi",), ((0, b"fileType"),)),
    Vendor("jpk", "JPK image scan", (".jpk",)),
    Vendor("lext", "Olympus LEXT", (".lext",)),
    Vendor("oir", "Olympus OIR", (".oir",)),
    Vendor("poir", "Olympus packed OIR", (".poir",)),
    Vendor("zmg", "KLA Zeta ZMG", (".zmg",), ((0, b"Zeta-Instruments"),)),
    Vendor("os3d", "Digital Metrology OmniSurf3D", (".os3d",), ((0, b"OmniSurf3D"),)),
    Vendor("mnt", "Digital Surf Mountains", (".mnt",)),
    Vendor("nms", "NanoFocus NMS", (".nms",)),
    Vendor("qep", "Mahr MarWin QEP", (".qep",)),
    Vendor("wsxm", "WSxM", (".cur", ".stp", ".tom", ".top"), ((0, b"WSxM file copyright"),)),
    Vendor("bcr", "BCR-STM", (".bcr", ".bcrf"), ((0, b"fileformat ="),)),
    Vendor("mitutoyo", "Mitutoyo SurfTest", (".xlsx",)),
    Vendor("nmm", "Nanomeasuring machine (NMM)", ()),
    Vendor("xyz", "x y z text", (".xyz", ".hfm", ".csv")),
    Vendor("asc", "plain text", (".txt", ".asc")),
    Vendor("hgt", "NASA SRTM", (".hgt",)),
    Vendor("mat", "MATLAB", (".mat",)),
    Vendor("nc", "NetCDF", (".nc",)),
    Vendor("h5", "HDF5", (".h5",)),
)
_BY_NAME = {v.name: v for v in VENDORS}
#: Extensions that many programs write (text, spreadsheets, MATLAB, HDF5): such a file is read when
#: its content is an instrument's, but they are not offered in menus, folder conversion or by name.
GENERIC = frozenset({".txt", ".asc", ".csv", ".xyz", ".hfm", ".xlsx", ".mat", ".h5", ".nc"})
#: The extensions menus offer for instruments' files.
EXTENSIONS = tuple(dict.fromkeys(e for v in VENDORS for e in v.extensions if e not in GENERIC))
#: SurfaceTopography's readers of formats tmd_nb reads itself: a file of these that tmd_nb's own
#: reader did not recognise is not handed to SurfaceTopography's, which would read it differently.
OWN = frozenset({"x3p", "gwy", "tmd", "npy", "npz", "sdf"})

#: Readers tried on a file only when its extension is theirs: general containers (MATLAB, HDF5,
#: NetCDF) whose libraries allocate what a header says while merely listing its contents (scipy's
#: ``whosmat`` asked for gigabytes for a NanoScope file with its first byte changed).
BY_EXTENSION_ONLY = frozenset({"mat", "h5", "nc"})

#: Points a channel may claim per byte of the file: 1 for a format that stores its heights as they
#: are (no reader stores fewer than 8 bits a point), 1032 (deflate's largest ratio) for one that
#: compresses them. A header claiming more is damaged (or hostile) and is refused before reading.
MAX_POINTS_PER_BYTE = 1
MAX_POINTS_PER_COMPRESSED_BYTE = 1032
_COMPRESSING = frozenset({"datx", "plux", "nmm", "h5", "nc", "mat", "jpk", "oir", "poir", "lext", "zon", "vk"})
#: Formats that compress only some files: the first bytes of those.
_COMPRESSED_MAGIC = {"sur": b"DSCOMPRESSED"}


# Igor binary waves: (header layout after the version, offset of the wave's point count) by version.
# igor2 builds a format string as long as each size field says before reading it (a field of 2**31
# asks for 2 GB), so the fields are checked against the file's size before its reader is tried.
_IBW_HEADERS = {1: ("i", 50), 2: ("iii", 58), 3: ("iiii", 62), 5: ("hiiii4i4iiii", 76)}


def _ibw_fits(head: bytes, size: int) -> bool:
    """Whether the sizes an Igor binary wave's header states (if it is one) fit in ``size`` bytes."""
    for order in "<>":
        version = struct.unpack_from(order + "h", head)[0] if len(head) >= 2 else 0
        if version in _IBW_HEADERS:
            break
    else:
        return True  # not an Igor wave: its reader refuses it without allocating
    layout, npnts_at = _IBW_HEADERS[version]
    if len(head) < npnts_at + 4:
        return True  # too short for a header: its reader refuses it
    fields = struct.unpack_from(order + layout, head, 2)
    if version == 5:
        fields = fields[1:]  # the checksum
    npnts = struct.unpack_from(order + "i", head, npnts_at)[0]
    return all(0 <= f <= size for f in fields) and sum(fields) <= size and 0 <= npnts <= size


#: The longest line SurfaceTopography's x-y-z table reader is given. It keeps one array per column
#: of a line, so one line of millions of numbers took over 70 x its size (1.3 GB for 18 MB); a
#: table of x, y, z (and a few more columns) has lines far shorter than this.
MAX_TABLE_LINE = 1 << 16


def _lines_fit(path: PathLike) -> bool:
    """Whether no line of the file at ``path`` is longer than :data:`MAX_TABLE_LINE` bytes."""
    run = 0
    with open(path, "rb") as fp:
        while chunk := fp.read(1 << 20):
            lines = chunk.replace(b"\r", b"\n").split(b"\n")  # read as text: any line ending
            if len(lines) == 1:
                run += len(chunk)
            else:
                if run + len(lines[0]) > MAX_TABLE_LINE or max(map(len, lines[1:-1]), default=0) > MAX_TABLE_LINE:
                    return False
                run = len(lines[-1])
            if run > MAX_TABLE_LINE:
                return False
    return True


#: Checks of a header's sizes against the file's, made before the format's reader is tried.
_FITS = {"ibw": lambda path, head, size: _ibw_fits(head, size), "xyz": lambda path, head, size: _lines_fit(path)}


#: Libraries below SurfaceTopography that log what they find wrong in a file (tifffile: three
#: lines on standard error for each damaged TIFF it is given): the FormatError says it once.
_CHATTY_LOGGERS = ("tifffile",)
_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: list[bool] = []  # the loggers' own state, put back when the last reader is done


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Warnings ignored and :data:`_CHATTY_LOGGERS` silenced while SurfaceTopography reads."""
    global _quiet_depth
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_saved[:] = [logger.disabled for logger in loggers]
            for logger in loggers:
                logger.disabled = True
        _quiet_depth += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                for logger, disabled in zip(loggers, _quiet_saved, strict=True):
                    logger.disabled = disabled


def _library() -> Any:
    """SurfaceTopography.IO, imported on first use (seconds), or None when it is not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import SurfaceTopography.IO as io  # optional and slow: imported here only
    except ImportError:
        return None
    return io


def _vendor_by_look(head: bytes, path: PathLike) -> Vendor | None:
    """The vendor format ``head`` (else the extension of ``path``) suggests, without SurfaceTopography."""
    for v in VENDORS:
        if any(head[o : o + len(m)] == m for o, m in v.magic):
            return v
    ext = os.path.splitext(os.fspath(path))[1].lower()
    return None if ext in GENERIC else next((v for v in VENDORS if ext in v.extensions), None)


def _title(name: str) -> str:
    vendor = _BY_NAME.get(name)
    return vendor.title if vendor is not None else name


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# The last file detected: recognise() and load() of one file open it by trial once, not twice.
_detected: dict[tuple[str, int, int, bytes], str | None] = {}
_detected_lock = threading.Lock()
# Within handing_over(): the reader whose trial recognised a file, with its key and source (one at most).
_handed: contextvars.ContextVar[list[tuple[Any, Any, Any]] | None] = contextvars.ContextVar("_handed", default=None)


@contextlib.contextmanager
def handing_over() -> Iterator[None]:
    """Within it, the reader whose trial recognised a file is kept for the load of that file that
    follows, instead of being closed and the file opened again (as SurfaceTopography's own
    ``open_topography`` keeps it); whatever no load took is closed on leaving. Nested: the
    outermost one closes."""
    if _handed.get() is not None:
        yield
        return
    token = _handed.set([])
    try:
        yield
    finally:
        for _, reader, source in _handed.get() or ():
            _close(reader, source)
        _handed.reset(token)


def _take(path: PathLike, head: bytes) -> tuple[Any, Any] | None:
    """The (reader, source) kept by :func:`handing_over` for this file, unchanged since, or None."""
    kept = _handed.get()
    if not kept:
        return None
    key, reader, source = kept.pop()
    if key == _key(path, head):
        return reader, source
    _close(reader, source)
    return None


def _key(path: PathLike, head: bytes) -> tuple[str, int, int, bytes]:
    # The first bytes too: a file rewritten within one tick of the clock keeps its size and mtime.
    st = os.stat(path)
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns, head)


def _trial_order(io: Any, head: bytes, path: PathLike) -> list[Any]:
    """SurfaceTopography's readers in the order they are tried on a file: those that find their
    signature in ``head`` first, then the one its (vendor's, not a generic) extension names, then
    the others in SurfaceTopography's order; none that rules the file out by its first bytes.

    SurfaceTopography tries its text readers first, and they read a binary file line by line
    before giving up (10-25 ms for 1 MB: more than reading it with its own reader). A file
    that another reader opens is of that format whatever the order, unless two readers open it:
    then the one that found its signature, else the one of the extension, is the better guess.
    """
    from SurfaceTopography.IO.Reader import MagicMatch

    vendor = _vendor_by_look(b"", path)  # by the extension only; None for a generic one
    ranked = []
    for i, reader in enumerate(io.readers):
        match = reader.can_read(head)
        if reader.format() in OWN or match == MagicMatch.NO:
            continue
        rank = 0 if match == MagicMatch.YES else 1 if vendor is not None and reader.format() == vendor.name else 2
        ranked.append((rank, i, reader))
    return [reader for _, _, reader in sorted(ranked, key=lambda r: r[:2])]


def _detect(io: Any, path: PathLike, head: bytes) -> str | None:
    """SurfaceTopography's format id for the file, by its readers' trial, or None."""
    key = _key(path, head)
    with _detected_lock:
        if key in _detected:
            return _detected[key]
    found = None
    ext = os.path.splitext(os.fspath(path))[1].lower()
    size = key[1]
    for reader in _trial_order(io, head, path):
        if reader.format() in BY_EXTENSION_ONLY and ext not in _BY_NAME[reader.format()].extensions:
            continue
        fits = _FITS.get(reader.format())
        if fits is not None and not fits(path, head, size):
            continue
        source = _source(path, reader.format())
        try:
            with _quiet():
                opened = reader(source)
        except MemoryError:
            _close(None, source)
            raise
        except Exception:  # any failure of a trial means "not this reader"
            _close(None, source)
            continue
        found = reader.format()
        kept = _handed.get()
        if kept is not None and not kept:
            kept.append((key, opened, source))  # for the load that follows (handing_over)
        else:
            _close(opened, source)
        break
    with _detected_lock:
        _detected.clear()
        _detected[key] = found
    return found


def _close(reader: Any, source: Any = None) -> None:
    for thing in (reader, source):
        if thing is not None and not isinstance(thing, str):
            with contextlib.suppress(Exception):  # closing a reader that failed half-way
                thing.close()


class _Bounded(BufferedReader):
    """A file whose ``read(n)`` never asks for more bytes than are left.

    Readers that trust a length field (an OPDx item's, say) call ``read(length)``, and Python
    allocates ``length`` bytes before finding the file shorter: here they get what is there.
    """

    def __init__(self, path: PathLike) -> None:
        super().__init__(FileIO(os.fspath(path), "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, n: int | None = -1) -> bytes:
        if n is not None and n > 0:
            n = max(0, min(n, self._size - self.tell()))
        return super().read(n)


def _source(path: PathLike, name: str) -> Any:
    """What a reader of format ``name`` is given: a bounded file, or the path for the general
    containers whose libraries open files themselves."""
    return os.fspath(path) if name in BY_EXTENSION_ONLY else _Bounded(path)


def recognise(head: bytes, path: PathLike) -> bool:
    """Whether SurfaceTopography reads the file (or, without it, the file looks like a vendor's)."""
    io = _library()
    if io is None:
        return _vendor_by_look(head, path) is not None
    try:
        return _detect(io, path, head) is not None
    except OSError:
        return False


def _open(path: PathLike) -> tuple[Any, str, Any]:
    """SurfaceTopography's reader of the file, its format id and the file it reads (for
    :func:`_close`); FormatError naming the file."""
    where = repr(os.fspath(path))
    with open_file(path, where) as fp:  # a pipe is refused, not waited on
        head = fp.read(512)
    io = _library()
    if io is None:
        vendor = _vendor_by_look(head, path)
        what = f"a {vendor.title} file" if vendor is not None else "an instrument's file"
        raise FormatError(f"{where} is {what}; reading it needs SurfaceTopography: {INSTALL}")
    with handing_over():
        name = _detect(io, path, head)
        taken = _take(path, head) if name is not None else None
    if name is None:
        raise FormatError(f"{where} is of no format SurfaceTopography reads")
    if taken is not None:
        return taken[0], name, taken[1]
    source = _source(path, name)
    try:
        with _quiet():
            return io.open_topography(source, format=name), name, source
    except MemoryError:
        _close(None, source)
        raise
    except Exception as exc:
        _close(None, source)
        raise FormatError(f"{where}: {_title(name)} file cannot be read: {_one_line(exc)}") from None


def _unit_name(unit: Any) -> str | None:
    """tmd_nb's name for a length unit of SurfaceTopography (``"µm"`` -> ``"um"``), else None."""
    if not isinstance(unit, str) or units.metres_per(unit) is None:
        return None
    return "um" if units.metres_per(unit) == 1e-6 else unit.strip()


def _units(unit: Any) -> tuple[str | None, str | None]:
    """(lateral unit, height unit) of a channel: SurfaceTopography gives one string for both, or
    ``(lateral, data)`` for a channel whose data are not lengths (its data unit None if unknown)."""
    if isinstance(unit, tuple) and len(unit) == 2:
        return _unit_name(unit[0]), _unit_name(unit[1])
    return _unit_name(unit), _unit_name(unit)


def _names(raw: list[str]) -> list[str]:
    """Distinct channel names: the second "Height" is "Height (2)"."""
    seen: dict[str, int] = {}
    out = []
    for name in raw:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _shape(nb_grid_pts: Any) -> tuple[int, ...]:
    pts = tuple(int(n) for n in nb_grid_pts)
    return (1, pts[0]) if len(pts) == 1 else (pts[1], pts[0])


def _describe(reader: Any) -> list[dict[str, Any]]:
    names = _names([str(c.name) for c in reader.channels])
    out = []
    for i, (name, c) in enumerate(zip(names, reader.channels, strict=True)):
        lateral, height = _units(c.unit)
        out.append(
            {
                "name": name,
                "index": i,
                "shape": _shape(c.nb_grid_pts),
                "unit": height or "",
                "lateral_unit": lateral or "",
                "is_height": height is not None,
            }
        )
    return out


def channels_of(path: PathLike) -> list[dict[str, Any]]:
    """The channels of a vendor file, without reading heights.

    Each is a dict: ``name`` (distinct within the file), ``index``, ``shape`` (rows, columns as
    :func:`load_from_instrument` returns them), ``unit`` of the values (``""`` when not a length or
    unknown), ``lateral_unit`` and ``is_height`` (whether the values are lengths).
    """
    reader, name, source = _open(path)
    try:
        return _describe(reader)
    except MemoryError:
        raise
    except Exception as exc:
        raise FormatError(f"{os.fspath(path)!r}: {_title(name)} file cannot be read: {_one_line(exc)}") from None
    finally:
        _close(reader, source)


def _choose(described: list[dict[str, Any]], channel: int | str | None, path: PathLike) -> int:
    """The index of ``channel`` (a name or an index; None: the first height channel)."""
    if channel is None:
        return next((c["index"] for c in described if c["is_height"]), 0)
    names = [c["name"] for c in described]
    choices = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if isinstance(channel, bool) or not isinstance(channel, int | str | np.integer):
        raise TypeError(f"channel must be a name or an index, not {type(channel).__name__}")
    if isinstance(channel, str):
        if channel in names:
            return names.index(channel)
        raise KeyError(f"{os.fspath(path)!r} has no channel {channel!r}; its channels are {choices}")
    if -len(names) <= channel < len(names):
        return int(channel) % len(names)
    raise ValueError(f"{os.fspath(path)!r} has no channel {channel}; its channels are {choices}")


def _check_size(path: PathLike, name: str, shape: tuple[int, ...]) -> None:
    """Refuse a channel whose header claims more points than the file can hold."""
    size = os.path.getsize(path)
    points = math.prod(shape)
    compressed = name in _COMPRESSING
    if name in _COMPRESSED_MAGIC:
        with open(path, "rb") as fp:
            compressed = fp.read(len(_COMPRESSED_MAGIC[name])) == _COMPRESSED_MAGIC[name]
    per_byte = MAX_POINTS_PER_COMPRESSED_BYTE if compressed else MAX_POINTS_PER_BYTE
    if points > max(size, 1) * per_byte:
        raise FormatError(
            f"{os.fspath(path)!r}: the {_title(name)} header claims {' x '.join(map(str, shape))} points, "
            f"more than a file of {size} bytes holds"
        )


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` in types tmd_nb's metadata keeps: numbers, text, dates, lists, dicts of text keys."""
    if depth > 50:
        return str(value)
    if value is None or type(value) in (bool, int, str, bytes, dt.datetime, dt.date):
        return value
    if type(value) is float:
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _plain(value.item(), depth + 1)
    if isinstance(value, np.ndarray):
        return [_plain(v, depth + 1) for v in value.tolist()] if value.size <= 4096 else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is not None and value.utcoffset() is None else value
    return str(value)


def _metadata(info: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, ours in (
        ("instrument", "instrument"),
        ("acquisition_time", "acquisition_time"),
        ("raw_metadata", "vendor_header"),
    ):
        if key in info:
            out[ours] = _plain(info[key])
    return out


@renamed_keyword("path", "file_path")
def load_from_instrument(
    file_path: PathLike, *, channel: int | str | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    """Load one channel of an instrument's file (see the module docstring for what comes back).

    ``load_instrument`` is this function under its former name, kept as an alias.

    Parameters
    ----------
    file_path : str or os.PathLike
        The file.
    channel : str or int, optional
        A channel's name (as :func:`channels_of` lists it) or index; None: the first channel whose
        unit is a length (the topography).
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``: called once, when the heights are read.

    Raises
    ------
    FormatError
        The file is damaged, claims more points than it holds, or SurfaceTopography is missing.
    KeyError, ValueError
        No channel of that name or index (the message lists the file's channels).
    """
    where = repr(os.fspath(file_path))
    reader, name, source = _open(file_path)
    try:
        try:
            described = _describe(reader)
        except MemoryError:
            raise  # the memory bound is tested, not hidden as damage
        except Exception as exc:  # every failure of the library is the file's
            raise FormatError(f"{where}: {_title(name)} file cannot be read: {_one_line(exc)}") from None
        if not described:
            raise FormatError(f"{where}: {_title(name)} file holds no channel")
        index = _choose(described, channel, file_path)  # a wrong channel is the caller's mistake, not the file's
        chosen = described[index]
        _check_size(file_path, name, chosen["shape"])
        try:
            with _quiet():
                topography = reader.topography(channel_index=index)
                heights = topography.heights()
                sizes = tuple(float(s) for s in topography.physical_sizes)
                info = dict(topography.info)
        except MemoryError:
            raise  # the memory bound is tested, not hidden as damage
        except Exception as exc:  # every failure of the library is the file's
            raise FormatError(f"{where}: {_title(name)} file cannot be read: {_one_line(exc)}") from None
    finally:
        _close(reader, source)
    array = np.ma.filled(np.ma.asarray(heights, dtype=np.float64), np.nan)
    array = array.reshape(1, -1) if array.ndim == 1 else np.ascontiguousarray(array.T)
    if array.shape != chosen["shape"]:
        raise FormatError(f"{where}: {_title(name)} channel has {array.shape} points, its header {chosen['shape']}")
    if progress is not None:
        progress(os.path.getsize(file_path), os.path.getsize(file_path))
    data: dict[str, Any] = {"height_map": array}
    lateral = chosen["lateral_unit"]
    if lateral and all(math.isfinite(s) and s > 0 for s in sizes):
        data["x_length"] = sizes[0]
        if len(sizes) > 1:
            data["y_length"] = sizes[1]
        data["lateral_unit"] = lateral
    data["height_unit"] = chosen["unit"]
    data["channel"] = chosen["name"]
    data["instrument_format"] = _title(name)
    data.update(_metadata(info))
    return data


#: The former name of :func:`load_from_instrument`, kept as an alias (the same function).
load_instrument = load_from_instrument


FORMAT = Format(
    name="instrument",
    title="instrument",
    extensions=EXTENSIONS,
    summary="an instrument's own file (read only): one channel's heights, its size and the vendor's metadata",
    recognise=recognise,
    load=load_from_instrument,
    save=None,
    channels=channels_of,
    label="read only",
    holds="one channel, its size and the vendor's metadata",
    library="SurfaceTopography",
)
