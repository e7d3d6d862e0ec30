"""tmd_nb: move surface height maps in and out of Jupyter, losslessly and safely.

The codec (:mod:`tmd_nb.codec`, :mod:`tmd_nb.tmd`) needs numpy only; the IPython magics and
the ipywidgets panel are imported lazily, so ``import tmd_nb`` stays light.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .codec import export_to_npy, export_to_npz, height_map_of, load, load_from_npy, load_from_npz, save
from .errors import FormatError, MetadataNotStoredWarning

__all__ = [
    "ExportPanel",
    "FormatError",
    "LoadPanel",
    "MetadataNotStoredWarning",
    "export_to_npy",
    "export_to_npz",
    "export_to_tmd",
    "height_map_of",
    "load",
    "load_from_npy",
    "load_from_npz",
    "load_tmd",
    "save",
]


def __getattr__(name: str) -> Any:
    # Lazy: the .tmd codec is light, but the panel pulls in ipywidgets and matplotlib.
    if name in ("load_tmd", "export_to_tmd"):
        from . import tmd

        return getattr(tmd, name)
    if name in ("ExportPanel", "LoadPanel"):
        from . import panel

        return getattr(panel, name)
    raise AttributeError(f"module 'tmd_nb' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tmd_nb``: register ``%tmd_export``, ``%tmd_load`` and ``%tmd_panel``."""
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext tmd_nb``: remove the magics again."""
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
