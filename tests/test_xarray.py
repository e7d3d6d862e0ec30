"""Height maps as xarray DataArrays: to_xarray/from_xarray, the "tmd_nb" engine, laziness, netCDF.

The coordinates are checked against the spacing rule as Gwyddion's own reader (gwyfile) states
it, not against our writer; reads are counted where the heights are read
(``HeightMapWindows._window``), not timed.
"""

from __future__ import annotations

import datetime as dt
import pathlib
import pickle
import subprocess
import sys
import tomllib
import warnings
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, require
from helpers import assert_identical, height_maps, metadata_dicts
from hypothesis import given
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import chunks
from tmd_nb.formats import registry
from tmd_nb.storage.units import LENGTHS

xr = pytest.importorskip("xarray")
from xarray.backends import BackendEntrypoint  # noqa: E402

from tmd_nb.xarray_backend import TmdNbBackendEntrypoint  # noqa: E402

ENGINE = TmdNbBackendEntrypoint


def scan(dtype: str = "<f8", shape: tuple[int, int] = (4, 6)) -> dict[str, Any]:
    """A scan with lengths, offsets, units, a missing point and typed metadata of every kind."""
    rng = np.random.default_rng(23)
    heights = (rng.normal(size=shape) * 50).astype(dtype)
    if heights.dtype.kind == "f":
        heights[1, 2] = np.nan
    return {
        "height_map": heights,
        "x_length": 1.5,
        "y_length": 1.0,
        "x_offset": 0.25,
        "y_offset": -2.0,
        "lateral_unit": "mm",
        "height_unit": "um",
        "units": "a key of the user's, not the CF attribute",
        "date": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
        "instrument": {"manufacturer": "ACME", "serial": 7},
        "mask": np.ones(shape, dtype=bool),
        "tilt": np.float32(0.5),
        "steps": (1, 2, 3),
    }


def quiet_save(data: Any, path: pathlib.Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tmd_nb.MetadataNotStoredWarning)
        return tmd_nb.save(data, path)


# ---------------------------------------------------------------- to_xarray / from_xarray


def test_dims_coordinates_and_units_follow_the_convention() -> None:
    d = scan()
    da = tmd_nb.to_xarray(d)
    assert da.dims == ("y", "x") and da.name == "height_map"
    np.testing.assert_array_equal(da.x.values, 0.25 + (np.arange(6) + 0.5) * 1.5 / 6)
    np.testing.assert_array_equal(da.y.values, -2.0 + (np.arange(4) + 0.5) * 1.0 / 4)
    assert da.x.attrs == {"units": "mm"} and da.y.attrs == {"units": "mm"}
    assert da.attrs["units"] == "um"
    assert da.attrs["tmd_nb_units"] == d["units"]
    assert da.attrs["date"] is d["date"] and da.attrs["instrument"] is d["instrument"]
    assert np.isnan(da.values[1, 2])
    assert da.values is d["height_map"] or np.shares_memory(da.values, d["height_map"])


def test_the_round_trip_gives_the_dict_back_exactly() -> None:
    d = scan()
    assert_identical(d, tmd_nb.from_xarray(tmd_nb.to_xarray(d)))


def test_a_map_without_lengths_has_no_coordinates_and_no_height_unit() -> None:
    da = tmd_nb.to_xarray(np.zeros((2, 3), np.int16))
    assert dict(da.coords) == {} and da.attrs == {}
    assert_identical({"height_map": np.zeros((2, 3), np.int16)}, tmd_nb.from_xarray(da))


def test_lengths_without_units_take_the_truemap_millimetres() -> None:
    da = tmd_nb.to_xarray({"height_map": np.zeros((2, 3)), "x_length": 3.0, "y_length": 2.0})
    assert da.attrs["units"] == "mm" and da.x.attrs["units"] == "mm"


physical_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**40), 2**40),
    st.floats(1e-6, 1e6).map(np.float32),
    st.none(),
    st.text(max_size=3),
)
unit_values = st.sampled_from([*LENGTHS, "", "V", " mm ", None, 3])


@given(
    height_map=height_maps,
    meta=metadata_dicts,
    physical=st.fixed_dictionaries(
        {},
        optional={
            "x_length": physical_values,
            "y_length": physical_values,
            "x_offset": physical_values,
            "y_offset": physical_values,
            "lateral_unit": unit_values,
            "height_unit": unit_values,
            "tmd_nb_units": st.just("escaped twice"),
        },
    ),
)
def test_any_map_and_metadata_round_trip_exactly(
    height_map: np.ndarray, meta: dict[str, Any], physical: dict[str, Any]
) -> None:
    d = {"height_map": height_map, **meta, **physical}
    assert_identical(d, tmd_nb.from_xarray(tmd_nb.to_xarray(d)))


def test_a_dask_height_map_stays_lazy_both_ways() -> None:
    da_mod = pytest.importorskip("dask.array")
    lazy = da_mod.from_array(np.arange(12.0).reshape(3, 4), chunks=2)
    da = tmd_nb.to_xarray({"height_map": lazy, "x_length": 4.0, "y_length": 3.0})
    assert da.chunks is not None
    back = tmd_nb.from_xarray(da)
    assert isinstance(back["height_map"], da_mod.Array)


# ---------------------------------------------------------------- what comes back after xarray operations


def test_a_crop_with_sel_gives_the_crops_own_lengths_and_offsets() -> None:
    da = tmd_nb.to_xarray(scan())  # spacing 0.25 mm in x and y
    crop = da.sel(x=slice(0.6, 1.4), y=slice(-1.8, -1.2))  # x centres 0.625..1.375, y -1.625..-1.375
    back = tmd_nb.from_xarray(crop)
    assert back["height_map"].shape == (2, 4)
    np.testing.assert_array_equal(back["height_map"], scan()["height_map"][1:3, 1:5])
    assert back["x_length"] == pytest.approx(1.0) and back["x_offset"] == pytest.approx(0.5)
    assert back["y_length"] == pytest.approx(0.5) and back["y_offset"] == pytest.approx(-1.75)
    assert back["lateral_unit"] == "mm" and back["height_unit"] == "um"


@given(
    shape=st.tuples(st.integers(2, 40), st.integers(2, 40)),
    lengths=st.tuples(st.floats(1e-6, 1e6), st.floats(1e-6, 1e6)),
    offsets=st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)),
    data=st.data(),
)
def test_any_crop_gets_the_lengths_and_offsets_of_the_spacing_rule(
    shape: tuple[int, int], lengths: tuple[float, float], offsets: tuple[float, float], data: st.DataObject
) -> None:
    (ny, nx), (x_length, y_length), (x_offset, y_offset) = shape, lengths, offsets
    d = {"height_map": np.zeros(shape), "x_length": x_length, "y_length": y_length}
    d |= {"x_offset": x_offset, "y_offset": y_offset, "lateral_unit": "um"}
    y0 = data.draw(st.integers(0, ny - 2))
    y1 = data.draw(st.integers(y0 + 2, ny))
    x0 = data.draw(st.integers(0, nx - 2))
    x1 = data.draw(st.integers(x0 + 2, nx))
    back = tmd_nb.from_xarray(tmd_nb.to_xarray(d).isel(y=slice(y0, y1), x=slice(x0, x1)))
    dx, dy = x_length / nx, y_length / ny
    slack = 1e-9 * (abs(x_offset) + abs(y_offset) + x_length + y_length)
    assert back["height_map"].shape == (y1 - y0, x1 - x0)
    assert back["x_length"] == pytest.approx((x1 - x0) * dx, rel=1e-9, abs=slack)
    assert back["y_length"] == pytest.approx((y1 - y0) * dy, rel=1e-9, abs=slack)
    assert back["x_offset"] == pytest.approx(x_offset + x0 * dx, rel=1e-9, abs=slack)
    assert back["y_offset"] == pytest.approx(y_offset + y0 * dy, rel=1e-9, abs=slack)
    assert back["lateral_unit"] == "um"


def test_a_reversed_axis_is_flipped_back() -> None:
    d = scan()
    back = tmd_nb.from_xarray(tmd_nb.to_xarray(d).isel(x=slice(None, None, -1)).transpose("x", "y"))
    np.testing.assert_array_equal(back["height_map"], d["height_map"])
    assert back["x_length"] == pytest.approx(1.5) and back["x_offset"] == pytest.approx(0.25)


def test_pint_xarray_quantifies_the_units_and_conversions_come_back_as_physical_keys() -> None:
    pint_xarray = pytest.importorskip("pint_xarray")
    ureg = pint_xarray.unit_registry
    d = scan()
    d["lateral_unit"] = "µm"
    q = tmd_nb.to_xarray(d).pint.quantify()
    assert str(q.pint.units) == "micrometer"
    assert q.x.pint.units == ureg.micrometer
    # Unchanged: quantify and dequantify give the dict back exactly.
    assert_identical(d, tmd_nb.from_xarray(q.pint.dequantify()))
    # Heights to nm, lengths to mm: the same surface in other units, no unit factor lost.
    converted = tmd_nb.from_xarray(q.pint.to({"height_map": ureg.nm, "x": ureg.mm, "y": ureg.mm}).pint.dequantify())
    assert converted["lateral_unit"] == "mm" and converted["height_unit"] == "nm"
    assert converted["x_length"] == pytest.approx(1.5e-3) and converted["y_offset"] == pytest.approx(-2e-3)
    np.testing.assert_allclose(converted["height_map"], d["height_map"] * 1e3)
    with pytest.raises(TypeError, match=r"holds a pint Quantity; call \.pint\.dequantify\(\) first"):
        tmd_nb.from_xarray(q)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda da: da.rename(x="u"), r"has dims \('y', 'u'\); a height map has dims \('y', 'x'\)"),
        (lambda da: da.isel(x=[0, 1, 3]), "the x coordinates are not evenly spaced; a height map needs a regular grid"),
        (
            lambda da: da.assign_coords(x=da.x.assign_attrs(units="um") * 1000),
            r"the x and y coordinates have different units \(mm, um\)",
        ),
        (lambda da: da.assign_coords(x=da.x.values + 1), "the x coordinate has no 'units' attribute"),
        (lambda da: da.assign_attrs(height_map=1), "has an attribute 'height_map', which would replace the heights"),
    ],
)
def test_what_from_xarray_refuses(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tmd_nb.from_xarray(change(tmd_nb.to_xarray(scan())))


# ---------------------------------------------------------------- every format, the engine


FORMATS = [f.name for f in registry.writable()]
DTYPES = ["<f8", "<f4", ">f4", "<i2", "<u4", "|b1", "<c16"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_format_opens_as_to_xarray_of_load_and_saves_from_a_dataarray(
    tmp_path: pathlib.Path, fmt: str, dtype: str
) -> None:
    format_ = registry.by_name(fmt)
    d = scan(dtype)
    path = tmp_path / f"scan{format_.extensions[0]}"
    try:
        quiet_save(d, path)
    except (TypeError, ValueError):
        assert fmt == "tmd" and dtype != "<f4", "only TMD refuses a dtype (or float64 values float32 cannot hold)"
        return
    loaded = tmd_nb.load(path)
    opened = xr.open_dataarray(path, engine=ENGINE)
    xr.testing.assert_identical(opened.load(), tmd_nb.to_xarray(loaded))
    assert_identical(loaded, tmd_nb.from_xarray(opened))
    assert tmd_nb.from_xarray(opened)["height_map"].dtype == loaded["height_map"].dtype
    # save() takes the DataArray, and the file holds what from_xarray gives.
    again = tmp_path / f"again{format_.extensions[0]}"
    quiet_save(opened, again)
    assert_identical(tmd_nb.load(again), loaded)
    # open_dataset: the same, as the variable height_map.
    ds = xr.open_dataset(path, engine=ENGINE)
    assert list(ds.data_vars) == ["height_map"]
    xr.testing.assert_identical(ds["height_map"].load(), opened.load())
    if format_.keeps is None:  # a format that keeps every key gives the scan back exactly
        assert_identical(d, tmd_nb.from_xarray(opened))


def test_the_coordinates_match_what_gwyddion_states(tmp_path: pathlib.Path) -> None:
    gwyfile = pytest.importorskip("gwyfile")
    path = quiet_save(scan(), tmp_path / "scan.gwy")
    field = gwyfile.load(path)["/0/data"]
    opened = xr.open_dataarray(path, engine=ENGINE)
    per_metre = LENGTHS[opened.x.attrs["units"]]
    centres_x = field["xoff"] + (np.arange(field["xres"]) + 0.5) * field["xreal"] / field["xres"]
    centres_y = field["yoff"] + (np.arange(field["yres"]) + 0.5) * field["yreal"] / field["yres"]
    np.testing.assert_allclose(opened.x.values * per_metre, centres_x, rtol=1e-12)
    np.testing.assert_allclose(opened.y.values * per_metre, centres_y, rtol=1e-12)


def test_the_gwyddion_sample_from_other_software_opens_in_metres(gwy_sample: pathlib.Path) -> None:
    gwyfile = pytest.importorskip("gwyfile")
    field = gwyfile.load(str(gwy_sample))["/0/data"]
    opened = xr.open_dataarray(gwy_sample, engine=ENGINE)
    assert opened.shape == (field["yres"], field["xres"])
    assert opened.x.attrs["units"] == field["si_unit_xy"]["unitstr"] == ""  # a channel without units
    np.testing.assert_allclose(
        opened.x.values, field.get("xoff", 0.0) + (np.arange(field["xres"]) + 0.5) * field["xreal"] / field["xres"]
    )


def test_the_x3p_and_tmd_samples_open(x3p_samples: dict[str, pathlib.Path], tmd_samples: pathlib.Path) -> None:
    for path in [*x3p_samples.values(), *sorted(tmd_samples.glob("*.tmd"))]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = tmd_nb.load(path)
            opened = xr.open_dataarray(path, engine=ENGINE)
        np.testing.assert_array_equal(opened.values, loaded["height_map"])
        assert opened.dims == ("y", "x") and "x" in opened.coords


def test_guess_can_open_asks_the_registry(tmp_path: pathlib.Path) -> None:
    engine = ENGINE()
    for fmt in registry.writable():
        path = quiet_save(scan("<f4"), tmp_path / f"scan{fmt.extensions[0]}")
        renamed = pathlib.Path(path).rename(tmp_path / f"{fmt.name}.data")  # content, not the name
        assert engine.guess_can_open(renamed)
    (tmp_path / "notes.npz").write_text("not a zip")
    assert not engine.guess_can_open(tmp_path / "notes.npz")
    assert engine.guess_can_open(tmp_path / "not-yet-there.x3p") and not engine.guess_can_open("nowhere.nc")
    assert not engine.guess_can_open(object())


def test_an_instrument_file_opens_with_its_channel() -> None:
    path = ROOT.parent / "shared" / "data" / "instruments" / "di-3.di"
    require(path.is_file(), f"instrument sample not found at {path} (it lives in shared/data/instruments)")
    engine = ENGINE()
    assert engine.guess_can_open(path)
    for channel in (None, 1, "Phase"):
        opened = engine.open_dataset(path, channel=channel)["height_map"]
        expected = tmd_nb.load(path, channel=channel)
        np.testing.assert_array_equal(opened.values, expected["height_map"])
        assert opened.attrs["units"] == expected["height_unit"]


def test_the_engine_takes_a_channel_and_passes_it_to_load(tmp_path: pathlib.Path, monkeypatch) -> None:
    path = quiet_save(scan(), tmp_path / "scan.npz")
    seen = []

    def load(path: Any, **options: Any) -> dict[str, Any]:
        seen.append(options)
        return tmd_nb.load(path)

    monkeypatch.setattr(registry, "load", load)
    opened = xr.open_dataarray(path, engine=ENGINE, channel="Height")
    assert seen == [{"channel": "Height"}]
    assert_identical(scan(), tmd_nb.from_xarray(opened))


def test_drop_variables_leaves_the_coordinates(tmp_path: pathlib.Path) -> None:
    path = quiet_save(scan(), tmp_path / "scan.npz")
    ds = xr.open_dataset(path, engine=ENGINE, drop_variables="height_map")
    assert list(ds.data_vars) == [] and set(ds.coords) == {"x", "y"}


# ---------------------------------------------------------------- laziness


@pytest.fixture
def reads(monkeypatch) -> list[tuple[int, int]]:
    """Every window read from a stored NPY/NPZ height map, as its shape."""
    seen: list[tuple[int, int]] = []
    window = chunks.HeightMapWindows._window

    def counted(self: Any, rows: Any, cols: Any, shape: Any) -> np.ndarray:
        out = window(self, rows, cols, shape)
        seen.append(out.shape)
        return out

    monkeypatch.setattr(chunks.HeightMapWindows, "_window", counted)
    return seen


@pytest.mark.filterwarnings("ignore:The specified chunks separate the stored chunks")
@pytest.mark.parametrize(("name", "options"), [("map.npy", {}), ("map.npz", {}), ("stored.npz", {"compress": False})])
def test_npy_and_npz_open_without_reading_the_heights(
    tmp_path: pathlib.Path, reads: list[tuple[int, int]], name: str, options: dict[str, Any]
) -> None:
    heights = np.arange(64 * 48, dtype="<f4").reshape(64, 48)
    path = tmp_path / name
    if name.endswith(".npy"):
        tmd_nb.export_to_npy(heights, path)
    else:
        tmd_nb.export_to_npz({"height_map": heights, "x_length": 4.8, "y_length": 6.4}, path, **options)
    opened = xr.open_dataarray(path, engine=ENGINE, chunks={"y": 16, "x": 24})
    assert reads == []
    assert opened.chunks == ((16,) * 4, (24, 24))
    window = opened.isel(y=slice(0, 16), x=slice(0, 24)).values
    assert reads == [(16, 24)]
    np.testing.assert_array_equal(window, heights[:16, :24])
    np.testing.assert_array_equal(opened.compute().values, heights)
    assert len(reads) == 1 + 8
    # The graph's tasks hold the path and offsets only: it pickles, as a distributed cluster needs.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(opened)).values, heights)
    # Without chunks the DataArray is lazily indexed: a window reads that window only.
    reads.clear()
    plain = xr.open_dataarray(path, engine=ENGINE)
    assert reads == [] and plain.shape == (64, 48)
    np.testing.assert_array_equal(plain[10:12, 5:9].values, heights[10:12, 5:9])
    assert reads == [(2, 4)]


def test_a_deflated_npz_prefers_bands_of_whole_rows(tmp_path: pathlib.Path, reads: list[tuple[int, int]]) -> None:
    path = tmd_nb.export_to_npz({"height_map": np.zeros((40, 30))}, tmp_path / "map.npz")
    opened = xr.open_dataarray(path, engine=ENGINE, chunks={})
    assert reads == [] and opened.chunks is not None and opened.chunks[1] == (30,)


# ---------------------------------------------------------------- optional, found by name


def test_import_tmd_nb_does_not_import_xarray() -> None:
    code = "import sys, tmd_nb; tmd_nb.from_xarray; print(sorted(m for m in ('xarray', 'pandas') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def entry_point() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["entry-points"]["xarray.backends"]["tmd_nb"]


def test_the_declared_entry_point_is_the_engine() -> None:
    module, _, name = entry_point().partition(":")
    target = getattr(__import__(module, fromlist=[name]), name)
    assert target is TmdNbBackendEntrypoint and issubclass(target, BackendEntrypoint)


def test_xarray_finds_the_declared_engine_by_name(tmp_path: pathlib.Path) -> None:
    """With the entry point of pyproject.toml in a distribution's metadata, as installing writes it."""
    info = tmp_path / "site" / "tmd_nb_engine_check-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tmd_nb_engine_check\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[xarray.backends]\ntmd_nb = {entry_point()}\n")
    path = quiet_save(scan(), tmp_path / "scan.npz")
    code = f"""
import warnings
warnings.simplefilter("ignore", RuntimeWarning)  # an installed copy of the same entry point
import xarray as xr
engines = xr.backends.list_engines()
print(type(engines["tmd_nb"]).__name__)
print(xr.open_dataarray({path!r}, engine="tmd_nb").attrs["units"])
print(xr.open_dataarray({path!r}).attrs["height_unit"])  # found by its content, no engine named
"""
    env = {"PYTHONPATH": f"{info.parent}:{ROOT}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["TmdNbBackendEntrypoint", "um", "um"]


def test_the_installed_tmd_nb_engine_is_found_by_name(tmp_path: pathlib.Path) -> None:
    """Needs tmd_nb installed (pip install -e .) with this pyproject.toml's entry point."""
    require(
        "tmd_nb" in xr.backends.list_engines(),
        "xarray finds no tmd_nb engine: reinstall tmd_nb (pip install -e .) to register its entry point",
    )
    path = quiet_save(scan(), tmp_path / "scan.npz")
    assert_identical(scan(), tmd_nb.from_xarray(xr.open_dataarray(path, engine="tmd_nb")))


# ---------------------------------------------------------------- netCDF: what the docstring of to_xarray says


def netcdf_round_trip(da: Any, path: pathlib.Path) -> Any:
    da.to_netcdf(path, engine="scipy")
    with xr.open_dataarray(path, engine="scipy") as back:
        return back.load()


@pytest.mark.parametrize(
    "value",
    [None, {"a": 1}, dt.datetime(2024, 1, 1), pathlib.PurePosixPath("/a"), 1j, ["a", "b"], np.zeros((2, 2)), 2**40],
)
def test_netcdf_refuses_the_attributes_it_cannot_hold(tmp_path: pathlib.Path, value: Any) -> None:
    pytest.importorskip("scipy")
    da = tmd_nb.to_xarray({"height_map": np.zeros((2, 2)), "key": value})
    with pytest.raises((TypeError, ValueError, KeyError)):  # KeyError: scipy's writer, for complex and str arrays
        da.to_netcdf(tmp_path / "scan.nc", engine="scipy")


def test_what_a_netcdf_round_trip_gives_back(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("scipy")
    d = {
        "height_map": scan()["height_map"],
        **{k: scan()[k] for k in ("x_length", "y_length", "x_offset", "y_offset", "lateral_unit", "height_unit")},
        "n": 3,
        "f": 0.5,
        "flag": True,
        "raw": b"ab",
        "text": "µm",
        "list": [1, 2],
        "tuple": (1, 2),
        "longs": np.arange(3, dtype=np.int64),
        "f32": np.float32(1.5),
        "i16": np.int16(-2),
        "i64": np.int64(4),
        "u8": np.uint8(5),
    }
    back = tmd_nb.from_xarray(netcdf_round_trip(tmd_nb.to_xarray(d), tmp_path / "scan.nc"))
    assert_identical(
        {
            **d,
            "x_length": np.float64(1.5),
            "y_length": np.float64(1.0),
            "x_offset": np.float64(0.25),
            "y_offset": np.float64(-2.0),
            "n": np.int32(3),
            "f": np.float64(0.5),
            "flag": np.int8(1),
            "raw": "ab",
            "list": np.array([1, 2], dtype=">i4"),
            "tuple": np.array([1, 2], dtype=">i4"),
            "longs": np.arange(3, dtype=">i4"),
            "i64": np.int32(4),
            "u8": np.int8(5),
        },
        back,
    )


@pytest.mark.parametrize(
    ("dtype", "comes_back"),
    [
        ("<f8", "<f8"),
        ("<f4", "<f4"),
        ("<i4", "<i4"),
        ("<i2", "<i2"),
        ("|i1", "|i1"),
        ("|b1", "|b1"),
        ("<u2", "<i2"),
        ("<i8", "<i4"),
        ("<u8", "<i4"),
        ("<f2", None),
        ("<c16", None),
    ],
)
def test_which_height_dtypes_a_netcdf_round_trip_keeps(
    tmp_path: pathlib.Path, dtype: str, comes_back: str | None
) -> None:
    pytest.importorskip("scipy")
    heights = np.array([[0, 1], [1, 0]], dtype=dtype)
    da = tmd_nb.to_xarray({"height_map": heights})
    if comes_back is None:
        with pytest.raises(ValueError, match="NetCDF 3 does not support type"):
            netcdf_round_trip(da, tmp_path / "scan.nc")
        return
    back = tmd_nb.from_xarray(netcdf_round_trip(da, tmp_path / "scan.nc"))["height_map"]
    assert back.dtype == np.dtype(comes_back)
    np.testing.assert_array_equal(back, heights)


def test_netcdf_refuses_heights_that_do_not_fit_the_smaller_type(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("scipy")
    for heights in (np.array([[2**40]], np.int64), np.array([[200]], np.uint8)):
        with pytest.raises(ValueError, match="could not safely cast"):
            tmd_nb.to_xarray(heights).to_netcdf(tmp_path / "scan.nc", engine="scipy")
