"""What a file format module declares, so that every adapter can serve it without naming it.

Each module of :mod:`tmd_nb.formats` that reads (and mostly writes) a file format ends with one
:class:`Format`; :mod:`tmd_nb.formats.registry` lists them. A format without a writer
(``save=None``: instruments' own files) is read-only: ``save()``, ``--format`` and the export
panel offer only :attr:`Format.writable` formats. ``load()``, ``save()``, the
magics, tab completion and the panels read those declarations and never name a format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KEEPS_ALL", "Format", "PathLike"]

PathLike = str | os.PathLike[str]

#: :attr:`Format.keeps` of a format that stores every metadata key.
KEEPS_ALL: frozenset[str] | None = None


@dataclass(frozen=True)
class Format:
    """One file format: its names, how to recognise it, and its reader and writer."""

    #: Short lower-case name, as ``save(format=...)`` and ``--format`` take it: ``"npz"``.
    name: str
    #: How people write it in messages and menus: ``"NPZ"``.
    title: str
    #: File extensions, lower case with the dot; the first is the one ``save`` suggests.
    extensions: tuple[str, ...]
    #: One line for menus: what a file of this format holds.
    summary: str
    #: ``recognise(head, path)``: whether the file whose first bytes are ``head`` (up to 512) is
    #: of this format; ``path`` lets a container format look inside (a zip's member names).
    recognise: Callable[[bytes, PathLike], bool]
    #: ``load(path, *, progress=None) -> {"height_map": array, **metadata}``.
    load: Callable[..., dict[str, Any]]
    #: ``save(data, path, *, progress=None, **options) -> absolute path``; None for a format
    #: tmd_nb reads only.
    save: Callable[..., str] | None
    #: ``check(data)``: raise ``TypeError``/``ValueError`` if ``save`` would refuse ``data``, writing
    #: nothing (``None``: only ``save`` itself checks).
    check: Callable[[Any], object] | None = None
    #: The format whose files this one's are a special case of (an X3P file is a zip archive, as an
    #: NPZ file is): :func:`~tmd_nb.formats.registry.load` tries this format first.
    within: str | None = None
    #: Options ``save`` takes besides ``progress``, e.g. ``{"compress", "level"}``.
    options: frozenset[str] = field(default_factory=frozenset)
    #: The metadata keys a file keeps (``None``: every key ``export_to_npz`` accepts).
    keeps: frozenset[str] | None = KEEPS_ALL
    #: Keys the reader derives from the file itself, so leaving them out loses nothing.
    derived: frozenset[str] = field(default_factory=frozenset)
    #: A few words for menus beside :attr:`title`, e.g. ``"height map only"``.
    label: str = ""
    #: What a file holds, in words, for notes about the metadata it leaves out.
    holds: str = "the height map and all its metadata"
    #: ``channels(path) -> [{"name", "shape", "unit", ...}]`` for a format whose files hold several
    #: channels; its ``load`` then takes ``channel=`` (a name or an index). None: one height map.
    channels: Callable[..., list[dict[str, Any]]] | None = None
    #: The library that reads (and writes) the files, for the table of formats.
    library: str = "numpy"

    @property
    def writable(self) -> bool:
        """Whether tmd_nb can write this format (``save`` is not None)."""
        return self.save is not None

    def lost_keys(self, keys: list[Any]) -> list[Any]:
        """The metadata keys among ``keys`` that a file of this format does not keep."""
        if self.keeps is None:
            return []
        return [k for k in keys if k not in self.keeps and k not in self.derived]
