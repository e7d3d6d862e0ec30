"""tmd_nb: move surface height maps in and out of Jupyter, losslessly and safely.

The format layer (:mod:`tmd_nb.formats`) needs numpy only; the IPython magics and the
ipywidgets panels (:mod:`tmd_nb.notebook`) are imported lazily, and xarray only when
:func:`to_xarray` runs, so ``import tmd_nb`` stays light.

One naming scheme, the TMD toolkit's: ``load_from_<format>(file_path, *, ...)`` reads and
``export_to_<format>(data, output_path, *, ...)`` writes each format; :func:`load` and :func:`save`
choose the format themselves. ``load_tmd``, ``load_x3p``, ``load_gwy`` and ``load_sdf`` are the
former names, kept as aliases; a former keyword (``path=``) still works, with a
:class:`TmdNbDeprecationWarning`. Every warning is a :class:`TmdNbWarning`.
"""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .batch import ConvertReport, convert
from .chunks import load_metadata, open_dask
from .errors import (
    ChecksumWarning,
    DroppedContentWarning,
    FormatError,
    LegacyFormatWarning,
    MetadataNotStoredWarning,
    ModifiedFileWarning,
    SlowCodecWarning,
    TmdNbDeprecationWarning,
    TmdNbWarning,
    UndecodedMetadataWarning,
)
from .formats.gwy import export_to_gwy, load_from_gwy, load_gwy
from .formats.instruments import load_from_instrument, load_instrument
from .formats.npy import export_to_npy, load_from_npy
from .formats.npz import export_to_npz, load_from_npz
from .formats.registry import channels, load, save
from .formats.sdf import export_to_sdf, load_from_sdf, load_sdf
from .formats.tmd import export_to_tmd, load_from_tmd, load_tmd
from .formats.x3p import export_to_x3p, load_from_x3p, load_x3p
from .heightmap import height_map_of
from .xarray_io import from_xarray, to_xarray

__all__ = [
    "ChecksumWarning",
    "ConvertReport",
    "DroppedContentWarning",
    "ExportPanel",
    "FormatError",
    "LegacyFormatWarning",
    "LoadPanel",
    "MetadataNotStoredWarning",
    "ModifiedFileWarning",
    "SlowCodecWarning",
    "TmdNbDeprecationWarning",
    "TmdNbWarning",
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
    "load_from_gwy",
    "load_from_instrument",
    "load_from_npy",
    "load_from_npz",
    "load_from_sdf",
    "load_from_tmd",
    "load_from_x3p",
    "load_gwy",  # alias of load_from_gwy
    "load_instrument",  # alias of load_from_instrument
    "load_metadata",
    "load_sdf",  # alias of load_from_sdf
    "load_tmd",  # alias of load_from_tmd
    "load_x3p",  # alias of load_from_x3p
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
