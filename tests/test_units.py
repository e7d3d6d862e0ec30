"""One convention for physical size and units across formats, and previews drawn in it."""

from __future__ import annotations

import gwyfile
import numpy as np
import pytest
import x3pio
from helpers import png_size

import tmd_nb
from tmd_nb.notebook.display import HeightMapResult, picture_axes, preview_png
from tmd_nb.storage import units


def test_defaults_are_the_truemap_convention() -> None:
    phys = units.physical({"x_length": 2.0, "y_length": 1.0})
    assert (phys.lateral_unit, phys.height_unit, phys.x_offset, phys.y_offset) == ("mm", "mm", 0.0, 0.0)
    assert phys.spacing((10, 40)) == (0.05, 0.1)  # length / pixels, not length / (pixels - 1)
    assert units.physical({}).known is False


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "3", True, None])
def test_lengths_that_are_not_positive_numbers_count_as_unknown(bad) -> None:
    assert units.physical({"x_length": bad, "y_length": 1.0}).known is False


def test_numpy_scalars_count_as_numbers() -> None:
    phys = units.physical({"x_length": np.float32(2.5), "y_length": np.int64(3), "x_offset": np.float64(1)})
    assert (phys.x_length, phys.y_length, phys.x_offset) == (2.5, 3.0, 1.0)


@pytest.mark.parametrize(
    "unit, metres", [("m", 1.0), ("mm", 1e-3), ("um", 1e-6), ("\u00b5m", 1e-6), ("\u03bcm", 1e-6), ("nm", 1e-9)]
)
def test_length_units(unit, metres) -> None:
    assert units.metres_per(unit) == metres


def test_a_non_length_unit_has_no_factor() -> None:
    assert units.metres_per("V") is None


def test_conversions_between_formats_never_change_a_size_by_a_unit_factor(tmp_path, tmd_samples) -> None:
    scan = tmd_nb.load(tmd_samples / "v2_StepHeight.tmd")
    cols = scan["height_map"].shape[1]
    file = x3pio.read(tmd_nb.save(scan, tmp_path / "s.x3p"))
    assert file.header.x.increment * cols == pytest.approx(scan["x_length"] * 1e-3, rel=1e-15)
    # As another tool would write it back: the same surface without tmd_nb's record.
    for uri in list(file.extensions):
        del file.extensions[uri]
    file.save(tmp_path / "foreign.x3p")
    foreign = tmd_nb.load(tmp_path / "foreign.x3p")
    assert (foreign["lateral_unit"], foreign["height_unit"]) == ("m", "m")
    assert foreign["x_length"] == pytest.approx(scan["x_length"] * 1e-3, rel=1e-15)
    assert foreign["y_length"] == pytest.approx(scan["y_length"] * 1e-3, rel=1e-15)
    np.testing.assert_allclose(foreign["height_map"], scan["height_map"].astype(np.float64) * 1e-3, rtol=1e-15)
    # metres stay metres on the way on to Gwyddion
    field = gwyfile.load(tmd_nb.save(foreign, tmp_path / "s.gwy"))["/0/data"]
    assert (field["xreal"], field["yreal"]) == (foreign["x_length"], foreign["y_length"])
    np.testing.assert_array_equal(field.data, foreign["height_map"])


# --------------------------------------------------------------------------- previews


def test_preview_axes_are_physical_when_the_lengths_are_known() -> None:
    axes = picture_axes(
        (100, 200), {"x_length": 2.0, "y_length": 1.0, "x_offset": 5.0, "y_offset": 1.0, "lateral_unit": "um"}
    )
    assert axes.extent == (5.0, 7.0, 2.0, 1.0)
    assert (axes.aspect, axes.xlabel, axes.ylabel) == ("equal", "x (um)", "y (um)")
    assert axes.label == "height (mm)"  # lengths known: the TrueMap default for the heights


def test_preview_aspect_follows_the_real_surface_not_the_pixel_grid() -> None:
    # 10 x 100 pixels but a square area: drawn square, not as a strip
    assert picture_axes((10, 100), {"x_length": 1.0, "y_length": 1.0}).aspect == "equal"
    assert picture_axes((10, 100), {"x_length": 100.0, "y_length": 1.0}).aspect == "auto"


def test_preview_axes_count_pixels_without_lengths() -> None:
    axes = picture_axes((3, 4), {"comment": "x"})
    assert (axes.extent, axes.xlabel, axes.ylabel, axes.label) == ((-0.5, 3.5, 2.5, -0.5), "column", "row", "height")
    assert picture_axes((3, 4), {"height_unit": "nm"}).label == "height (nm)"
    assert picture_axes((3, 4), None, complex_values=True).label == "|height|"


def test_foreign_files_are_drawn_in_metres(tmp_path) -> None:
    x3pio.write(tmp_path / "f.x3p", np.zeros((4, 8)), x_scale=1e-6, y_scale=2e-6)
    data = tmd_nb.load(tmp_path / "f.x3p")
    axes = picture_axes(data["height_map"].shape, data)
    assert axes.extent == pytest.approx((0.0, 8e-6, 8e-6, 0.0))
    assert (axes.xlabel, axes.label) == ("x (m)", "height (m)")


def test_preview_png_and_the_load_result_draw_with_metadata(tmd_samples) -> None:
    scan = tmd_nb.load(tmd_samples / "v2_Surface.tmd")
    plain = preview_png(scan["height_map"])
    physical = preview_png(scan["height_map"], metadata=scan)
    assert png_size(plain) == png_size(physical) and plain != physical
    assert "data:image/png;base64," in HeightMapResult(scan)._repr_html_()
