"""tmd_nb: move surface height maps in and out of Jupyter, losslessly and safely.

The format layer (:mod:`tmd_nb.formats`) needs numpy only; the IPython magics and the
ipywidgets panels (:mod:`tmd_nb.notebook`) are imported lazily, and xarray only when
:func:`to_xarray` runs, so ``import tmd_nb`` stays light.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .batch import ConvertReport, convert
from .errors import FormatError, MetadataNotStoredWarning, UndecodedMetadataWarning
from .formats.chunks import load_metadata, open_dask
from .formats.gwy import export_to_gwy, load_gwy
from .formats.instruments import load_instrument
from .formats.npy import export_to_npy, load_from_npy
from .formats.npz import export_to_npz, load_from_npz
from .formats.registry import channels, load, save
from .formats.sdf import export_to_sdf, load_sdf
from .formats.tmd import export_to_tmd, load_tmd
from .formats.x3p import export_to_x3p, load_x3p
from .heightmap import height_map_of
from .xarray_io import from_xarray, to_xarray

__all__ = [
    "ConvertReport",
    "ExportPanel",
    "FormatError",
    "LoadPanel",
    "MetadataNotStoredWarning",
    "UndecodedMetadataWarning",
    "__version__",
    "channels",
    "convert",
    "export_to_gwy",
    "export_to_npy",
    "export_to_npz",
    "export_to_sdf",
    "export_to_tmd",
    "export_to_x3p",
    "from_xarray",
    "height_map_of",
    "load",
    "load_from_npy",
    "load_from_npz",
    "load_gwy",
    "load_instrument",
    "load_metadata",
    "load_sdf",
    "load_tmd",
    "load_x3p",
    "open_dask",
    "save",
    "to_xarray",
]


def __getattr__(name: str) -> Any:
    # Lazy: the panels pull in ipywidgets and matplotlib.
    if name in ("ExportPanel", "LoadPanel"):
        from .notebook import panel

        return getattr(panel, name)
    raise AttributeError(f"module 'tmd_nb' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tmd_nb``: register ``%tmd_export``, ``%tmd_load``, ``%tmd_panel`` and ``%tmd_convert``."""
    from .notebook.magics import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext tmd_nb``: remove the magics again."""
    from .notebook.magics import unload_ipython_extension as unload

    unload(ipython)
