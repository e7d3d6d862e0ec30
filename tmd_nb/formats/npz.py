"""Export and load height maps with their metadata: NPY (array only) and NPZ (array + metadata).

On-disk format (full description: ``docs/FORMAT.md``)
----------------------------------------------------
NPY
    A standard NumPy ``.npy`` file holding the 2-D height map, nothing else.

NPZ, format version 1
    A standard zip archive that ``numpy.load`` opens with ``allow_pickle=False``. Members:

    ``height_map.npy``
        The 2-D height map (bool, integer, float or complex dtype, any byte order).
    ``metadata.npy``
        A 0-d unicode array holding one JSON object: the user's metadata keys at its top
        level. Values JSON holds natively are stored as themselves; other types are tagged
        objects ``{"__tmd_type__": ...}`` (see :mod:`tmd_nb.storage.metadata`).
    ``<key>.npy`` / ``__array_<n>__.npy``
        Arrays found in the metadata, referenced from the JSON as
        ``{"__tmd_type__": "ndarray", "member": "<name>"}``. A top-level array is stored under
        its own key when that is a plain name, so ``numpy.load(path)["mask"]`` works.
    ``__tmd_nb_format__.npy``
        A 0-d int64 array: the format version (1).

    Files written by the TMD toolkit (``height_map`` + a JSON ``metadata`` string) and plain
    ``np.savez`` archives with a ``height_map`` member load as well; their other members are
    returned under their own names. When the toolkit could not encode its metadata as JSON it
    wrote Python text instead (``str(dict)``); such a file (no format version member, metadata
    not JSON) loads with that text as a string under ``"metadata"`` and an
    :class:`~tmd_nb.errors.UndecodedMetadataWarning`. In a file tmd_nb wrote, metadata that is
    not valid JSON is damage: :class:`~tmd_nb.errors.FormatError`.

Limits (see :mod:`tmd_nb.storage.metadata` and SECURITY.md): the metadata member holds at most
:data:`~tmd_nb.storage.metadata.MAX_TEXT_BYTES` bytes (checked on its NPY header, before its data
are inflated), at most :data:`~tmd_nb.storage.metadata.MAX_VALUES` JSON values (counted before
any is built), and no metadata key ``height_map`` (the name of the height map itself).

Every writer saves through :func:`tmd_nb.storage.atomic.atomic_write`; every reader refuses pickles and
raises :class:`~tmd_nb.errors.FormatError` for malformed content. This module imports only
numpy and the standard library.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FormatError, UndecodedMetadataWarning, warn
from ..heightmap import HEIGHT_MAP, check_height_map_header, keys_text, split_height_map
from ..storage import metadata
from ..storage._io import Progress
from ..storage.archive import ZIP_MAGIC, read_npz, write_npz
from ..storage.atomic import atomic_write
from ..storage.deflate import level_problem
from .base import Format, PathLike

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "decode_npz_members",
    "encode_npz_members",
    "export_to_npz",
    "load_from_npz",
]

FORMAT_VERSION = 1
METADATA = "metadata"
VERSION_MEMBER = "__tmd_nb_format__"
_RESERVED = {HEIGHT_MAP, METADATA, VERSION_MEMBER}


def encode_npz_members(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate ``data`` and return the archive members ``export_to_npz`` writes for it."""
    array, meta = split_height_map(data, lazy=True)
    encoded, arrays = metadata.encode(meta, reserved=_RESERVED)
    text = json.dumps(encoded, ensure_ascii=False, allow_nan=False)
    # What the reader refuses is refused here, so that every file written loads again.
    nbytes = 4 * len(text)  # the size of np.array(text): UTF-32, checked before making it
    if nbytes > metadata.MAX_TEXT_BYTES:
        raise ValueError(
            f"the metadata take {nbytes:,} bytes as JSON text, more than the {metadata.MAX_TEXT_BYTES:,} "
            "an NPZ file may hold; store large values (long text, big lists) as numpy arrays"
        )
    metadata.check_json_text(text, "the metadata")
    members = {
        HEIGHT_MAP: array,
        METADATA: np.array(text),
        VERSION_MEMBER: np.array(FORMAT_VERSION, dtype=np.int64),
    }
    members.update(arrays)
    return members


def export_to_npz(
    data: Mapping[str, Any],
    output_path: PathLike,
    compress: bool = True,
    *,
    level: int | str | None = None,
    progress: Progress | None = None,
) -> str:
    """Save ``data["height_map"]`` and every other key of ``data`` as typed metadata in an NPZ archive.

    Everything is validated before the file is touched, and the file is replaced atomically. The
    archive opens with plain ``numpy.load`` (``allow_pickle`` off); its layout is in
    ``docs/FORMAT.md``.

    Parameters
    ----------
    data : mapping
        ``{"height_map": 2-D numeric array, **metadata}`` with str keys. Metadata values keep
        their types (numbers, text, bytes, None, dates and times with their zones, containers,
        numpy scalars and arrays). The height map and array values may be Dask arrays: they are
        streamed one block row at a time (at most two in memory), and the file is byte for byte
        the one the same data in memory gives.
    output_path : str or os.PathLike
        Where to write (exactly this path; no extension is added).
    compress : bool, default True
        Deflate the members; ``False`` stores them (fastest, largest).
    level : str or int, optional
        A rung of the compression ladder, ``"fastest"`` (the default), ``"balanced"`` or
        ``"smallest"``, or an integer level; what each means is documented once, in
        :mod:`tmd_nb.storage.deflate`.
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the array data is written.

    Returns
    -------
    str
        The absolute path written.

    Raises
    ------
    TypeError
        A key is not a str, or a value cannot be stored; the message names its key path.
    ValueError
        ``data`` has no 2-D numeric ``"height_map"``, a value is out of the format's limits,
        ``level`` is unknown, or ``level`` is given with ``compress=False``.
    OSError
        The file cannot be written; an existing special or write-protected file is refused.
    """
    problem = level_problem(level)
    if not compress and level is not None:  # the level would be ignored: say so, as --no-compress --level does
        problem = f"level={level!r} and compress=False contradict each other (a stored member has no level); give one"
    if problem is not None:  # before anything is written
        raise ValueError(problem)
    members = encode_npz_members(data)
    with atomic_write(output_path) as fp:
        write_npz(fp, members, compress=compress, level=level, progress=progress)
    return os.path.abspath(output_path)


def load_from_npz(file_path: PathLike, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load ``{"height_map": array, **metadata}`` from an NPZ archive, never unpickling anything.

    Parameters
    ----------
    file_path : str or os.PathLike
        The archive (the TMD toolkit's name for this parameter).
    progress : callable, optional
        ``progress(done_bytes, total_bytes)``, called as the members are read.

    Returns
    -------
    dict
        The height map and the metadata, with their types.

    Raises
    ------
    FormatError
        The file is malformed or beyond the limits of SECURITY.md (the message names the file).
    OSError
        The file cannot be read.
    """
    where = repr(os.fspath(file_path))
    return decode_npz_members(read_npz(file_path, progress=progress, check=check_member), where)


def check_member(key: str, dtype: np.dtype, shape: tuple[int, ...], where: str, keys: frozenset[str]) -> None:
    """Refuse, from its NPY header alone, a member that would be read only to be refused.

    The height map must be one; the version a 0-d integer; the metadata text (in a file with a
    version member, or a 0-d string in any file) a 0-d string of at most
    :data:`~tmd_nb.storage.metadata.MAX_TEXT_BYTES`. Every other member is returned to the caller.
    """
    if key == HEIGHT_MAP:
        check_height_map_header(dtype, shape, where)
    elif key == VERSION_MEMBER and (shape != () or dtype.kind not in "iu"):
        raise FormatError(f"{where} is a malformed format version member (dtype {dtype}, shape {shape})")
    elif key == METADATA and (VERSION_MEMBER in keys or (shape == () and dtype.kind in "US")):
        if shape != () or dtype.kind not in "US":
            raise FormatError(f"{where} is not a JSON string (dtype {dtype}, shape {shape})")
        if dtype.itemsize > metadata.MAX_TEXT_BYTES:
            raise FormatError(
                f"{where} holds {dtype.itemsize:,} bytes of metadata text, more than the "
                f"{metadata.MAX_TEXT_BYTES:,} allowed"
            )


def decode_npz_members(members: dict[str, np.ndarray], where: str) -> dict[str, Any]:
    """Turn the arrays of an NPZ archive back into ``{"height_map": ..., **metadata}``."""
    if HEIGHT_MAP not in members:
        raise FormatError(f"{where} has no 'height_map' array (members: {keys_text(members, 8)})")
    height_map = members.pop(HEIGHT_MAP)
    check_height_map_header(height_map.dtype, height_map.shape, f"{where} member 'height_map'")

    version = members.pop(VERSION_MEMBER, None)
    if version is not None:
        if version.shape != () or version.dtype.kind not in "iu":
            raise FormatError(f"{where} has a malformed format version member")
        if int(version) > FORMAT_VERSION:
            raise FormatError(
                f"{where} uses tmd_nb format version {int(version)}; this tmd_nb reads up to "
                f"{FORMAT_VERSION}: upgrade tmd_nb"
            )

    meta: dict[str, Any] = {}
    text = members.get(METADATA)
    if text is not None and (version is not None or (text.shape == () and text.dtype.kind in "US")):
        del text  # only the member itself, handed over, keeps the text alive while it is decoded
        meta = _decode_metadata(members.pop(METADATA), members, where, written_here=version is not None)
    clash = sorted(set(meta) & set(members))
    if clash:
        raise FormatError(f"{where} has both a metadata entry and an array member named {clash[0]!r}")
    return {HEIGHT_MAP: height_map, **meta, **members}


def _decode_metadata(
    text: np.ndarray, members: dict[str, np.ndarray], where: str, written_here: bool
) -> dict[str, Any]:
    """The metadata member's JSON, decoded; the array members it refers to are removed from ``members``.

    Every problem is one :class:`FormatError` raised here, outside any ``except`` block, so
    that no chain of inner exceptions is kept alive with it.
    """
    if text.shape != () or text.dtype.kind not in "US":
        raise FormatError(f"{where} member 'metadata' is not a JSON string (dtype {text.dtype}, shape {text.shape})")
    problem: str | None = None
    value = text.item()
    del text
    try:
        value = value.decode("utf-8") if isinstance(value, bytes) else value
    except UnicodeDecodeError as exc:
        problem = f"{where} member 'metadata' is not UTF-8 text: {exc.reason} at byte {exc.start}"
    not_json = False
    if problem is None:
        try:
            obj = metadata.loads(value, f"{where} member 'metadata'")
        except ValueError as exc:
            problem, not_json = str(exc), isinstance(exc, metadata.InvalidJSON)
    if problem is not None:
        if not_json and not written_here:
            # The TMD toolkit writes str(metadata) when json.dumps fails: keep that text, say why.
            warn(
                f"{where} holds metadata that is not JSON (the TMD toolkit writes Python text when it "
                "cannot encode its metadata as JSON); it is returned as a string under 'metadata'",
                UndecodedMetadataWarning,
            )
            return {METADATA: value}
        raise FormatError(problem)
    del value
    if type(obj) is not dict:
        raise FormatError(f"{where} member 'metadata' is not a JSON object")
    if HEIGHT_MAP in obj:  # would replace the height map checked above with anything at all
        raise FormatError(
            f"{where} has metadata named {HEIGHT_MAP!r}, the name of the height map itself; "
            "the file is damaged or forged"
        )
    used: set[str] = set()
    try:
        meta = metadata.decode(obj, members, where=f"{where} metadata", used=used)
    except ValueError as exc:
        problem = str(exc)
    if problem is not None:
        raise FormatError(problem)
    for name in used:
        members.pop(name, None)
    return meta


def looks_like_npz(head: bytes, path: PathLike) -> bool:
    """Whether ``head`` starts a zip archive that is not an XML document's container.

    numpy names every member of an NPZ ``*.npy``; a zip whose first member is ``*.xml`` is an
    instrument's (Sensofar PLUX's ``index.xml``, a spreadsheet's ``[Content_Types].xml``) and is
    left to the formats after this one, instead of being refused as an NPZ without arrays.
    """
    if head.startswith(b"PK\x05\x06"):
        return True  # an empty archive
    if not head.startswith(ZIP_MAGIC):
        return False
    if len(head) < 30:
        return True
    (length,) = struct.unpack_from("<H", head, 26)
    return not head[30 : 30 + length].lower().endswith(b".xml")


FORMAT = Format(
    name="npz",
    title="NPZ",
    extensions=(".npz",),
    summary="height map + typed metadata (numpy zip archive)",
    recognise=looks_like_npz,
    load=load_from_npz,
    save=export_to_npz,
    check=encode_npz_members,
    options=frozenset({"compress", "level"}),
)
