"""The file formats tmd_nb reads and writes, and the two calls that choose among them.

:data:`FORMATS` lists one :class:`~tmd_nb.formats.base.Format` per format module, in the order
menus and messages show them. :func:`load` tries them on a file's first bytes in that order too,
except that a format whose files are a special case of another's (:attr:`Format.within`: an X3P
file is a zip archive, like NPZ) is tried before it. A new format is one module ending in a
``FORMAT`` declaration, listed here. Instruments' own files (:mod:`.instruments`) come last: they
are read only (:func:`writable`), and recognising them imports SurfaceTopography, which only a
file that no other format claims should cost.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FormatError, renamed_keyword
from ..storage import labelled
from ..storage._io import Progress, open_file
from ..storage.units import DEFAULT_UNIT, metres_per
from . import gwy, instruments, npy, npz, sdf, tmd, x3p
from .base import Format, PathLike

__all__ = [
    "FORMATS",
    "by_extension",
    "by_name",
    "channels",
    "extensions",
    "for_path",
    "load",
    "lossless",
    "names",
    "one_of",
    "readable_text",
    "recognise",
    "recognition_order",
    "save",
    "table",
    "taking",
    "writable",
]

FORMATS: tuple[Format, ...] = (
    npz.FORMAT,
    npy.FORMAT,
    tmd.FORMAT,
    x3p.FORMAT,
    gwy.FORMAT,
    sdf.FORMAT,
    instruments.FORMAT,
)
#: How many first bytes :attr:`Format.recognise` is shown.
HEAD_SIZE = 512


def one_of(items: list[str]) -> str:
    """``"a, b or c"``, for messages that list the choices."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def recognition_order() -> list[Format]:
    """:data:`FORMATS`, each format moved before the one its files are a special case of."""
    order = list(FORMATS)
    for f in FORMATS:
        if f.within is not None:
            order.remove(f)
            order.insert(order.index(by_name(f.within)), f)
    return order


def writable() -> list[Format]:
    """The formats tmd_nb writes: what ``save``, ``--format`` and the export panel offer."""
    return [f for f in FORMATS if f.writable]


def taking(option: str) -> list[Format]:
    """The formats whose ``save`` takes ``option`` (``"compress"``, ``"level"``)."""
    return [f for f in FORMATS if option in f.options]


def lossless() -> list[Format]:
    """The formats that keep every metadata key ``export_to_npz`` accepts."""
    return [f for f in writable() if f.keeps is None]


def names(*, writing: bool = False) -> tuple[str, ...]:
    """Every format's name: ``("npz", "npy", "tmd", ...)``; with ``writing``, those tmd_nb writes."""
    return tuple(f.name for f in (writable() if writing else FORMATS))


def extensions(*, writing: bool = False) -> tuple[str, ...]:
    """Every file extension a format claims (lower case, with the dot); with ``writing``, of those
    tmd_nb writes."""
    return tuple(dict.fromkeys(ext for f in (writable() if writing else FORMATS) for ext in f.extensions))


def readable_text() -> str:
    """What :func:`load` reads, in a few words: ``".npz, .npy, ... or .gwy file, or an instrument's file"``."""
    exts = [e for f in writable() for e in f.extensions]
    others = [f"an {f.title}'s file" for f in FORMATS if not f.writable]
    return f"{one_of(exts)} file" + "".join(f", or {o}" for o in others)


def by_name(name: str) -> Format:
    """The format called ``name``; ``ValueError`` naming the choices for any other."""
    for f in FORMATS:
        if f.name == name:
            return f
    # Only a format to write is ever named by a person (save, --format): the choices are those.
    raise ValueError(f"unknown format {name!r}; choose {one_of([repr(n) for n in names(writing=True)])}")


def by_extension(ext: str, *, writing: bool = False) -> Format | None:
    """The format whose files end in ``ext`` (any letter case), or None; with ``writing``, the one
    tmd_nb writes."""
    ext = ext.lower()
    for f in writable() if writing else FORMATS:
        if ext in f.extensions:
            return f
    return None


def for_path(path: PathLike) -> Format:
    """The format :func:`save` picks for ``path`` from its extension; ``ValueError`` if none claims it."""
    ext = os.path.splitext(os.fspath(path))[1]
    found = by_extension(ext, writing=True)
    if found is None:
        read_only = by_extension(ext)
        what = f"is read only ({read_only.title})" if read_only is not None else "does not tell the format"
        raise ValueError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension {ext or '(none)'}: it {what}; "
            f"use {one_of(list(extensions(writing=True)))}, or pass format="
        )
    return found


def recognise(path: PathLike) -> Format:
    """The format of the file at ``path``, from its content; :class:`FormatError` if none."""
    with open_file(path, repr(os.fspath(path))) as fp:  # a pipe is refused, not waited on
        head = fp.read(HEAD_SIZE)
    for f in recognition_order():
        if f.recognise(head, path):
            return f
    titles = sorted(f.title for f in FORMATS)
    article = "an" if titles[0][0] in "AEFHILMNORSX" else "a"  # as the first letter is spoken: "an NPY", "a GWY"
    raise FormatError(f"{os.fspath(path)!r} is not {article} {one_of(titles)} file (it starts with {head[:16]!r})")


@renamed_keyword("path", "file_path")
def load(
    file_path: PathLike,
    *,
    channel: int | str | None = None,
    mmap: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Load any supported file, choosing the reader from its first bytes, not its name.

    Parameters
    ----------
    file_path : str or os.PathLike
        The file to read (``path=`` still works, with a :class:`~tmd_nb.TmdNbDeprecationWarning`).
    channel : str or int, optional
        Of a file with several channels (an instrument's): the name (as :func:`channels` lists
        it) or index of the one to read. None: the topography (the first channel whose unit is a
        length). A file of one height map takes None only.
    mmap : bool, default False
        Return the height map as a read-only memory map of the file instead of reading it; only
        the formats that store the heights raw take it (NPY, TMD), others refuse it.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the heights are read.

    Returns
    -------
    dict
        ``{"height_map": array, **metadata}``, whatever the format.

    Raises
    ------
    FormatError
        The file is of no supported format, or is malformed.
    KeyError, ValueError
        ``channel`` names no channel of the file (the message lists them), or is given for a
        file of one height map.
    ValueError
        ``mmap=True`` for a file whose format cannot be memory-mapped (the message names it).
    OSError
        The file cannot be read (missing, a directory, a pipe, permission denied).
    """
    with instruments.handing_over():  # an instrument's file is opened once, by the reader that recognised it
        fmt = recognise(file_path)
        options: dict[str, Any] = {"progress": progress}
        if mmap:
            if not fmt.mmap:
                takers = one_of([f.title for f in FORMATS if f.mmap])
                raise ValueError(f"mmap=True applies to {takers} files only; {os.fspath(file_path)!r} is {fmt.title}")
            options["mmap"] = True
        if fmt.channels is not None:
            return fmt.load(file_path, channel=channel, **options)
        if channel is not None:
            raise ValueError(
                f"{os.fspath(file_path)!r} is a {fmt.title} file of one height map: it takes no channel={channel!r}"
            )
        return fmt.load(file_path, **options)


@renamed_keyword("path", "file_path")
def channels(file_path: PathLike) -> list[dict[str, Any]]:
    """The channels of a file, without reading its heights where the format allows.

    Parameters
    ----------
    file_path : str or os.PathLike
        The file, of any format :func:`load` reads.

    Returns
    -------
    list of dict
        One per channel: ``name`` (distinct within the file; what ``load(channel=...)`` takes),
        ``index``, ``shape`` (rows, columns, as :func:`load` returns the heights), ``unit`` (of
        the values: a length unit, or ``""`` for none or unknown), ``lateral_unit`` and
        ``is_height``. A file of one height map has one, named ``"height_map"`` (it is loaded to
        describe it).

    Raises
    ------
    FormatError
        The file is of no supported format, or is malformed.
    OSError
        The file cannot be read.
    """
    with instruments.handing_over():
        fmt = recognise(file_path)
        if fmt.channels is not None:
            return fmt.channels(file_path)
    data = fmt.load(file_path)
    shape = tuple(int(n) for n in np.shape(data["height_map"]))
    unit = data.get("height_unit")
    lateral = data.get("lateral_unit")
    return [
        {
            "name": "height_map",
            "index": 0,
            "shape": shape,
            "unit": unit if isinstance(unit, str) else DEFAULT_UNIT,
            "lateral_unit": lateral if isinstance(lateral, str) else DEFAULT_UNIT,
            "is_height": not isinstance(unit, str) or metres_per(unit) is not None,
        }
    ]


def table() -> str:
    """The Markdown table of every format tmd_nb reads and writes, for README and the docs."""
    rows = [
        "| format | extensions | read | write | what is kept | through |",
        "|---|---|---|---|---|---|",
    ]
    for f in FORMATS:
        exts = ", ".join(f"`{e}`" for e in f.extensions) if len(f.extensions) <= 4 else "by vendor, below"
        rows.append(f"| {f.title} | {exts} | yes | {'yes' if f.writable else 'no'} | {f.holds} | {f.library} |")
    rows.append("")
    rows.append("Instruments' files, through SurfaceTopography (`pip install 'tmd_nb[instruments]'`):")
    rows.append("")
    rows.append("| vendor format | extensions |")
    rows.append("|---|---|")
    for v in instruments.VENDORS:
        rows.append(f"| {v.title} | {', '.join(f'`{e}`' for e in v.extensions) or '(by content)'} |")
    return "\n".join(rows) + "\n"


@renamed_keyword("path", "output_path")
def save(
    data: np.ndarray | Mapping[str, Any],
    output_path: PathLike,
    *,
    format: str | None = None,
    compress: bool = True,
    level: int | str | None = None,
    progress: Progress | None = None,
) -> str:
    """Save ``data`` in any supported format: the counterpart of :func:`load`.

    Parameters
    ----------
    data : numpy.ndarray, mapping or xarray.DataArray
        A 2-D height map, a dict with a ``"height_map"`` array and metadata, or a DataArray
        (:func:`tmd_nb.from_xarray` gives the dict).
    output_path : str or os.PathLike
        Where to write; the file is replaced atomically (``path=`` still works, with a
        :class:`~tmd_nb.TmdNbDeprecationWarning`).
    format : str, optional
        A format name (``"npz"``, ``"npy"``, ``"tmd"``, ...); ``None`` takes it from the
        extension of ``output_path``.
    compress, level
        ``compress`` NPZ only, ``level`` NPZ and X3P (see :func:`tmd_nb.export_to_npz`); other
        formats refuse them. ``level`` is
        ``"fastest"`` (the default), ``"balanced"``, ``"smallest"`` or an integer 0-9: the ladder
        is documented in :mod:`tmd_nb.storage.deflate`.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the heights are written.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    ValueError
        The format is unknown, cannot be told from the extension, or does not take an option
        given; raised before anything is written.
    TypeError
        A value cannot be stored (the message names its key).
    """
    if labelled.is_labelled(data):
        data = labelled.from_labelled(data)
    fmt = for_path(output_path) if format is None else by_name(format)
    if fmt.save is None:
        raise ValueError(f"{fmt.title} files are read only: save as {one_of([repr(n) for n in names(writing=True)])}")
    options: dict[str, Any] = {}
    if not compress:
        options["compress"] = compress
    if level is not None:
        options["level"] = level
    refused = [k for k in options if k not in fmt.options]
    if refused:
        takers = " and ".join(f.title for f in writable() if set(refused) <= f.options)
        verb = "applies" if len(refused) == 1 else "apply"
        raise ValueError(f"{' and '.join(refused)} {verb} to {takers} only, not {fmt.title}")
    return fmt.save(data, output_path, progress=progress, **options)
