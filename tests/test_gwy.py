"""Gwyddion .gwy: lossless round trips, what Gwyddion-style readers see, hostile files."""

from __future__ import annotations

import datetime as dt
import re
import struct
import warnings
from pathlib import Path

import gwyfile
import hostile_files
import numpy as np
import pytest
from gwyfile.objects import GwyContainer, GwyDataField
from helpers import assert_identical, height_maps, writable_metadata_dicts
from hypothesis import given, settings

import tmd_nb
from tmd_nb import FormatError, export_to_gwy, load_gwy
from tmd_nb.formats import gwy, registry

# Each example writes and fsyncs a file through the format's library (up to 0.1 s): a quarter of
# the profile's examples keeps the thorough profile within its time in CI; the record's codec is
# the NPZ metadata codec, run at the full count in test_codec and test_hostile.
FAST = settings(max_examples=max(1, settings.default.max_examples // 4))


def surface(shape=(20, 30), dtype=np.float32) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (np.sin(x / 5.0) * np.cos(y / 7.0)).astype(dtype)


# --------------------------------------------------------------------------- round trips


@FAST
@given(hm=height_maps)
def test_every_height_map_comes_back_bit_for_bit(tmp_path, hm):
    back = load_gwy(export_to_gwy({"height_map": hm}, tmp_path / "a.gwy"))
    assert_identical({"height_map": hm}, back)


@FAST
@given(meta=writable_metadata_dicts)
def test_every_metadata_key_comes_back_typed(tmp_path, meta):
    data = {"height_map": surface((3, 4)), **meta}
    assert_identical(data, load_gwy(export_to_gwy(data, tmp_path / "m.gwy")))


def test_tmd_scans_round_trip_and_read_in_si_units_in_gwyfile(tmp_path, tmd_samples):
    for path in sorted(tmd_samples.glob("*.tmd")):
        scan = tmd_nb.load(path)
        out = export_to_gwy(scan, tmp_path / (path.stem + ".gwy"))
        assert_identical(scan, load_gwy(out))
        field = gwyfile.load(out)["/0/data"]
        assert field["xreal"] == pytest.approx(scan["x_length"] * 1e-3, rel=1e-15)
        assert field["yreal"] == pytest.approx(scan["y_length"] * 1e-3, rel=1e-15)
        assert field["si_unit_xy"]["unitstr"] == "m" and field["si_unit_z"]["unitstr"] == "m"
        np.testing.assert_allclose(field.data, scan["height_map"].astype(np.float64) * 1e-3, rtol=1e-15)


def test_what_gwyddion_shows(tmp_path):
    hm = surface((6, 8))
    hm[2, 3] = np.nan
    data = {"height_map": hm, "title": "Topography", "operator": "me", "when": dt.date(2024, 1, 2), "arr": np.ones(2)}
    container = gwyfile.load(export_to_gwy(data, tmp_path / "g.gwy"))
    assert container["/0/data/title"] == "Topography"
    assert isinstance(container["/0/data"], GwyDataField)
    mask = container["/0/mask"].data
    assert mask[2, 3] == 1.0 and mask.sum() == 1.0
    shown, finite = container["/0/data"].data, np.isfinite(hm)
    # the missing point is filled within the data's range (never an invented 0 outside it)
    assert np.nanmin(hm) * 1e-3 <= shown[2, 3] <= np.nanmax(hm) * 1e-3
    assert shown.min() == pytest.approx(np.nanmin(hm) * 1e-3) and np.isfinite(shown).all()
    np.testing.assert_array_equal(shown[finite], hm[finite].astype(np.float64) * 1e-3)
    assert container["/0/meta"]["operator"] == "me" and container["/0/meta"]["when"] == "2024-01-02"
    assert dict(gwyfile.util.get_datafields(container)).keys() == {"Topography"}


def test_units_that_are_not_lengths_are_written_as_they_are(tmp_path):
    data = {"height_map": surface(), "height_unit": "V", "lateral_unit": "um", "x_length": 30.0, "y_length": 20.0}
    field = gwyfile.load(export_to_gwy(data, tmp_path / "v.gwy"))["/0/data"]
    assert field["si_unit_z"]["unitstr"] == "V" and field["si_unit_xy"]["unitstr"] == "m"
    assert field["xreal"] == pytest.approx(30e-6)
    np.testing.assert_array_equal(field.data, surface().astype(np.float64))


def test_files_gwyfile_writes_load_with_their_units_and_mask(tmp_path):
    data = np.arange(12, dtype=np.float64).reshape(3, 4) * 1e-9
    field = GwyDataField(data, xreal=4e-6, yreal=3e-6, xoff=1e-6, yoff=2e-6, si_unit_xy="m", si_unit_z="m")
    mask = GwyDataField(np.eye(3, 4), xreal=4e-6, yreal=3e-6)
    meta = GwyContainer({"Operator": "x"}, typecodes={"Operator": "s"})
    GwyContainer({"/0/data": field, "/0/mask": mask, "/0/data/title": "Height", "/0/meta": meta}).tofile(
        str(tmp_path / "w.gwy")
    )
    back = load_gwy(tmp_path / "w.gwy")
    np.testing.assert_array_equal(back["height_map"], data)  # a mask selects: every value as stored
    assert back["mask"].dtype == np.bool_ and (back["mask"] == (np.eye(3, 4) > 0)).all()
    assert (back["x_length"], back["y_length"], back["x_offset"], back["y_offset"]) == (4e-6, 3e-6, 1e-6, 2e-6)
    assert (back["lateral_unit"], back["height_unit"], back["title"]) == ("m", "m", "Height")
    assert back["gwyddion_meta"] == {"Operator": "x"}


def test_the_shared_sample_loads(gwy_sample):
    back = tmd_nb.load(gwy_sample)
    assert back["height_map"].shape == (128, 128) and back["title"] == "Test"
    np.testing.assert_array_equal(back["height_map"], gwyfile.load(str(gwy_sample))["/0/data"].data)
    assert registry.recognise(gwy_sample) is gwy.FORMAT


def test_save_picks_gwy_by_extension(tmp_path):
    data = {"height_map": surface(), "k": 1}
    path = tmd_nb.save(data, tmp_path / "s.gwy")
    assert_identical(data, tmd_nb.load(path))


def test_a_file_whose_data_changed_loads_the_files_data_with_a_warning(tmp_path):
    out = export_to_gwy({"height_map": surface(), "operator": "me"}, tmp_path / "e.gwy")
    container = gwyfile.load(out)
    container["/0/data"]["data"] = container["/0/data"]["data"] * 2
    container.tofile(out)
    with pytest.warns(UserWarning, match=r"e\.gwy'.*data changed after tmd_nb wrote it"):
        back = load_gwy(out)
    assert back["operator"] == "me" and back["height_unit"] == "m"
    np.testing.assert_allclose(back["height_map"], surface().astype(np.float64) * 2e-3)


# --------------------------------------------------------------------------- hostile files


def component(name: str, code: bytes, body: bytes) -> bytes:
    return name.encode() + b"\0" + code + body


def gwy_file(*components: bytes, type_name: bytes = b"GwyContainer") -> bytes:
    body = b"".join(components)
    return b"GWYP" + type_name + b"\0" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "content, message",
    [
        (gwy_file(component("/0/data", b"D", struct.pack("<I", 1 << 30))), "a component runs past the end"),
        (b"GWYP" + b"GwyContainer\0" + struct.pack("<I", 1 << 31), "is truncated: its container declares"),
        (gwy_file(component("a", b"Z", b"")), "unknown type code b'Z'"),
        (gwy_file(component("a", b"s", b"no end")), "a string runs past the end of its object"),
        (gwy_file(component("/0/data", b"i", struct.pack("<i", 3))), "/0/data is not a GwyDataField"),
        (gwy_file(component("/0/meta", b"i", struct.pack("<i", 3))), "holds no image channel (/N/data)"),
        (gwy_file(type_name=b"GwySIUnit"), "holds a b'GwySIUnit' object, not a GwyContainer"),
        (gwy_file() + b"x", "has 1 stray bytes after its container"),
        (b"GWYP", "not a well-formed Gwyddion file"),
    ],
)
def test_malformed_files_raise_format_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.gwy"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=r"^'.*bad\.gwy'.*" + re.escape(message)):
        load_gwy(path)


def test_deep_nesting_is_refused_without_recursion(tmp_path):
    obj = b"GwyContainer\0" + struct.pack("<I", 0)
    for _ in range(5000):
        inner = component("x", b"o", obj)
        obj = b"GwyContainer\0" + struct.pack("<I", len(inner)) + inner
    path = tmp_path / "deep.gwy"
    path.write_bytes(b"GWYP" + obj)
    with pytest.raises(FormatError, match=r"objects nested more than 32 deep"):
        load_gwy(path)


def test_a_large_metadata_container_is_read_without_copying_it_per_key(tmp_path):
    # gwyfile copied the rest of a container for each of its keys (quadratic); tmd_nb's reader does not.
    many = b"".join(component(f"k{i}", b"s", b"v\0") for i in range(3000))
    inner = b"GwyContainer\0" + struct.pack("<I", len(many)) + many
    path = tmp_path / "meta.gwy"
    content = gwy_file(hostile_files.gwy_channel(), component("/0/meta", b"o", inner))
    path.write_bytes(content)
    back = load_gwy(path)
    assert len(back["gwyddion_meta"]) == 3000 and back["gwyddion_meta"]["k2999"] == "v"


def test_truncated_and_damaged_files_raise_format_error_naming_the_file(tmp_path):
    hm = surface()
    hm[0, 0] = np.nan
    good = Path(export_to_gwy({"height_map": hm, "arr": np.ones(3)}, tmp_path / "good.gwy")).read_bytes()
    rng = np.random.default_rng(3)
    for cut in sorted({int(c) for c in rng.integers(0, len(good) - 1, 40)}):
        path = tmp_path / f"cut{cut}.gwy"
        path.write_bytes(good[:cut])
        with pytest.raises(FormatError, match=rf"^'.*cut{cut}\.gwy'"):
            load_gwy(path)
    for i in range(40):
        damaged = bytearray(good)
        damaged[int(rng.integers(4, len(good)))] ^= 0xFF
        path = tmp_path / f"flip{i}.gwy"
        path.write_bytes(bytes(damaged))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a flipped data byte is an edit by "other software": a warning
            try:
                load_gwy(path)
            except FormatError as exc:
                assert str(exc).startswith(f"'{path}'")
