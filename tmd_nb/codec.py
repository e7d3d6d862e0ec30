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
        objects ``{"__tmd_type__": ...}`` (see :mod:`tmd_nb.metadata`).
    ``<key>.npy`` / ``__array_<n>__.npy``
        Arrays found in the metadata, referenced from the JSON as
        ``{"__tmd_type__": "ndarray", "member": "<name>"}``. A top-level array is stored under
        its own key when that is a plain name, so ``numpy.load(path)["mask"]`` works.
    ``__tmd_nb_format__.npy``
        A 0-d int64 array: the format version (1).

    Files written by the TMD toolkit (``height_map`` + a JSON ``metadata`` string) and plain
    ``np.savez`` archives with a ``height_map`` member load as well; their other members are
    returned under their own names.

Every writer saves through :func:`tmd_nb.atomic.atomic_write`; every reader refuses pickles and
raises :class:`~tmd_nb.errors.FormatError` for malformed content. This module imports only
numpy and the standard library.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import metadata as _metadata
from ._io import Progress, _open
from .atomic import atomic_write
from .errors import FormatError, MetadataNotStoredWarning
from .npy import NPY_MAGIC, read_npy, write_npy
from .npz import ZIP_MAGIC, read_npz, write_npz

__all__ = [
    "FORMAT_VERSION",
    "export_to_npy",
    "export_to_npz",
    "height_map_of",
    "load",
    "load_from_npy",
    "load_from_npz",
    "save",
]

FORMAT_VERSION = 1
HEIGHT_MAP = "height_map"
METADATA = "metadata"
VERSION_MEMBER = "__tmd_nb_format__"
_RESERVED = {HEIGHT_MAP, METADATA, VERSION_MEMBER}
_HEIGHT_KINDS = frozenset("biufc")

PathLike = str | os.PathLike[str]

#: File extension -> format name, as :func:`save` reads it from a path.
EXTENSIONS = {".npz": "npz", ".npy": "npy", ".tmd": "tmd"}


def keys_text(keys: Iterable[Any], limit: int = 5) -> str:
    """``'a', 'b', ...``: the first ``limit`` keys, for a message (``none`` if there are none)."""
    keys = list(keys)
    return ", ".join(repr(k) for k in keys[:limit]) + (", ..." if len(keys) > limit else "") or "none"


def split_height_map(data: Any, what: str = "data") -> tuple[np.ndarray, dict[str, Any]]:
    """Return the validated height map and the metadata (everything else) of ``data``.

    ``data`` is a 2-D numeric array or a str-keyed dict with a ``"height_map"`` entry.
    """
    if isinstance(data, Mapping):
        if HEIGHT_MAP not in data:
            raise ValueError(f"{what} has no 'height_map' entry (keys: {keys_text(data, 8)})")
        array = data[HEIGHT_MAP]
        meta = {k: v for k, v in data.items() if k != HEIGHT_MAP}
        what = f"{what}['height_map']"
    else:
        array, meta = data, {}
    if isinstance(array, np.ma.MaskedArray):
        raise TypeError(
            f"{what} is a masked array; save array.filled(np.nan) and the mask "
            "(np.ma.getmaskarray(array)) as a separate metadata entry instead"
        )
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{what} must be a 2-D numpy array or a dict with a 'height_map' array, "
            f"not {type(array).__module__}.{type(array).__qualname__}"
        )
    array = np.asarray(array)  # a memmap or matrix becomes a plain view, no copy
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D, but has shape {array.shape} ({array.ndim}-D)")
    if array.dtype.kind not in _HEIGHT_KINDS or array.dtype.fields is not None:
        raise TypeError(f"{what} has dtype {array.dtype}; a height map must be bool, integer, float or complex")
    return array, meta


def height_map_of(value: Any) -> np.ndarray | None:
    """The array :func:`split_height_map` would accept in ``value`` (itself or its "height_map"), else None.

    For listing what can be saved (completion, the panel's picker): it never raises, whatever
    the user's object does, and never reads the array's values.
    """
    try:
        return split_height_map(value)[0]
    except Exception:
        return None


def export_to_npy(
    data: np.ndarray | Mapping[str, Any], output_path: PathLike, *, progress: Progress | None = None
) -> str:
    """Save the height map as a standard ``.npy`` file at exactly ``output_path``.

    NPY holds the array only: metadata in ``data`` is not stored, and a
    :class:`~tmd_nb.errors.MetadataNotStoredWarning` says so. Returns the absolute path.
    """
    array, meta = split_height_map(data)
    if meta:
        warnings.warn(
            f"NPY stores the height map only; metadata not saved to {os.fspath(output_path)!r}: "
            f"{keys_text(meta, 10)}. "
            "Use export_to_npz to keep it.",
            MetadataNotStoredWarning,
            stacklevel=2,
        )
    with atomic_write(output_path) as fp:
        write_npy(fp, array, progress=progress)
    return os.path.abspath(output_path)


def load_from_npy(path: PathLike, mmap: bool = False, *, progress: Progress | None = None) -> np.ndarray:
    """Load a 2-D height map from a ``.npy`` file (``mmap=True``: a read-only memory map)."""
    return read_npy(path, mmap=mmap, progress=progress, check=_check_height_map_header)


def encode_npz_members(data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate ``data`` and return the archive members ``export_to_npz`` writes for it."""
    array, meta = split_height_map(data)
    encoded, arrays = _metadata.encode(meta, reserved=_RESERVED)
    text = json.dumps(encoded, ensure_ascii=False, allow_nan=False)
    members = {HEIGHT_MAP: array, METADATA: np.array(text), VERSION_MEMBER: np.array(FORMAT_VERSION, dtype=np.int64)}
    members.update(arrays)
    return members


def export_to_npz(
    data: Mapping[str, Any],
    output_path: PathLike,
    compress: bool = True,
    *,
    level: int | None = None,
    progress: Progress | None = None,
) -> str:
    """Save ``data["height_map"]`` and every other key of ``data`` as typed metadata in an NPZ archive.

    Everything is validated before the file is touched; a value that cannot be stored raises
    ``TypeError`` naming its key path. Returns the absolute path written.

    ``level``: ``None`` (fast, ISA-L level 2), ``1``-``3`` (ISA-L), ``4``-``9`` (zlib; ``6`` and up
    give files no larger than ``np.savez_compressed``'s), ``0`` (stored). ``progress(done_bytes,
    total_bytes)`` is called as the array data is written.
    """
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
    _check_height_map_header(height_map.dtype, height_map.shape, f"{where} member 'height_map'")

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
            meta = _metadata.decode(obj, members, where=f"{where} metadata", used=used)
        except (ValueError, RecursionError) as exc:
            raise FormatError(str(exc)) from None
        for name in used:
            members.pop(name, None)
    clash = sorted(set(meta) & set(members))
    if clash:
        raise FormatError(f"{where} has both a metadata entry and an array member named {clash[0]!r}")
    return {HEIGHT_MAP: height_map, **meta, **members}


def _check_height_map_header(dtype: np.dtype, shape: tuple[int, ...], where: str) -> None:
    if len(shape) != 2:
        raise FormatError(f"{where} holds a {len(shape)}-D array of shape {shape}, not a 2-D height map")
    if dtype.kind not in _HEIGHT_KINDS:
        raise FormatError(f"{where} holds dtype {dtype}, not a numeric height map")


def load(path: PathLike, *, progress: Progress | None = None) -> dict[str, Any]:
    """Load any supported file, choosing the reader from its first bytes, not its name.

    Returns ``{"height_map": array, **metadata}`` for NPY, NPZ and ``.tmd`` files alike.
    """
    from . import tmd  # imported here: tmd.py builds on this module

    with _open(path, repr(os.fspath(path))) as fp:  # a pipe is refused, not waited on
        head = fp.read(64)
    if head.startswith(NPY_MAGIC):
        return {HEIGHT_MAP: load_from_npy(path, progress=progress)}
    if head.startswith(ZIP_MAGIC) or head.startswith(b"PK\x05\x06"):
        return load_from_npz(path, progress=progress)
    if tmd.looks_like_tmd(head):
        return tmd.load_tmd(path, progress=progress)
    raise FormatError(f"{os.fspath(path)!r} is not an NPY, NPZ or TMD file (it starts with {head[:16]!r})")


def save(
    data: np.ndarray | Mapping[str, Any],
    path: PathLike,
    *,
    format: str | None = None,
    compress: bool = True,
    level: int | None = None,
    progress: Progress | None = None,
) -> str:
    """Save ``data`` as NPZ, NPY or TMD: the counterpart of :func:`load`.

    ``format`` is ``"npz"``, ``"npy"`` or ``"tmd"``; ``None`` takes it from the extension of
    ``path`` (``ValueError`` for any other, before anything is written). ``compress`` and
    ``level`` apply to NPZ only. NPY and TMD hold less than a dict may carry: their writers warn
    with :class:`~tmd_nb.errors.MetadataNotStoredWarning`. Returns the absolute path written.
    """
    if format is None:
        ext = os.path.splitext(os.fspath(path))[1].lower()
        if ext not in EXTENSIONS:
            raise ValueError(
                f"cannot tell the format of {os.fspath(path)!r} from its extension "
                f"{ext or '(none)'}: use .npz, .npy or .tmd, or pass format="
            )
        format = EXTENSIONS[ext]
    if format == "npz":
        return export_to_npz(data, path, compress=compress, level=level, progress=progress)
    if format not in ("npy", "tmd"):
        raise ValueError(f"unknown format {format!r}; choose 'npz', 'npy' or 'tmd'")
    if not compress or level is not None:
        raise ValueError(f"compress and level apply to NPZ only, not {format.upper()}")
    if format == "npy":
        return export_to_npy(data, path, progress=progress)
    from . import tmd  # imported here: tmd.py builds on this module

    return tmd.export_to_tmd(data, path, progress=progress)
