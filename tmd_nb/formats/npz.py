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
        objects ``{"__tmd_type__": ...}`` (see :mod:`tmd_nb.formats.metadata`).
    ``<key>.npy`` / ``__array_<n>__.npy``
        Arrays found in the metadata, referenced from the JSON as
        ``{"__tmd_type__": "ndarray", "member": "<name>"}``. A top-level array is stored under
        its own key when that is a plain name, so ``numpy.load(path)["mask"]`` works.
    ``__tmd_nb_format__.npy``
        A 0-d int64 array: the format version (1).

    Files written by the TMD toolkit (``height_map`` + a JSON ``metadata`` string) and plain
    ``np.savez`` archives with a ``height_map`` member load as well; their other members are
    returned under their own names.

Every writer saves through :func:`tmd_nb.formats.atomic.atomic_write`; every reader refuses pickles and
raises :class:`~tmd_nb.errors.FormatError` for malformed content. This module imports only
numpy and the standard library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FormatError
from ..heightmap import HEIGHT_MAP, check_height_map_header, keys_text, split_height_map
from . import metadata
from ._io import Progress
from .archive import ZIP_MAGIC, read_npz, write_npz
from .atomic import atomic_write
from .base import Format, PathLike
from .deflate import level_problem

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
    members = {HEIGHT_MAP: array, METADATA: np.array(text), VERSION_MEMBER: np.array(FORMAT_VERSION, dtype=np.int64)}
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

    Everything is validated before the file is touched; a value that cannot be stored raises
    ``TypeError`` naming its key path. Returns the absolute path written.

    ``level``: ``"fastest"`` (= ``None``, the default), ``"balanced"`` (within 1% of
    ``np.savez_compressed``'s size, several times its speed) or ``"smallest"`` (smaller than
    numpy's), or an integer as in zlib (``0`` stored, ``1``-``3`` ISA-L, ``4``-``9`` zlib); the
    ladder is documented in :mod:`tmd_nb.formats.deflate`. ``progress(done_bytes, total_bytes)``
    is called as the array data is written.

    The height map and array metadata values may be Dask arrays: they are streamed one block row
    at a time (at most two are in memory: the next is computed while one is written), and the
    file is byte for byte the one the same data in memory gives.
    """
    problem = level_problem(level)
    if problem is not None:  # before anything is written
        raise ValueError(problem)
    members = encode_npz_members(data)
    with atomic_write(output_path) as fp:
        write_npz(fp, members, compress=compress, level=level, progress=progress)
    return os.path.abspath(output_path)


def load_from_npz(path: PathLike, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load ``{"height_map": array, **metadata}`` from an NPZ archive, never unpickling anything."""
    where = repr(os.fspath(path))
    return decode_npz_members(read_npz(path, progress=progress), where)


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
        members.pop(METADATA)
        if text.shape != () or text.dtype.kind not in "US":
            raise FormatError(
                f"{where} member 'metadata' is not a JSON string (dtype {text.dtype}, shape {text.shape})"
            )
        try:
            value = text.item()
            obj = json.loads(value.decode("utf-8") if isinstance(value, bytes) else value)
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"{where} member 'metadata' is not valid JSON: {exc}") from None
        if type(obj) is not dict:
            raise FormatError(f"{where} member 'metadata' is not a JSON object")
        used: set[str] = set()
        try:
            meta = metadata.decode(obj, members, where=f"{where} metadata", used=used)
        except (ValueError, RecursionError) as exc:
            raise FormatError(str(exc)) from None
        for name in used:
            members.pop(name, None)
    clash = sorted(set(meta) & set(members))
    if clash:
        raise FormatError(f"{where} has both a metadata entry and an array member named {clash[0]!r}")
    return {HEIGHT_MAP: height_map, **meta, **members}


FORMAT = Format(
    name="npz",
    title="NPZ",
    extensions=(".npz",),
    summary="height map + typed metadata (numpy zip archive)",
    recognise=lambda head, path: head.startswith((ZIP_MAGIC, b"PK\x05\x06")),
    load=load_from_npz,
    save=export_to_npz,
    check=encode_npz_members,
    options=frozenset({"compress", "level"}),
)
