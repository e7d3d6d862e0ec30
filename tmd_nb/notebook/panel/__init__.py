"""ipywidgets panels that export and load height maps without typing any options.

:class:`ExportPanel` lists the height maps of a namespace (2-D numeric arrays and dicts with a
``"height_map"`` entry), shows a small preview and summary of the selected one, lets the user edit
its metadata as typed rows and saves it as NPZ (compressed or not), NPY or TMD through the same
writers as :func:`tmd_nb.export_to_npz` and friends, so the file is exactly what they would write.
:class:`LoadPanel` is the reverse: pick a file, look at its summary and preview, bind it to a
variable name.

Design rules, because a panel is used by people who never read the docs:

* a metadata value is never silently turned into a string: each editable row has a type, its text
  is parsed on every change, and an invalid row is marked and blocks saving with a message naming
  the key; numpy float32/float64 scalars are edited in their own dtype (shown by their shortest
  repr in it: 2.52, not 2.5199999809265137); values the editor cannot represent exactly (arrays,
  nested structures, other numpy scalars...)
  are shown read-only and saved unchanged;
* an existing file is never replaced without an explicit tick on "Overwrite";
* errors end up as one plain sentence in the status line, never as a traceback;
* nothing converts a height map to text (the picker shows shape and dtype only) and the preview is
  drawn from a downsampled view (:func:`tmd_nb.notebook.display.preview_png`).

Modules: :mod:`.values` (typed values, no widgets), :mod:`.rows` (metadata rows), :mod:`.common`
(what both panels share), :mod:`.export` and :mod:`.load` (one panel each).

Every child widget carries a stable CSS class (``tmd-panel-*``), for styling and browser tests.
"""

from __future__ import annotations

from .export import ExportPanel
from .load import LoadPanel
from .values import SUGGESTED_KEYS, VALUE_TYPES, parse_value

__all__ = ["SUGGESTED_KEYS", "VALUE_TYPES", "ExportPanel", "LoadPanel", "parse_value"]
