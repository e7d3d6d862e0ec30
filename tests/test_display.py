"""Display helpers: the PNG preview, the summaries and HeightMapResult's notebook/terminal reprs."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
import subprocess
import sys
import zoneinfo
from pathlib import PurePosixPath

import numpy as np
import pytest
from helpers import png_size

from tmd_nb import export_to_npz, load
from tmd_nb.notebook import display
from tmd_nb.notebook.display import HeightMapResult, preview_png, summary, summary_html, summary_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _decode(png: bytes) -> np.ndarray:
    """RGBA pixels of a PNG (matplotlib reads PNG without pyplot)."""
    from matplotlib import image

    return image.imread(io.BytesIO(png), format="png")


@pytest.mark.parametrize(
    "array",
    [
        np.random.default_rng(0).normal(size=(40, 60)),
        np.arange(12, dtype=np.int16).reshape(3, 4),
        np.eye(5, dtype=bool),
        (np.arange(6) + 1j * np.arange(6)).reshape(2, 3),
        np.full((7, 7), 3.5),  # constant
        np.full((4, 4), np.nan),  # all NaN
        np.array([[np.inf, -np.inf], [np.nan, 1.0]]),
        np.ones((1, 3000), dtype=np.float32),  # extreme aspect
        np.arange(20.0).reshape(4, 5)[:, ::2],  # non-contiguous
        np.array([[2**62, -(2**62)]], dtype=np.int64),
    ],
    ids=["normal", "int16", "bool", "complex", "constant", "all-nan", "inf", "strip", "strided", "int64-huge"],
)
def test_preview_png_draws_any_height_map(array: np.ndarray) -> None:
    png = preview_png(array, title="a $title$ with dollars")
    width, height = png_size(png)
    assert 100 < width < 800 and 100 < height < 800
    assert _decode(png).shape[:2] == (height, width)


def test_preview_marks_non_finite_values_in_their_own_colour() -> None:
    finite = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    holed = finite.copy()
    holed[:32, :32] = np.nan  # a quarter of the map
    magenta = np.array([1.0, 0.0, 1.0])

    def magenta_pixels(png: bytes) -> int:
        rgb = _decode(png)[..., :3]
        return int(np.count_nonzero(np.all(np.abs(rgb - magenta) < 0.02, axis=-1)))

    assert magenta_pixels(preview_png(finite)) == 0
    assert magenta_pixels(preview_png(holed)) > 1000


def test_preview_of_a_large_map_is_fast_and_downsampled_first(monkeypatch: pytest.MonkeyPatch) -> None:
    big = np.random.default_rng(1).random((4000, 4000))
    preview_png(np.zeros((2, 2)))  # import matplotlib outside the timing
    drawn: list[tuple[int, int]] = []
    original = display._as_float
    monkeypatch.setattr(display, "_as_float", lambda a: drawn.append(a.shape) or original(a))
    preview_png(big, max_pixels=256)
    assert drawn and max(drawn[0]) <= 256  # only the downsampled view is ever converted and drawn


def test_downsample_limits_both_sides_and_is_a_view() -> None:
    array = np.zeros((1000, 300))
    small = display.downsample(array, 100)
    assert max(small.shape) <= 100 and small.base is array
    assert display.downsample(np.zeros((5, 5)), 100).shape == (5, 5)
    with pytest.raises(ValueError, match="max_pixels"):
        display.downsample(array, 0)


def test_preview_never_touches_pyplot_or_the_backend() -> None:
    code = (
        "import matplotlib, sys, numpy as np; matplotlib.use('svg'); from tmd_nb.notebook.display import preview_png; "
        "preview_png(np.ones((3, 3))); assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); "
        "assert 'IPython' not in sys.modules and 'ipywidgets' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_summary_statistics_ignore_nan_and_inf() -> None:
    array = np.array([[1.0, np.nan, 3.0], [np.inf, -2.0, np.nan]])
    info = summary(array)
    assert info["shape"] == (2, 3) and info["dtype"] == "float64"
    assert (info["min"], info["max"], info["mean"]) == (-2.0, 3.0, pytest.approx(2 / 3))
    assert (info["finite"], info["nan"], info["inf"]) == (3, 2, 1)
    text = summary_text(array)
    assert "min -2, max 3, mean 0.666667" in text and "2 missing (NaN)" in text and "1 inf" in text


def test_summary_of_all_nan_reports_no_heights() -> None:
    info = summary(np.full((3, 3), np.nan, dtype=np.float32))
    assert "min" not in info and info["nan"] == 9
    assert "no heights" in summary_text(np.full((3, 3), np.nan))
    assert "no heights" in summary_html(np.full((3, 3), np.nan))


def test_summary_of_integer_bool_and_complex_maps() -> None:
    ints = np.array([[2**62, 2**62 + 1]], dtype=np.int64)
    info = summary(ints)
    assert info["min"] == 2**62 and info["max"] == 2**62 + 1 and isinstance(info["min"], int)
    flags = summary(np.array([[True, False, False, False]]))
    assert (flags["min"], flags["max"], flags["mean"]) == (False, True, 0.25)
    waves = summary(np.array([[3 + 4j, np.nan + 0j]]))
    assert waves["magnitude"] and waves["max"] == 5.0 and waves["nan"] == 1
    assert "|z|" in summary_text(np.array([[3 + 4j]]))


def test_summary_stats_of_a_large_map_match_numpy_in_chunks() -> None:
    big = np.random.default_rng(2).normal(size=(3000, 1000)).astype(np.float32)
    big[::7, ::3] = np.nan
    info = summary(big)
    assert info["min"] == float(np.nanmin(big)) and info["max"] == float(np.nanmax(big))
    assert info["mean"] == pytest.approx(float(np.nanmean(big, dtype=np.float64)), rel=1e-9)
    assert info["nan"] == int(np.isnan(big).sum())


def test_metadata_table_shows_types_and_short_reprs_never_array_values() -> None:
    data = {
        "height_map": np.zeros((2, 2)),
        "units": "µm",
        "mask": np.arange(1_000_000).reshape(1000, 1000),
        "nested": {"calibration": np.full(50, 7.25)},
        "long": "x" * 10_000,
        "<script>": "<b>bold</b> & more",
    }
    rows = {key: (kind, text) for key, kind, text in summary(data)["metadata"]}
    assert rows["units"] == ("str", "'µm'")
    assert rows["mask"] == ("ndarray", "array((1000, 1000), int64)")
    assert "array((50,), float64)" in rows["nested"][1] and "7.25" not in rows["nested"][1]
    assert len(rows["long"][1]) <= display.MAX_REPR
    text = summary_text(data)
    html = summary_html(data)
    for rendered in (text, html):
        assert "999999" not in rendered and "x" * 200 not in rendered
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html


def test_metadata_values_read_naturally_and_are_cut_at_the_end() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    data = {
        "height_map": np.zeros((2, 2)),
        "taken": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=paris),
        "day": dt.date(2024, 5, 1),
        "clock": dt.time(8, 15),
        "source": PurePosixPath("/data/scans/run 3.tmd"),
        "runs": [dt.date(2024, 5, 1), PurePosixPath("a.tmd")],
        "long": "<" + "y" * 200,
        "gain": np.float32(1.25),
    }
    rows = {key: (kind, text) for key, kind, text in summary(data)["metadata"]}
    assert rows["taken"] == ("datetime.datetime", "2024-05-01T12:30:15.123456+02:00")
    assert rows["day"] == ("datetime.date", "2024-05-01")
    assert rows["clock"] == ("datetime.time", "08:15:00")
    assert rows["source"][1] == "/data/scans/run 3.tmd"
    assert rows["runs"][1] == "[2024-05-01, a.tmd]"
    assert rows["gain"][1] == repr(np.float32(1.25))  # numpy 2: "np.float32(1.25)", numpy 1: "1.25"
    long = rows["long"][1]
    assert long.startswith("'<yyyy") and long.endswith("\u2026") and "..." not in long
    assert len(long) <= display.MAX_REPR
    # a value too long for the row is cut at its end, never in the middle of a repr
    cut = display.short_repr(dt.datetime(2024, 5, 1, tzinfo=paris), 12)
    assert cut == "2024-05-01T\u2026"
    assert display.short_repr([*list(range(3)), "x" * 100], 40).endswith("\u2026") and "..." not in display.short_repr(
        ["x" * 100], 200
    )
    html = summary_html(data)
    assert "2024-05-01T12:30:15.123456+02:00" in html and "&#x27;&lt;yyyy" in html and "<yyyy" not in html

    class Broken:
        def __repr__(self):
            raise RuntimeError("no repr")

    assert display.short_repr(Broken()).startswith("<Broken instance at 0x")


def test_many_metadata_keys_are_cut_short() -> None:
    data = {"height_map": np.zeros((2, 2)), **{f"k{i}": i for i in range(500)}}
    text = summary_text(data)
    assert f"and {500 - display.MAX_META_ROWS} more" in text
    assert text.count("\n") < display.MAX_META_ROWS + 10


def test_summary_rejects_what_is_not_a_height_map() -> None:
    with pytest.raises(ValueError, match="2-D"):
        summary(np.zeros(5))
    with pytest.raises(ValueError, match="height_map"):
        summary({"z": np.zeros((2, 2))})


def test_height_map_result_is_a_plain_dict_that_exports(tmp_path) -> None:
    result = HeightMapResult(height_map=np.arange(6.0).reshape(2, 3), units="nm")
    assert isinstance(result, dict)
    export_to_npz(result, tmp_path / "r.npz")
    back = load(tmp_path / "r.npz")
    assert back["units"] == "nm" and np.array_equal(back["height_map"], result["height_map"])


def test_height_map_result_html_has_summary_table_and_inline_png() -> None:
    result = HeightMapResult(height_map=np.random.default_rng(3).random((500, 400)), units="µm", note="<i>hi</i>")
    html = result._repr_html_()
    assert "500 x 400" in html and "float64" in html and "<table" in html and "units" in html
    assert "&lt;i&gt;hi&lt;/i&gt;" in html
    match = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert match, "no inline PNG"
    assert base64.b64decode(match.group(1)).startswith(PNG_SIGNATURE)
    assert len(html) < 400_000


def test_height_map_result_pretty_is_short_text() -> None:
    from IPython.lib.pretty import pretty

    result = HeightMapResult(height_map=np.random.default_rng(4).random((2000, 2000)), units="um")
    text = pretty(result)
    assert text.startswith("height map 2000 x 2000 float64")
    assert "units" in text and text.count("\n") < 10
    assert "HeightMapResult(height_map=array((2000, 2000), float64)" in repr(result)
    assert len(pretty([result, result])) < 2000


def test_height_map_result_falls_back_when_height_map_is_gone() -> None:
    from IPython.lib.pretty import pretty

    result = HeightMapResult(height_map=np.zeros((2, 2)))
    result["height_map"] = "replaced"
    assert result._repr_html_() is None
    assert "replaced" in pretty(result) and "replaced" in repr(result)


def test_height_map_result_falls_back_for_a_masked_array() -> None:
    """A masked array is no height map for the exporters, so the summary must not try to show one."""
    from IPython.lib.pretty import pretty

    result = HeightMapResult(height_map=np.ma.masked_array(np.ones((3, 4)), mask=np.eye(3, 4, dtype=bool)))
    assert result._repr_html_() is None
    assert pretty(result).startswith("HeightMapResult(") and "masked_array" in pretty(result)
    assert repr(result).startswith("HeightMapResult({") and "masked_array" in repr(result)


def test_summary_never_copies_a_large_map_whole() -> None:
    import tracemalloc

    big = np.random.default_rng(7).random((2000, 2000))  # 32 MB
    big[::5] = np.nan
    preview_png(np.zeros((2, 2)))  # matplotlib's import is not the map's cost
    tracemalloc.start()
    try:
        summary(big)
        preview_png(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < big.nbytes / 2, f"peak {peak / 2**20:.1f} MiB for a {big.nbytes / 2**20:.0f} MiB map"


# --------------------------------------------------------------------------- missing points, shape


def _drawn(fig) -> tuple:
    """The image axes and the colour bar axes of a drawn preview figure, as pixel boxes."""
    fig.canvas.draw()
    (image_ax,) = fig.axes
    (bar_ax,) = image_ax.child_axes
    return image_ax.get_window_extent(), bar_ax.get_window_extent()


def _texts(fig) -> str:
    return " | ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text())


@pytest.mark.parametrize("shape", [(256, 918), (918, 256)], ids=["wide", "tall"])
def test_wide_and_tall_maps_get_a_readable_picture_with_a_colour_bar_of_its_size(shape) -> None:
    heights = np.random.default_rng(8).normal(size=shape)
    image, bar = _drawn(display.preview_figure(heights))
    short = min(image.width, image.height)
    assert short >= 100, f"the picture is a {image.width:.0f} x {image.height:.0f} px strip"
    assert bar.height == pytest.approx(image.height, abs=3), (bar.height, image.height)
    width, height = png_size(preview_png(heights))
    assert width < 600 and height < 600


def test_a_square_map_keeps_its_colour_bar_beside_the_picture() -> None:
    image, bar = _drawn(display.preview_figure(np.random.default_rng(9).random((300, 300))))
    assert abs(image.width - image.height) <= 2 and bar.height == pytest.approx(image.height, abs=3)
    assert bar.x0 > image.x1


def test_preview_says_how_many_points_are_missing_and_in_which_colour() -> None:
    heights = np.random.default_rng(10).random((1000, 1000))
    heights[:100, :123] = np.nan  # 12,300 points, counted on the whole map, not on the picture
    heights[500, 500] = np.inf
    text = _texts(display.preview_figure(heights))
    assert "magenta: 12,300 missing points (NaN), 1 inf" in text
    assert "magenta" not in _texts(display.preview_figure(np.ones((3, 3))))


def test_an_all_nan_map_draws_and_summarises_without_a_numpy_warning() -> None:
    nothing = np.full((4, 5), np.nan, dtype=np.float32)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = display.preview_figure(nothing)
        png = preview_png(nothing)
        text = summary_text(nothing)
        html = summary_html(nothing)
        HeightMapResult(height_map=nothing)._repr_html_()
    assert png.startswith(PNG_SIGNATURE)
    assert "no heights: all 20 points are missing (NaN), drawn magenta" in _texts(fig)
    assert not fig.axes[0].child_axes  # no colour bar for a range that does not exist
    assert "no heights: all 20 points are missing (NaN)" in text and "no heights" in html


def test_summary_says_how_many_points_are_missing() -> None:
    heights = np.array([[1.0, np.nan, 3.0], [np.inf, -2.0, np.nan]])
    info = summary(heights)
    expected = "min -2, max 3, mean 0.666667 of 3 finite points; left out: 2 missing (NaN), 1 inf"
    assert display.stats_text(info) == expected
    assert display.stats_text(summary(np.array([[np.inf, np.nan]]))) == "no heights: 1 missing (NaN), 1 inf"
    assert display.stats_text(summary(np.ones((2, 2)))) == "min 1, max 1, mean 1"


def test_preview_labels_axes_and_colour_bar_from_the_unit_keys() -> None:
    meta = {"x_length": 640.0, "y_length": 480.0, "lateral_unit": "um", "height_unit": "nm"}
    axes = display.picture_axes((48, 64), meta)
    assert (axes.xlabel, axes.ylabel, axes.label) == ("x (um)", "y (um)", "height (nm)")
    text = _texts(display.preview_figure(np.zeros((48, 64)), metadata=meta))
    assert "x (um)" in text and "height (nm)" in text


def test_preview_labels_follow_the_units_shorthand() -> None:
    """``units`` is the documented shorthand for both unit keys; the specific keys win.

    The preview reads units only through ``tmd_nb.formats.units.physical``, so this holds as soon as
    ``physical`` knows the shorthand.
    """
    both = display.picture_axes((48, 64), {"x_length": 640.0, "y_length": 480.0, "units": "um"})
    assert (both.xlabel, both.ylabel, both.label) == ("x (um)", "y (um)", "height (um)")
    mixed = {"x_length": 0.64, "y_length": 0.48, "units": "mm", "height_unit": "nm"}
    assert display.picture_axes((48, 64), mixed).label == "height (nm)"
    assert display.picture_axes((48, 64), mixed).xlabel == "x (mm)"


def test_metadata_table_keeps_keys_and_types_apart_on_one_line() -> None:
    html = summary_html({"height_map": np.zeros((2, 2)), "lateral_unit": "mm", "timestamp": dt.datetime(2024, 5, 17)})
    cells = re.findall(r'<td style="([^"]*)"><code>(lateral_unit|timestamp)</code>', html)
    assert len(cells) == 2 and all("nowrap" in style and "padding" in style for style, _ in cells), cells
    kinds = re.findall(r'<td style="([^"]*)">(str|datetime\.datetime)</td>', html)
    assert len(kinds) == 2 and all("nowrap" in style for style, _ in kinds), kinds
