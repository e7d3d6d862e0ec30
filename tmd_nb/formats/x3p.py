"""X3P files (ISO 25178-72), read and written through the ``x3pio`` library.

What :func:`export_to_x3p` writes
---------------------------------
A standard X3P container (Amd 1:2020 revision) that ``x3pio.read`` with checksum verification,
MountainsMap, Gwyddion and R's x3ptools open:

``main.xml`` Record1
    A surface (``SUR``) on a regular grid: ``CX``/``CY`` incremental with the pixel spacing in
    metres (``x_length / width`` times the metres of ``lateral_unit``; without lengths, one
    lateral unit per pixel) and offsets ``x_offset``/``y_offset`` in metres. ``CZ`` absolute with
    increment = the metres of ``height_unit`` (so the stored numbers are the heights in their own
    unit) and data type ``F`` for float16/float32 heights, ``D`` for other floats, complex (real
    part) and 32/64-bit unsigned and 64-bit integers, ``L`` for uint16/int32, ``I`` for bool and 8/16-bit
    integers. Units default to millimetres (``docs/FORMAT.md``, physical keys).
``main.xml`` Record2
    ``date`` (a ``datetime``; else now), ``creator``, ``instrument`` (a dict of manufacturer,
    model, serial, version; else tmd_nb as the software), ``calibration_date``,
    ``probing_system`` (a dict of type ``Contacting``/``NonContacting``/``Software`` and
    identification) and ``comment`` from the metadata, where they have those types.
``bindata/data.bin``, ``bindata/valid.bin``
    The heights; NaN and infinite heights are X3P's invalid points.
Vendor extension files, IDs ``https://pypi.org/project/tmd-nb/<name>``
    tmd_nb's record (:mod:`tmd_nb.formats.embedded`): ``record.json`` with every metadata key,
    typed, and ``<name>.npy`` for each array, plus ``height_map.npy`` when the standard heights
    do not give back the exact array (dtype, bits). Other software ignores them.

What :func:`load_x3p` reads
---------------------------
A file tmd_nb wrote comes back exactly as it was saved. Any other X3P surface or profile loads
as ``{"height_map": float64 metres (CZ offset added), "x_length", "y_length", "x_offset",
"y_offset" (metres), "lateral_unit": "m", "height_unit": "m"}`` plus the Record2 fields present,
under the keys above (dates as ``datetime``, instrument and probing system as dicts). NaN marks
invalid points. A file whose heights changed after tmd_nb wrote it (edited by other software)
loads its own heights and lengths, with a warning, keeping the other tmd_nb metadata keys.

Files that deviate from the standard load: a sub-folder holding the whole content, junk members
(``__MACOSX/``, ``.DS_Store``), unknown elements (x3pio ignores them); the ISO 5436-2000 root
element ``<ISO5436>`` (renamed to ``ISO5436_2`` in an in-memory copy of the container before
x3pio reads it); an MD5 checksum that does not match (a warning naming the file, then read
without verification).

Safety: before anything is decompressed, the zip's central directory is checked: at most
:data:`MAX_MEMBERS` members, stored or deflated only, each declared size within deflate's
largest ratio of its compressed size and within :data:`MAX_MEMBER_SIZE` (``main.xml``:
:data:`MAX_XML_SIZE`); x3pio parses the XML with defusedxml and checks the data size against the
dimensions. Anything malformed raises :class:`~tmd_nb.errors.FormatError` naming the file.
"""

from __future__ import annotations

import datetime as dt
import errno
import io
import os
import re
import stat
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import FormatError
from ..heightmap import in_memory, split_height_map
from . import embedded, metadata, units
from ._io import Progress, open_file
from .archive import ZIP_MAGIC
from .atomic import atomic_write
from .base import Format, PathLike

__all__ = ["FORMAT", "VENDOR", "check", "export_to_x3p", "load_x3p", "looks_like_x3p"]

#: The vendor under which tmd_nb's record is registered (a URI the project owns: its PyPI page).
VENDOR = "https://pypi.org/project/tmd-nb"
MAX_MEMBERS = 10_000
MAX_MEMBER_SIZE = 16 << 30
MAX_XML_SIZE = 512 << 20
_MAX_RATIO = 1032  # deflate's largest expansion
_RATIO_SLACK = 1 << 16
_XML_FORBIDDEN = re.compile(r"[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_JUNK = re.compile(r"(^|/)(__macosx/|\._[^/]*$|\.ds_store$|thumbs\.db$|desktop\.ini$)", re.IGNORECASE)
_ROOT = re.compile(rb"<(?![?!])([^\s>/]+)")
_OLD_ROOT = re.compile(rb"(</?)((?:[A-Za-z_][\w.-]*:)?)ISO5436(?=[\s>/])")


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Non-junk file members, by name with ``/`` separators."""
    out = {}
    for info in zf.infolist():
        name = info.filename.replace("\\", "/")
        if not info.is_dir() and not name.endswith("/") and not _JUNK.search(name):
            out[name] = info
    return out


def _main_name(names: Mapping[str, Any]) -> str | None:
    """``main.xml`` at the root, or in the one sub-folder that holds it, as x3pio finds it."""
    if "main.xml" in names:
        return "main.xml"
    nested = [n for n in names if n.endswith("/main.xml") and n.count("/") == 1]
    return nested[0] if len(nested) == 1 else None


def looks_like_x3p(head: bytes, path: PathLike) -> bool:
    """Whether the file is a zip archive holding ``main.xml`` (at its root or in one sub-folder)."""
    if not head.startswith(ZIP_MAGIC):
        return False
    try:
        with open_file(path, repr(os.fspath(path))) as fp, zipfile.ZipFile(fp) as zf:
            return _main_name(_members(zf)) is not None
    except Exception:  # anything a damaged zip makes zipfile raise: then it is not recognisably X3P
        return False


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _z_type(dtype: np.dtype) -> str:
    """The X3P data type that holds heights of ``dtype`` best (``D``, ``F``, ``L``, ``I``)."""
    if dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize == 1) or (dtype.kind == "i" and dtype.itemsize == 2):
        return "I"
    if (dtype.kind == "u" and dtype.itemsize == 2) or (dtype.kind == "i" and dtype.itemsize == 4):
        return "L"
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return "F"
    return "D"


def _factor(unit: str, key: str, what: str) -> float:
    factor = units.metres_per(unit)
    if factor is None:
        raise ValueError(
            f"{key} {unit!r} is not a length unit, so {what} cannot be stored in metres; "
            f"use one of {', '.join(repr(u) for u in units.LENGTHS)}"
        )
    return factor


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and not _XML_FORBIDDEN.search(value) else None


def _date(value: Any) -> dt.datetime | None:
    if type(value) is not dt.datetime:
        return None
    try:  # X3P dates carry an offset: a naive one is written as local time, if it can be
        offset = value.utcoffset() if value.tzinfo is not None else value.astimezone().utcoffset()
    except (ValueError, OverflowError, OSError):
        return None
    if offset is None or offset.total_seconds() % 60 or abs(offset) > dt.timedelta(hours=14):
        return None
    return value


def _record2(meta: Mapping[str, Any]) -> Any:
    """X3P Record2 from the metadata keys that fit it; tmd_nb as the software for the rest."""
    import x3pio

    instrument = x3pio.Instrument("tmd_nb", "tmd_nb", "", __version__)
    given = meta.get("instrument")
    if isinstance(given, Mapping):
        fields = [_text(given.get(k)) for k in ("manufacturer", "model", "serial", "version")]
        if all(v is not None for v in fields):
            instrument = x3pio.Instrument(*[str(v) for v in fields])
    probing = x3pio.ProbingSystem(x3pio.ProbingType.SOFTWARE, "tmd_nb")
    given = meta.get("probing_system")
    if isinstance(given, Mapping):
        kinds = {t.value.lower(): t for t in x3pio.ProbingType}
        kind = kinds.get(str(given.get("type", "")).lower())
        ident = _text(given.get("identification", ""))
        if kind is not None and ident is not None:
            probing = x3pio.ProbingSystem(kind, ident)
    return x3pio.Metadata(
        date=_date(meta.get("date")) or dt.datetime.now(dt.UTC),
        creator=_text(meta.get("creator")),
        instrument=instrument,
        calibration_date=_date(meta.get("calibration_date")),
        probing_system=probing,
        comment=_text(meta.get("comment")),
    )


def check(data: Any) -> None:
    """Raise ``TypeError``/``ValueError`` if :func:`export_to_x3p` would refuse ``data`` (cheap: no heights copied)."""
    _, meta = split_height_map(data, lazy=True)  # checked, not computed
    phys = units.physical(meta)
    _factor(phys.lateral_unit, "lateral_unit", "the lengths")
    _factor(phys.height_unit, "height_unit", "the heights")
    metadata.encode(meta, reserved={"height_map", embedded.RECORD})


def _build(data: Any) -> Any:
    """Validate ``data`` and build the x3pio file (record included); ValueError/TypeError before writing."""
    import x3pio
    from x3pio.model.datatypes import decode_raw, encode_raw, get_data_type

    array, meta = split_height_map(in_memory(data))  # a Dask array is computed: the file is written whole
    phys = units.physical(meta)
    lateral = _factor(phys.lateral_unit, "lateral_unit", "the lengths")
    height = _factor(phys.height_unit, "height_unit", "the heights")
    shown = embedded.grid(array)
    spacing = phys.spacing(shown.shape) or (1.0, 1.0)
    z_type = x3pio.DataType(_z_type(shown.dtype))
    standard = embedded.standard_heights(shown, height)
    # What any X3P reader will see: x3pio's own coding of the heights, invalid points as NaN.
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(standard)
        try:
            seen = decode_raw(encode_raw(standard, get_data_type(z_type), height), height)
        except x3pio.X3pFormatError:  # out of range for the type: store metres as float64
            z_type = x3pio.DataType.FLOAT64
            seen = decode_raw(encode_raw(standard, get_data_type(z_type), height), height)
    seen[~finite] = np.nan
    record = embedded.pack(array, meta, seen, height)
    try:
        file = x3pio.Surface.from_array(
            np.where(finite, standard, np.nan),
            x_scale=spacing[0] * lateral,
            y_scale=spacing[1] * lateral,
            z_type=z_type,
            z_scale=height,
            metadata=_record2(meta),
            placement=x3pio.Placement.translation(phys.x_offset * lateral, phys.y_offset * lateral, 0.0),
            coordinate_system=x3pio.CoordinateSystem.VIEW,
        )
        for name, content in record.items():
            file.extensions[f"{VENDOR}/{name if name == embedded.RECORD else name + '.npy'}"] = content
    except x3pio.X3pFormatError as exc:
        raise ValueError(f"cannot write this height map as X3P: {exc}") from None
    return file


def export_to_x3p(
    data: np.ndarray | Mapping[str, Any], output_path: PathLike, *, progress: Progress | None = None
) -> str:
    """Save a height map and its metadata as an X3P file (ISO 25178-72).

    Other software reads the heights and lengths in metres (converted from ``height_unit`` and
    ``lateral_unit``, millimetres by default) and the Record2 fields; tmd_nb reads back exactly
    what was saved (the layout is in the module docstring).

    Parameters
    ----------
    data : numpy.ndarray or mapping
        A 2-D height map, or a dict with a ``"height_map"`` array and metadata (any value
        :func:`tmd_nb.export_to_npz` stores).
        A Dask array (height map or metadata value) is computed first: X3P files are
        written whole; NPY and NPZ stream maps larger than memory instead.
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
        a numeric 2-D array.
    ValueError
        ``lateral_unit`` or ``height_unit`` is not a length unit; raised before anything is
        written.
    """
    import x3pio

    file = _build(data)
    try:
        content = file.dumps()
    except x3pio.X3pFormatError as exc:  # nothing is written yet
        raise ValueError(f"cannot write this height map as X3P: {exc}") from None
    with atomic_write(output_path) as fp:
        fp.write(content)
    if progress is not None:
        progress(len(content), len(content))
    return os.path.abspath(output_path)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _checked_zip(fp: Any, where: str) -> tuple[zipfile.ZipFile, dict[str, zipfile.ZipInfo], str]:
    """Open the zip and bound every declared size before anything is decompressed."""
    try:
        zf = zipfile.ZipFile(fp)
    # NotImplementedError: zipfile's answer to a "version needed" it does not know (a damaged field).
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise FormatError(f"{where} is not an X3P file: not a readable zip archive ({exc})") from None
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise FormatError(f"{where} has {len(infos)} zip members, more than the {MAX_MEMBERS} allowed")
    for info in infos:
        what = f"{where} member {info.filename!r}"
        if info.flag_bits & 0x1:
            raise FormatError(f"{what} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(f"{what} uses compression method {info.compress_type}; only stored and deflate are read")
        bound = info.compress_size if info.compress_type == zipfile.ZIP_STORED else info.compress_size * _MAX_RATIO
        if info.file_size > bound + _RATIO_SLACK * (info.compress_type == zipfile.ZIP_DEFLATED):
            raise FormatError(f"{what} claims {info.file_size} bytes from {info.compress_size} stored bytes")
        if info.file_size > MAX_MEMBER_SIZE:
            raise FormatError(f"{what} claims {info.file_size} bytes, more than the {MAX_MEMBER_SIZE} allowed")
    members = _members(zf)
    main = _main_name(members)
    if main is None:
        raise FormatError(f"{where} is not an X3P file: its zip archive holds no main.xml")
    if members[main].file_size > MAX_XML_SIZE:
        raise FormatError(f"{where}: its main.xml claims {members[main].file_size} bytes, more than {MAX_XML_SIZE}")
    return zf, members, main


def _repack_old_root(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], main: str, where: str) -> bytes | None:
    """An in-memory copy of an ISO 5436-2000 container with its ``<ISO5436>`` root renamed, or None.

    x3pio reads the ``ISO5436_2`` root only. The checksum file is updated when it matched the
    original ``main.xml``, so that a mismatch (warned about) stays one.
    """
    import hashlib

    text = zf.read(members[main])
    found = _ROOT.search(text)
    if found is None or found.group(1).split(b":")[-1] != b"ISO5436":
        return None
    fixed = _OLD_ROOT.sub(rb"\1\2ISO5436_2", text)
    folder = main[: -len("main.xml")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as out:
        for name, info in members.items():
            content = fixed if name == main else zf.read(info)
            if name == folder + "md5checksum.hex":
                digest = content.decode("ascii", "replace").split()[:1]
                if digest and digest[0].lower() == hashlib.md5(text, usedforsecurity=False).hexdigest():
                    content = f"{hashlib.md5(fixed, usedforsecurity=False).hexdigest()} *main.xml\n".encode()
            out.writestr(name, content)
    warnings.warn(
        f"{where} uses the ISO 5436-2000 root element <ISO5436>; read as ISO 25178-72", UserWarning, stacklevel=4
    )
    return buffer.getvalue()


_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    NotImplementedError,  # zipfile: an unknown "version needed" or compression in a damaged entry
    zlib.error,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    EOFError,
    MemoryError,
    RecursionError,
    NotImplementedError,
    RuntimeError,
    UnicodeError,
    OverflowError,
)


def _read_file(path: PathLike, where: str) -> Any:
    import x3pio

    with open_file(path, where) as fp:
        if not stat.S_ISREG(os.fstat(fp.fileno()).st_mode):
            raise FormatError(f"{where} is not a regular file")
        zf, members, main = _checked_zip(fp, where)
        try:
            repacked = _repack_old_root(zf, members, main, where)
        except _LIBRARY_ERRORS as exc:
            raise FormatError(f"{where} is not a readable X3P file: {exc}") from None
        except OSError as exc:  # EINVAL: a damaged entry made zipfile seek before the file's start
            if exc.errno != errno.EINVAL:
                raise
            raise FormatError(f"{where} is not a readable X3P file: an entry points outside the file") from None
        source: Any = io.BytesIO(repacked) if repacked is not None else fp

        def read(verify: bool) -> Any:
            source.seek(0)
            return x3pio.read(source, verify=verify)

        try:
            try:
                return read(True)
            except x3pio.X3pChecksumError as exc:
                warnings.warn(
                    f"{where}: {exc}; loaded anyway (edited after it was written?)", UserWarning, stacklevel=4
                )
                return read(False)
        except x3pio.X3pFormatError as exc:
            raise FormatError(f"{where} is not a readable X3P file: {exc}") from None
        except _LIBRARY_ERRORS as exc:
            raise FormatError(f"{where} is not a readable X3P file: {type(exc).__name__}: {exc}") from None
        except OSError as exc:  # as above: EINVAL is the file's damage, other errors the system's
            if exc.errno != errno.EINVAL:
                raise
            raise FormatError(f"{where} is not a readable X3P file: an entry points outside the file") from None


def _record2_keys(record: Any) -> dict[str, Any]:
    """The Record2 fields as typed metadata keys (only those the file states)."""
    if record is None:
        return {}
    out: dict[str, Any] = {}
    if record.date is not None:
        out["date"] = record.date
    if record.creator is not None:
        out["creator"] = record.creator
    inst = record.instrument
    out["instrument"] = {
        "manufacturer": inst.manufacturer,
        "model": inst.model,
        "serial": inst.serial,
        "version": inst.version,
    }
    if record.calibration_date is not None:
        out["calibration_date"] = record.calibration_date
    probe = record.probing_system
    out["probing_system"] = {
        "type": None if probe.type is None else probe.type.value,
        "identification": probe.identification,
    }
    if record.comment is not None:
        out["comment"] = record.comment
    return out


def load_x3p(path: PathLike, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load a height map and its metadata from an X3P file (ISO 25178-72).

    A file written by :func:`export_to_x3p` comes back exactly as saved; other files give their
    heights and lengths in metres with their Record2 fields (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.x3p`` file.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called when the file is read.

    Returns
    -------
    dict
        ``{"height_map": array, **metadata}``.

    Raises
    ------
    FormatError
        The file is not a readable X3P surface or profile, or is hostile (sizes beyond the limits).
    OSError
        The file cannot be opened.

    Warns
    -----
    UserWarning
        A checksum does not match, the root element is the older ``<ISO5436>``, layers or a
        rotation are left out, or the heights were changed after tmd_nb wrote the file.
    """
    import x3pio

    where = repr(os.fspath(path))
    file = _read_file(path, where)
    if isinstance(file, x3pio.PointCloud):
        raise FormatError(f"{where} holds a point cloud, not a height map on a grid")
    if not file.is_regular_grid:
        raise FormatError(f"{where} stores x/y coordinates for each point (an irregular grid), not a height map")
    if len(file.layers) > 1:
        warnings.warn(f"{where} holds {len(file.layers)} layers; only the first is loaded", UserWarning, stacklevel=2)
    seen = np.asarray(file.layers[0].z, dtype=np.float64)
    if seen.ndim == 1:
        seen = seen.reshape(1, -1)
    placement = file.placement
    if placement.has_rotation:
        warnings.warn(f"{where} places its data with a rotation, which is not applied", UserWarning, stacklevel=2)
    x_off, y_off, z_off = (float(v) for v in placement.offset)
    rows, cols = seen.shape
    header = file.header
    standard: dict[str, Any] = {
        "x_length": float(header.x.increment) * cols,
        "y_length": float(header.y.increment) * rows,
        "x_offset": x_off,
        "y_offset": y_off,
        "lateral_unit": "m",
        "height_unit": "m",
    }
    out: dict[str, Any]
    try:  # extension files are unpacked (and their damage found) only now
        members = {
            uri[len(VENDOR) + 1 :].removesuffix(".npy"): content
            for uri in file.extensions
            if uri.startswith(VENDOR + "/") and (content := file.extensions[uri]) is not None
        }
    except _LIBRARY_ERRORS as exc:  # X3pFormatError is a ValueError
        raise FormatError(f"{where}: its tmd_nb record is damaged: {exc}") from None
    if embedded.RECORD in members:
        rec = embedded.unpack(members, seen, where)
        if rec.current:
            out = {"height_map": rec.height_map, **rec.metadata}
        else:
            warnings.warn(
                f"{where}: its heights changed after tmd_nb wrote it (edited by other software?); "
                "loaded the file's heights and lengths in metres, with the other tmd_nb metadata",
                UserWarning,
                stacklevel=2,
            )
            kept = {k: v for k, v in rec.metadata.items() if k not in units.PHYSICAL_KEYS}
            out = {"height_map": seen + z_off if z_off else seen, **kept, **standard}
    else:
        out = {"height_map": seen + z_off if z_off else seen, **standard, **_record2_keys(file.metadata)}
    if progress is not None:
        size = os.path.getsize(path)
        progress(size, size)
    return out


FORMAT = Format(
    name="x3p",
    title="X3P",
    extensions=(".x3p",),
    summary="ISO 25178-72 surface: heights in metres + Record2, tmd_nb metadata kept",
    recognise=looks_like_x3p,
    load=load_x3p,
    save=export_to_x3p,
    check=check,
    within="npz",
    label="ISO 25178-72",
    library="x3pio",
)
