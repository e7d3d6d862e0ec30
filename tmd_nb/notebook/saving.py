"""Saving for the magics and the panel: :func:`tmd_nb.save`, with dropped metadata reported, not warned.

Formats that hold less than a dict may carry (NPY, TMD, ...) warn with
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

from ..errors import MetadataNotStoredWarning
from ..formats import registry
from ..heightmap import HEIGHT_MAP

__all__ = ["Saved", "keeping_all", "save_reporting"]


def keeping_all() -> str:
    """The extensions of the formats that keep every metadata key, for "use ... to keep them" notes."""
    return registry.one_of([f.extensions[0] for f in registry.lossless()])


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
    level: int | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Saved:
    """:func:`tmd_nb.save` ``data`` in ``format``; its MetadataNotStoredWarning becomes :attr:`Saved.lost`.

    Other warnings are passed on unchanged; errors propagate as the writer raised them.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MetadataNotStoredWarning)
        written = registry.save(data, path, format=format, compress=compress, level=level, progress=progress)
    dropped = False
    for warning in caught:
        if issubclass(warning.category, MetadataNotStoredWarning):
            dropped = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    keys = [k for k in data if k != HEIGHT_MAP] if isinstance(data, Mapping) else []
    fmt = registry.by_name(format)
    stored = keys if fmt.keeps is None else [k for k in keys if k in fmt.keeps]
    return Saved(path=os.fspath(written), stored=len(stored), lost=fmt.lost_keys(keys) if dropped else [])
