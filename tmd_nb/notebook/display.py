"""Show a height map in a notebook without printing it: a summary table and a small picture.

Used by ``%tmd_load`` (its result is a :class:`HeightMapResult`) and by the ipywidgets panel.
A height map can hold tens of millions of values, so nothing here ever prints the values:
statistics are computed in bounded chunks and the picture is drawn from a strided
downsample of at most ``max_pixels`` per side.

This module imports numpy and the standard library only; matplotlib is imported inside
:func:`preview_png` (through :class:`matplotlib.figure.Figure`, never pyplot, so the user's
backend is left alone). It never imports IPython or ipywidgets.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import reprlib
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Literal, NamedTuple

import numpy as np

from ..heightmap import height_map_of, split_height_map
from ..storage.units import physical

__all__ = [
    "HeightMapResult",
    "count_text",
    "downsample",
    "missing_text",
    "picture_axes",
    "png_img_tag",
    "preview_figure",
    "preview_png",
    "shape_text",
    "short_repr",
    "size_text",
    "stats_text",
    "summary",
    "summary_html",
    "summary_text",
]

#: Non-finite values (NaN, +-inf) are drawn in this colour, outside the colour map.
BAD_COLOR = "#ff00ff"
_BAD_NAME = "magenta"
#: Elements per chunk when computing statistics: bounds the temporaries for huge arrays.
_STATS_CHUNK = 1 << 20
#: Metadata rows shown before "... and N more".
MAX_META_ROWS = 40
#: Longest value repr shown in a metadata row.
MAX_REPR = 80


# --------------------------------------------------------------------------- picture


def downsample(height_map: np.ndarray, max_pixels: int = 256) -> np.ndarray:
    """A strided view of ``height_map`` with at most ``max_pixels`` rows and columns.

    Strided slicing (not block means) keeps it a cheap view even of a memory map, and keeps
    isolated NaN/inf pixels visible instead of smearing them into their neighbours.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, not {max_pixels}")
    rows, cols = height_map.shape
    step = max(1, math.ceil(max(rows, cols) / max_pixels))
    return height_map[::step, ::step]


def _as_float(small: np.ndarray) -> np.ndarray:
    """The values to draw: magnitude for complex, 0/1 for bool, float64 for everything."""
    if small.dtype.kind == "c":
        return np.abs(small).astype(np.float64)
    return small.astype(np.float64)


class PictureAxes(NamedTuple):
    """How :func:`preview_png` draws a map: image extent, aspect, axis and colour-bar labels."""

    extent: tuple[float, float, float, float]
    aspect: Literal["equal", "auto"]
    xlabel: str
    ylabel: str
    label: str


def picture_axes(
    shape: tuple[int, ...], metadata: Mapping[str, Any] | None, *, complex_values: bool = False
) -> PictureAxes:
    """Physical axes when ``metadata`` gives the lengths (see :func:`preview_png`), pixel axes otherwise."""
    rows, cols = shape
    phys = physical(metadata) if metadata is not None else None
    label = "|height|" if complex_values else "height"
    if phys is not None and phys.height_known and phys.height_unit:
        label += f" ({phys.height_unit})"
    if phys is not None and phys.x_length is not None and phys.y_length is not None:
        # the pixels cover the scanned area: the image spans offset .. offset + length
        x0, y0 = phys.x_offset, phys.y_offset
        ratio = max(phys.x_length, phys.y_length) / min(phys.x_length, phys.y_length)
        unit = f" ({phys.lateral_unit})" if phys.lateral_unit else ""
        extent = (x0, x0 + phys.x_length, y0 + phys.y_length, y0)
        return PictureAxes(extent, "equal" if ratio <= 8 else "auto", f"x{unit}", f"y{unit}", label)
    # extent in original pixel indices, so the axes read as row/column of the full map
    ratio = max(rows, cols) / min(rows, cols)
    extent = (-0.5, cols - 0.5, rows - 0.5, -0.5)
    return PictureAxes(extent, "equal" if ratio <= 8 else "auto", "column", "row", label)


#: Size of the picture's longer side, in inches at :data:`_DPI`, for a wide and for a tall map.
_LONG_WIDE, _LONG_TALL = 5.2, 4.6
#: Area of the picture (square inches): an elongated map is drawn longer and narrower, not smaller.
_AREA = 3.3 * 3.3
#: Room around the picture: axis labels and ticks left, colour bar right, labels and notes below.
_LEFT, _RIGHT, _BELOW, _TITLE = 0.75, 0.95, 0.75, 0.25
_DPI = 80
#: Narrowest figure: the notes under a tall map stay readable.
_MIN_WIDTH = 3.4


def _picture_inches(axes: PictureAxes) -> tuple[float, float]:
    """Width and height of the picture: the drawn aspect of the map, at a readable size.

    The area stays about the same for every aspect, so a 918 x 256 map is a wide picture of
    readable height rather than a thin strip; the longer side is capped so the whole figure stays
    small in a notebook.
    """
    left, right, bottom, top = axes.extent
    width, height = abs(right - left), abs(top - bottom)
    ratio = width / height if axes.aspect == "equal" else (8.0 if width >= height else 1 / 8)
    ratio = min(max(ratio, 1 / 8), 8.0)
    w, h = math.sqrt(_AREA * ratio), math.sqrt(_AREA / ratio)
    if w > _LONG_WIDE:
        w, h = _LONG_WIDE, _LONG_WIDE / ratio
    if h > _LONG_TALL:
        w, h = _LONG_TALL * ratio, _LONG_TALL
    return max(w, 1.0), max(h, 1.0)


def _missing_counts(array: np.ndarray) -> tuple[int, int]:
    """``(NaN, inf)`` counts of the whole map, in chunks of rows (never a full-size temporary)."""
    if array.dtype.kind not in "fc":
        return 0, 0
    rows, cols = array.shape
    step = max(1, _STATS_CHUNK // max(cols, 1))
    nan = bad = 0
    for start in range(0, rows, step):
        chunk = array[start : start + step]
        nan += int(np.count_nonzero(np.isnan(chunk)))
        bad += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
    return nan, bad - nan


def missing_text(nan: int, inf: int) -> str:
    """``"12,300 missing (NaN), 1 inf"``: the points the statistics and the colours leave out."""
    parts = [f"{nan:,} missing (NaN)"] if nan else []
    if inf:
        parts.append(f"{inf:,} inf")
    return ", ".join(parts)


def preview_figure(
    height_map: np.ndarray,
    *,
    max_pixels: int = 256,
    title: str | None = None,
    label: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """The :class:`matplotlib.figure.Figure` that :func:`preview_png` renders (for tests and reuse).

    The figure is sized to the map's drawn aspect (see :func:`_picture_inches`), and the colour
    bar is an inset of the picture's axes, so it is exactly as tall as the picture whatever the
    shape. Missing points are counted on the whole map, not on the downsampled picture.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    array = np.asarray(height_map)
    if array.ndim != 2:
        raise ValueError(f"a height map must be 2-D, not {array.ndim}-D of shape {array.shape}")
    rows, cols = array.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"cannot draw an empty height map of shape {array.shape}")
    values = _as_float(downsample(array, max_pixels))
    finite = np.isfinite(values)
    masked = np.ma.masked_array(values, mask=~finite)
    any_finite = bool(finite.any())
    if any_finite:
        vmin, vmax = float(values[finite].min()), float(values[finite].max())
    else:
        vmin, vmax = 0.0, 1.0
    if vmin == vmax:  # a constant map: centre its single colour
        pad = abs(vmin) * 0.5 or 0.5
        vmin, vmax = vmin - pad, vmax + pad

    axes = picture_axes(array.shape, metadata, complex_values=array.dtype.kind == "c")
    width, height = _picture_inches(axes)
    notes = []
    nan, inf = _missing_counts(array)
    if not any_finite and not inf:
        notes.append(f"no heights: all {nan:,} points are missing (NaN), drawn {_BAD_NAME}")
    elif not any_finite:
        notes.append(f"no heights: {missing_text(nan, inf)}, drawn {_BAD_NAME}")
    elif nan or inf:
        missing = f"{nan:,} missing point{'' if nan == 1 else 's'} (NaN)" if nan else ""
        notes.append(f"{_BAD_NAME}: " + ", ".join(part for part in (missing, f"{inf:,} inf" if inf else "") if part))
    if values.shape != array.shape:
        notes.append(f"shown at {values.shape[0]} x {values.shape[1]}")
    fig = Figure(
        figsize=(
            max(width + _LEFT + _RIGHT, _MIN_WIDTH),
            height + _BELOW + (_TITLE if title is not None else 0.1) + (0.12 if len(notes) > 1 else 0),
        ),
        dpi=_DPI,
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=BAD_COLOR)
    image = ax.imshow(
        masked,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        extent=axes.extent,
        aspect=axes.aspect,
    )
    ax.set_xlabel(axes.xlabel, fontsize=8, parse_math=False)
    ax.set_ylabel(axes.ylabel, fontsize=8, parse_math=False)
    ax.tick_params(labelsize=7)
    if any_finite:
        # an inset in axes coordinates follows the picture's box after its aspect is applied
        cax = ax.inset_axes((1 + 0.1 / width, 0.0, 0.14 / width, 1.0))
        colorbar = fig.colorbar(image, cax=cax)
        colorbar.ax.tick_params(labelsize=7)
        colorbar.set_label(axes.label if label is None else label, fontsize=8, parse_math=False)
    if title is not None:
        ax.set_title(title, fontsize=9, parse_math=False)
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=7, color="0.35")
    return fig


def preview_png(
    height_map: np.ndarray,
    *,
    max_pixels: int = 256,
    title: str | None = None,
    label: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """A small PNG image of ``height_map`` with a colour bar.

    The array is downsampled first, so a 4000 x 4000 map renders as fast as a small one.
    NaN (missing points) and infinite values are left out of the colour range and drawn in
    :data:`BAD_COLOR` (magenta), and a note under the picture says how many there are; complex
    maps show their magnitude. ``label`` names the colour bar (default "height", "|height|" for
    complex). The picture has the map's aspect at a readable size: a 918 x 256 map is wide, not a
    strip beside a tall colour bar.

    With ``metadata`` that gives the lengths (``x_length``, ``y_length``; see
    :mod:`tmd_nb.storage.units`), the axes show physical coordinates in the lateral unit from the
    offsets, with the aspect ratio of the real surface, and the colour bar names the height unit,
    both as :func:`tmd_nb.storage.units.physical` reads them (``lateral_unit``/``height_unit``, or
    the ``units`` shorthand; millimetres when the metadata names no unit, as in ``.tmd`` files).
    Otherwise the axes count rows and columns.
    """
    fig = preview_figure(height_map, max_pixels=max_pixels, title=title, label=label, metadata=metadata)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def png_img_tag(png: bytes, alt: str = "height map preview") -> str:
    """An HTML ``<img>`` embedding ``png`` as a base64 data URI (notebooks keep it in the file)."""
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}"/>'


# --------------------------------------------------------------------------- summary


class _ShortRepr(reprlib.Repr):
    """``reprlib`` limits, cut at the end (never mid-repr), and readable forms of common values.

    Arrays show as ``array(shape, dtype)``, never their values; dates and times as ISO 8601,
    paths as their text, so a timestamp reads ``2024-05-01T12:00:00+02:00`` rather than a cut
    ``datetime.datetime(2024, 5, 1...``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = 60
        self.maxother = 60
        self.maxlist = self.maxtuple = self.maxset = self.maxdict = 6
        self.maxlevel = 3

    def repr1(self, x: Any, level: int) -> str:
        if isinstance(x, (dt.datetime, dt.date, dt.time)):
            return x.isoformat()
        if isinstance(x, PurePath):
            return str(x)
        return super().repr1(x, level)

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 3 * self.maxother:  # repr would be long, or refused past 4,300 digits
            digits = int(x.bit_length() * math.log10(2)) + 1
            return f"<int of about {digits:,} digits>"
        return _cut(repr(x), self.maxother)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return _cut(repr(x[: self.maxstring + 1]), self.maxstring)

    def repr_str(self, x: str, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return repr(x[: self.maxstring]) + "\u2026"

    def repr_instance(self, x: Any, level: int) -> str:
        return _cut(_safe_repr(x), self.maxother)

    def repr_ndarray(self, obj: np.ndarray, level: int) -> str:
        return _array_repr(obj)

    def repr_memmap(self, obj: np.ndarray, level: int) -> str:
        return _array_repr(obj)


def _safe_repr(x: Any) -> str:
    try:
        return repr(x)
    except Exception:
        return f"<{type(x).__name__} instance at {id(x):#x}>"


def _cut(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at the end with an ellipsis."""
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _array_repr(array: np.ndarray) -> str:
    if array.ndim == 0 and array.dtype.kind in "biufcUSMm" and array.dtype.itemsize <= 256:
        return f"array({array.item()!r}, {array.dtype})"
    return f"array({array.shape}, {array.dtype})"


_SHORT = _ShortRepr()


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    """A one-line repr of a metadata value, at most ``limit`` characters (readable forms, see above).

    Never raises: a value whose repr fails is shown by its type.
    """
    try:
        text = _SHORT.repr(value)
    except Exception:
        text = f"<{type(value).__name__} value>"
    return _cut(text, limit)


def _type_name(value: Any) -> str:
    kind = type(value)
    if kind.__module__ in ("builtins", "numpy"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _stats(array: np.ndarray) -> dict[str, Any]:
    """min/max/mean of the finite values and NaN/inf counts, in chunks of rows.

    Bounded temporaries: a 4000 x 4000 float64 map is never copied whole. Complex maps are
    summarised by their magnitude.
    """
    rows, cols = array.shape
    step = max(1, _STATS_CHUNK // max(cols, 1))
    kind = array.dtype.kind
    lo: Any = None
    hi: Any = None
    total = 0.0
    count = nan = inf = 0
    for start in range(0, rows, step):
        chunk = array[start : start + step]
        if kind == "c":
            chunk = np.abs(chunk)
        if kind in "fc":
            finite = np.isfinite(chunk)
            nans = int(np.count_nonzero(np.isnan(chunk)))
            nan += nans
            n_finite = int(np.count_nonzero(finite))
            inf += chunk.size - n_finite - nans
            if n_finite == 0:
                continue
            if n_finite != chunk.size:
                chunk = chunk[finite]
        elif kind == "b":
            chunk = chunk.view(np.uint8)
        if chunk.size == 0:
            continue
        c_lo, c_hi = chunk.min(), chunk.max()
        lo = c_lo if lo is None else min(lo, c_lo)
        hi = c_hi if hi is None else max(hi, c_hi)
        total += float(np.sum(chunk, dtype=np.float64))
        count += chunk.size
    result: dict[str, Any] = {"finite": count, "nan": nan, "inf": inf}
    if count:
        if kind == "b":
            lo, hi = bool(lo), bool(hi)
        result.update(
            min=lo.item() if hasattr(lo, "item") else lo,
            max=hi.item() if hasattr(hi, "item") else hi,
            mean=total / count,
        )
    return result


def summary(data: np.ndarray | Mapping[str, Any]) -> dict[str, Any]:
    """Facts about a height map (array or dict with "height_map") for display.

    Keys: ``shape``, ``dtype``, ``size``, ``nbytes``, ``finite``, ``nan``, ``inf``, ``min``,
    ``max``, ``mean`` (the last three only when there are finite values; of the magnitude for
    complex maps, flagged by ``magnitude``), and ``metadata``: a list of
    ``(key, type name, short repr)`` rows. Raises ``TypeError``/``ValueError`` like the exporters.
    """
    array, meta = split_height_map(data)
    info: dict[str, Any] = {
        "shape": tuple(array.shape),
        "dtype": str(array.dtype),
        "size": int(array.size),
        "nbytes": int(array.nbytes),
        "magnitude": array.dtype.kind == "c",
    }
    info.update(_stats(array))
    info["metadata"] = [(str(key), _type_name(value), short_repr(value)) for key, value in meta.items()]
    return info


def _format_number(value: Any) -> str:
    """Integers and bools in full (123456789, not 1.23457e+08), other numbers to 6 significant digits."""
    if isinstance(value, (bool, int)):
        return str(value)
    return f"{value:.6g}"


def stats_text(info: Mapping[str, Any]) -> str:
    """``min .., max .., mean ..`` of the finite points of a :func:`summary`, and what was left out.

    Missing points (NaN) and infinite values never count as heights; a map without a finite
    value says so plainly instead of showing a statistic of nothing.
    """
    prefix = "|z| " if info["magnitude"] else ""
    left_out = missing_text(info["nan"], info["inf"])
    if not info["finite"]:
        if info["nan"] and not info["inf"]:
            return f"no heights: all {info['nan']:,} points are missing (NaN)"
        return f"no heights: {left_out}"
    text = (
        f"{prefix}min {_format_number(info['min'])}, max {_format_number(info['max'])}, "
        f"mean {_format_number(info['mean'])}"
    )
    if left_out:
        text += f" of {info['finite']:,} finite points; left out: {left_out}"
    return text


def count_text(count: int, noun: str) -> str:
    """``"1 metadata key"``, ``"2 metadata keys"``: a count with its noun, plural when it is not 1."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def shape_text(shape: tuple[int, ...]) -> str:
    """``"300 x 200"``: plain ASCII, so the magics' lines, the panels and the picture read alike."""
    return " x ".join(str(n) for n in shape)


def size_text(nbytes: int) -> str:
    """A byte count in binary units: ``"512 B"``, ``"1.5 KiB"``, ... up to GiB."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def summary_text(data: np.ndarray | Mapping[str, Any]) -> str:
    """A few lines of plain text: shape, dtype, statistics and one line per metadata key."""
    info = summary(data)
    lines = [
        f"height map {shape_text(info['shape'])} {info['dtype']} ({size_text(info['nbytes'])})",
        f"  {stats_text(info)}",
    ]
    meta = info["metadata"]
    if meta:
        lines.append(f"  metadata ({count_text(len(meta), 'key')}):")
        width = min(24, max(len(key) for key, _, _ in meta[:MAX_META_ROWS]))
        for key, kind, text in meta[:MAX_META_ROWS]:
            lines.append(f"    {short_repr(key, 24) if len(key) > 24 else key:<{width}}  {kind}: {text}")
        if len(meta) > MAX_META_ROWS:
            lines.append(f"    ... and {len(meta) - MAX_META_ROWS} more")
    else:
        lines.append("  no metadata")
    return "\n".join(lines)


#: Style of the metadata table's key and type cells: on one line, with a gap before the next column.
_CELL = "text-align:left;padding:0 1em 0 0;white-space:nowrap"


def summary_html(data: np.ndarray | Mapping[str, Any]) -> str:
    """An HTML fragment: a header line, the statistics and a metadata table (all escaped)."""
    info = summary(data)
    esc = html.escape
    parts = [
        '<div class="tmd-nb-summary">',
        f"<b>height map</b> {esc(shape_text(info['shape']))} <code>{esc(info['dtype'])}</code> "
        f"({esc(size_text(info['nbytes']))})<br/>",
        f"{esc(stats_text(info))}",
    ]
    meta = info["metadata"]
    if meta:
        parts.append(
            '<table class="tmd-nb-metadata"><thead><tr>'
            f'<th style="{_CELL}">key</th><th style="{_CELL}">type</th><th style="text-align:left">value</th>'
            "</tr></thead><tbody>"
        )
        for key, kind, text in meta[:MAX_META_ROWS]:
            parts.append(
                f'<tr><td style="{_CELL}"><code>{esc(short_repr(key, 40) if len(key) > 40 else key)}'
                f'</code></td><td style="{_CELL}">{esc(kind)}</td>'
                f'<td style="text-align:left"><code>{esc(text)}</code></td></tr>'
            )
        if len(meta) > MAX_META_ROWS:
            parts.append(f'<tr><td colspan="3">... and {len(meta) - MAX_META_ROWS} more</td></tr>')
        parts.append("</tbody></table>")
    else:
        parts.append("<br/><i>no metadata</i>")
    parts.append("</div>")
    return "".join(parts)


# --------------------------------------------------------------------------- result


def _is_height_map_dict(data: Mapping[str, Any]) -> bool:
    """Whether the summary and the picture can show ``data`` (what the exporters accept, and not empty)."""
    array = height_map_of(data)
    return array is not None and array.size > 0


class HeightMapResult(dict):
    """``{"height_map": array, **metadata}`` as returned by ``%tmd_load``.

    A plain ``dict`` (so every exporter accepts it) that displays as a summary and a small
    picture in a notebook, and as a short summary in a terminal, never as a wall of numbers.
    If the user removes or replaces ``"height_map"`` with something else, it falls back to
    the ordinary dict display.
    """

    __slots__ = ()

    def _repr_html_(self) -> str | None:
        if not _is_height_map_dict(self):
            return None
        try:
            image = png_img_tag(preview_png(self["height_map"], metadata=self))
        except Exception as exc:  # e.g. a range matplotlib cannot draw: the summary still shows
            image = f"<i>{html.escape(_cut(f'no picture: {exc}', MAX_REPR))}</i>"
        return (
            f'<div class="tmd-nb-result" style="display:flex;gap:1em;align-items:flex-start;flex-wrap:wrap">'
            f"<div>{summary_html(self)}</div><div>{image}</div></div>"
        )

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        if cycle:
            p.text("HeightMapResult({...})")
        elif _is_height_map_dict(self):
            p.text(summary_text(self))
        else:
            p.text("HeightMapResult(")
            p.pretty(dict(self))
            p.text(")")

    def __repr__(self) -> str:
        if _is_height_map_dict(self):
            array = self["height_map"]
            keys = [k for k in self if k != "height_map"]
            shown = ", ".join(repr(k) for k in keys[:6]) + (", ..." if len(keys) > 6 else "")
            return f"HeightMapResult(height_map={_array_repr(array)}, metadata keys=[{shown}])"
        return f"HeightMapResult({dict.__repr__(self)})"
