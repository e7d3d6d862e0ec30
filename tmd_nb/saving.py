"""Saving for the magics and the panel: :func:`tmd_nb.save`, with dropped metadata reported, not warned.

NPY holds the height map only and TMD a few header fields; their writers warn with
:class:`~tmd_nb.errors.MetadataNotStoredWarning`. An interactive user should get one plain note
instead of a warning with a source line, so :func:`save_reporting` returns which keys were left
out and each adapter words the note its own way.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .codec import HEIGHT_MAP, keys_text, save
from .errors import MetadataNotStoredWarning
from .tmd import FIELDS as TMD_FIELDS

__all__ = ["HOLDS", "Saved", "keys_text", "save_reporting"]

#: What a single-array format holds, in words, for notes about the metadata it leaves out.
HOLDS = {"npy": "the height map", "tmd": "the height map, lengths, offsets and comment"}


@dataclass
class Saved:
    """What :func:`save_reporting` wrote: the absolute path and the metadata keys stored and left out."""

    path: str
    stored: int
    lost: list[Any]


def save_reporting(
    data: Any,
    path: str | os.PathLike[str],
    *,
    format: str,
    compress: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Saved:
    """:func:`tmd_nb.save` ``data`` in ``format``; its MetadataNotStoredWarning becomes :attr:`Saved.lost`.

    Other warnings are passed on unchanged; errors propagate as the writer raised them.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetadataNotStoredWarning)
        written = save(data, path, format=format, compress=compress, progress=progress)
    dropped = False
    for warning in caught:
        if issubclass(warning.category, MetadataNotStoredWarning):
            dropped = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    keys = [k for k in data if k != HEIGHT_MAP] if isinstance(data, Mapping) else []
    if format == "npz":
        stored, lost = keys, []
    elif format == "tmd":  # "tmd_version" is derived on load, so leaving it out loses nothing
        stored = [k for k in keys if k in TMD_FIELDS]
        lost = [k for k in keys if k not in TMD_FIELDS and k != "tmd_version"]
    else:
        stored, lost = [], keys
    return Saved(path=os.fspath(written), stored=len(stored), lost=lost if dropped else [])
