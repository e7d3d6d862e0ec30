"""X3P (ISO 25178-72): lossless round trips, what other software reads, deviant and hostile files."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import x3pio
from helpers import assert_identical, height_maps, writable_metadata_dicts
from hypothesis import given, settings

import tmd_nb
from tmd_nb import FormatError, export_to_x3p, load_x3p
from tmd_nb.formats import registry, x3p

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
    back = load_x3p(export_to_x3p({"height_map": hm}, tmp_path / "a.x3p"))
    assert_identical({"height_map": hm}, back)


@FAST
@given(meta=writable_metadata_dicts)
def test_every_metadata_key_comes_back_typed(tmp_path, meta):
    data = {"height_map": surface((3, 4)), **meta}
    assert_identical(data, load_x3p(export_to_x3p(data, tmp_path / "m.x3p")))


def test_tmd_scans_round_trip_and_read_in_metres_in_x3pio(tmp_path, tmd_samples):
    for path in sorted(tmd_samples.glob("*.tmd")):
        scan = tmd_nb.load(path)
        out = export_to_x3p(scan, tmp_path / (path.stem + ".x3p"))
        assert_identical(scan, load_x3p(out))
        file = x3pio.read(out, verify=True)
        rows, cols = scan["height_map"].shape
        assert file.header.x.increment == pytest.approx(scan["x_length"] / cols * 1e-3, rel=1e-15)
        assert file.header.y.increment == pytest.approx(scan["y_length"] / rows * 1e-3, rel=1e-15)
        np.testing.assert_allclose(file.layers[0].z, scan["height_map"].astype(np.float64) * 1e-3, rtol=1e-15)
        assert file.metadata.comment == scan["comment"].replace("\r\n", "\n")


def test_units_and_offsets_are_converted_by_the_exact_factor(tmp_path):
    data = {
        "height_map": surface((4, 5), np.float64),
        "x_length": 50.0,
        "y_length": 40.0,
        "x_offset": 3.0,
        "y_offset": -2.0,
        "lateral_unit": "um",
        "height_unit": "nm",
    }
    file = x3pio.read(export_to_x3p(data, tmp_path / "u.x3p"))
    assert file.header.x.increment == pytest.approx(10e-6, rel=1e-15)
    assert file.header.y.increment == pytest.approx(10e-6, rel=1e-15)
    np.testing.assert_allclose(file.placement.offset, [3e-6, -2e-6, 0.0], rtol=1e-15)
    np.testing.assert_allclose(file.layers[0].z, data["height_map"] * 1e-9, rtol=1e-15)


def test_nan_and_inf_are_invalid_points_and_come_back(tmp_path):
    hm = surface((6, 7))
    hm[1, 2], hm[3, 4] = np.nan, np.inf
    out = export_to_x3p({"height_map": hm}, tmp_path / "n.x3p")
    z = x3pio.read(out).layers[0].z
    assert np.isnan(z[1, 2]) and np.isnan(z[3, 4]) and np.isfinite(z).sum() == hm.size - 2
    assert_identical({"height_map": hm}, load_x3p(out))


def test_each_dtype_is_written_in_the_x3p_data_type_that_holds_it(tmp_path):
    for dtype, letter in [(np.int16, "I"), (np.uint8, "I"), (np.int32, "L"), (np.uint16, "L"), (np.float32, "F")]:
        hm = (np.arange(12).reshape(3, 4) * 3).astype(dtype)
        out = export_to_x3p({"height_map": hm}, tmp_path / f"{np.dtype(dtype).name}.x3p")
        file = x3pio.read(out)
        assert file.header.z.data_type.value == letter
        np.testing.assert_allclose(file.layers[0].z, hm.astype(np.float64) * 1e-3, rtol=1e-12)
        assert_identical({"height_map": hm}, load_x3p(out))


def test_record2_fields_are_filled_from_the_metadata(tmp_path):
    when = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    data = {
        "height_map": surface(),
        "date": when,
        "creator": "Lab 3",
        "instrument": {"manufacturer": "ACME", "model": "P1", "serial": "42", "version": "1.0"},
        "probing_system": {"type": "NonContacting", "identification": "50x objective"},
        "comment": "first pass",
    }
    file = x3pio.read(export_to_x3p(data, tmp_path / "r.x3p"), verify=True)
    md = file.metadata
    assert md.date == when and md.creator == "Lab 3" and md.comment == "first pass"
    assert (md.instrument.manufacturer, md.instrument.model, md.instrument.serial) == ("ACME", "P1", "42")
    assert md.probing_system.type is x3pio.ProbingType.NON_CONTACTING
    assert md.probing_system.identification == "50x objective"


def test_files_x3pio_writes_load_in_metres_with_typed_record2(tmp_path):
    heights = surface((5, 6), np.float64) * 1e-6
    md = x3pio.Metadata(
        date=dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        creator="someone",
        instrument=x3pio.Instrument("Maker", "M", "S1", "2"),
        probing_system=x3pio.ProbingSystem(x3pio.ProbingType.CONTACTING, "stylus"),
        comment="hello",
    )
    x3pio.write(tmp_path / "w.x3p", heights, x_scale=2e-6, y_scale=3e-6, metadata=md)
    back = load_x3p(tmp_path / "w.x3p")
    np.testing.assert_array_equal(back["height_map"], heights)
    assert back["x_length"] == pytest.approx(12e-6) and back["y_length"] == pytest.approx(15e-6)
    assert (back["lateral_unit"], back["height_unit"]) == ("m", "m")
    assert back["date"] == md.date and type(back["date"]) is dt.datetime
    assert back["instrument"] == {"manufacturer": "Maker", "model": "M", "serial": "S1", "version": "2"}
    assert back["probing_system"] == {"type": "Contacting", "identification": "stylus"}
    assert back["creator"] == "someone" and back["comment"] == "hello"


@pytest.mark.parametrize("letter, dtype", [("D", "<f8"), ("F", "<f4"), ("L", "<i4"), ("I", "<i2")])
def test_each_data_type_loads_with_increment_and_offset_applied(tmp_path, letter, dtype):
    heights = np.round(surface((4, 5), np.float64) * 1000) * 1e-6
    x3pio.write(
        tmp_path / "t.x3p",
        heights,
        x_scale=1e-6,
        y_scale=1e-6,
        z_type=x3pio.DataType(letter),
        z_scale=1e-6,
        placement=x3pio.Placement.translation(1e-3, 2e-3, 5e-6),
        coordinate_system=x3pio.CoordinateSystem.VIEW,
    )
    back = load_x3p(tmp_path / "t.x3p")
    np.testing.assert_allclose(back["height_map"], heights + 5e-6, rtol=1e-6, atol=1e-12)
    assert (back["x_offset"], back["y_offset"]) == pytest.approx((1e-3, 2e-3))


def test_the_shared_samples_load(x3p_samples):
    pyramid = load_x3p(x3p_samples["pyramid"])
    assert pyramid["height_map"].shape == (5, 5) and pyramid["height_map"].dtype == np.float64
    assert pyramid["creator"] == "Creator Name" and pyramid["comment"] == "comment"
    assert pyramid["date"] == dt.datetime(2013, 12, 26, 16, 6).astimezone()
    testing = load_x3p(x3p_samples["testing"])
    assert testing["height_map"].shape == (20, 30)
    assert testing["lateral_unit"] == "m"
    assert registry.recognise(x3p_samples["testing"]) is x3p.FORMAT


def test_load_and_save_pick_x3p(tmp_path):
    data = {"height_map": surface(), "note": "n"}
    path = tmd_nb.save(data, tmp_path / "s.X3P")
    assert registry.recognise(path) is x3p.FORMAT
    assert_identical(data, tmd_nb.load(path))


def test_a_file_edited_by_other_software_loads_its_own_heights_with_a_warning(tmp_path):
    data = {"height_map": surface(), "x_length": 3.0, "y_length": 2.0, "operator": "me"}
    out = export_to_x3p(data, tmp_path / "e.x3p")
    file = x3pio.read(out)
    file.layers[0].z[0, 0] += 1e-6  # levelled, say, by other software that keeps vendor files
    file.save(out)
    with pytest.warns(UserWarning, match=r"e\.x3p'.*heights changed after tmd_nb wrote it"):
        back = load_x3p(out)
    assert back["operator"] == "me" and back["lateral_unit"] == "m"
    assert back["height_map"][0, 0] == pytest.approx(data["height_map"][0, 0] * 1e-3 + 1e-6)
    assert back["x_length"] == pytest.approx(3e-3)


# --------------------------------------------------------------------------- deviant files


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return path


def test_a_sub_folder_with_junk_members_loads(tmp_path, x3p_samples):
    members = {f"pyramid/{k}": v for k, v in members_of(x3p_samples["pyramid"]).items()}
    members["__MACOSX/pyramid/._main.xml"] = b"\0\5\26\7junk"
    members["pyramid/.DS_Store"] = b"junk"
    path = write_zip(tmp_path / "nested.x3p", members)
    assert registry.recognise(path) is x3p.FORMAT
    np.testing.assert_array_equal(load_x3p(path)["height_map"], load_x3p(x3p_samples["pyramid"])["height_map"])


def old_layout(xml: bytes) -> bytes:
    xml = re.sub(rb"<p:ISO5436_2[^>]*>", b"<ISO5436>", xml)
    xml = xml.replace(b"</p:ISO5436_2>", b"</ISO5436>")
    return re.sub(rb"<Revision>.*?</Revision>", b"<Revision>ISO5436 - 2000</Revision>", xml)


def test_the_iso_5436_2000_layout_loads_with_a_warning(tmp_path, x3p_samples):
    members = members_of(x3p_samples["testing"])
    members["main.xml"] = old_layout(members["main.xml"])
    members["md5checksum.hex"] = hashlib.md5(members["main.xml"]).hexdigest().encode() + b" *main.xml\n"
    path = write_zip(tmp_path / "old.x3p", members)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        back = load_x3p(path)
    assert [str(w.message) for w in caught] == [
        f"{str(path)!r} uses the ISO 5436-2000 root element <ISO5436>; read as ISO 25178-72"
    ]
    np.testing.assert_array_equal(back["height_map"], load_x3p(x3p_samples["testing"])["height_map"])


def test_a_checksum_that_does_not_match_loads_with_a_warning_naming_the_file(tmp_path, x3p_samples):
    members = members_of(x3p_samples["pyramid"])
    members["main.xml"] = members["main.xml"].replace(b"<Comment>comment</Comment>", b"<Comment>edited</Comment>")
    path = write_zip(tmp_path / "edited.x3p", members)
    with pytest.warns(UserWarning, match=r"^'.*edited\.x3p': The MD5 checksum of main\.xml does not match"):
        back = load_x3p(path)
    assert back["comment"] == "edited"


def test_unknown_elements_and_a_mask_png_are_ignored(tmp_path, x3p_samples):
    members = members_of(x3p_samples["testing"])
    mask = b"<Mask><Background>#cd7f32</Background><Annotations><Annotation color='#ff0000'>bad</Annotation>"
    mask += b"</Annotations></Mask>"
    members["main.xml"] = members["main.xml"].replace(b"</Record3>", mask + b"</Record3>")
    members["md5checksum.hex"] = hashlib.md5(members["main.xml"]).hexdigest().encode() + b" *main.xml\n"
    members["bindata/mask.png"] = b"\x89PNG\r\n\x1a\n not really"
    path = write_zip(tmp_path / "mask.x3p", members)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_x3p(path)
    np.testing.assert_array_equal(back["height_map"], load_x3p(x3p_samples["testing"])["height_map"])


# --------------------------------------------------------------------------- hostile files


def test_a_member_claiming_more_than_deflate_can_expand_is_refused(tmp_path, x3p_samples):
    raw = bytearray(x3p_samples["testing"].read_bytes())
    cd = raw.find(b"PK\x01\x02")
    while cd >= 0:  # every central directory entry claims 4 GiB - 1 uncompressed
        raw[cd + 24 : cd + 28] = struct.pack("<I", 0xFFFFFFFE)
        cd = raw.find(b"PK\x01\x02", cd + 4)
    path = tmp_path / "bomb.x3p"
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"^'.*bomb\.x3p' member '.*' claims 4294967294 bytes from \d+ stored bytes$"):
        load_x3p(path)


def test_sizes_beyond_the_limits_are_refused_before_decompressing(tmp_path, monkeypatch):
    path = export_to_x3p(surface((64, 64)), tmp_path / "big.x3p")
    monkeypatch.setattr(x3p, "MAX_MEMBER_SIZE", 1000)
    with pytest.raises(FormatError, match=r"claims \d+ bytes, more than the 1000 allowed"):
        load_x3p(path)


def test_xml_entity_expansion_is_refused(tmp_path, x3p_samples):
    members = members_of(x3p_samples["pyramid"])
    laughs = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    members["main.xml"] = laughs + members["main.xml"].split(b"?>", 1)[1].replace(b"comment", b"&b;")
    path = write_zip(tmp_path / "laughs.x3p", members)
    with pytest.raises(FormatError, match=r"^'.*laughs\.x3p' is not a readable X3P file: main\.xml is not valid XML"):
        load_x3p(path)


def test_truncated_and_damaged_files_raise_format_error_naming_the_file(tmp_path):
    good = Path(export_to_x3p({"height_map": surface(), "k": [1, 2]}, tmp_path / "good.x3p")).read_bytes()
    rng = np.random.default_rng(7)
    cuts = sorted({int(c) for c in rng.integers(1, len(good) - 1, 25)})
    for cut in cuts:
        path = tmp_path / f"cut{cut}.x3p"
        path.write_bytes(good[:cut])
        with pytest.raises(FormatError, match=rf"^'.*cut{cut}\.x3p'"):
            load_x3p(path)
    for i in range(25):
        damaged = bytearray(good)
        pos = int(rng.integers(0, len(good)))
        damaged[pos] ^= 0xFF
        path = tmp_path / f"flip{i}.x3p"
        path.write_bytes(bytes(damaged))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a flipped byte in a checksum is only a warning
            try:
                load_x3p(path)
            except FormatError as exc:
                assert str(exc).startswith(f"'{path}'")


def test_a_zip_without_main_xml_is_not_x3p(tmp_path):
    path = write_zip(tmp_path / "other.x3p", {"readme.txt": b"hi"})
    with pytest.raises(FormatError, match=r"^'.*other\.x3p' is not an X3P file: its zip archive holds no main\.xml$"):
        load_x3p(path)
    assert registry.recognise(write_zip(tmp_path / "z.npz", {"a.npy": io.BytesIO().getvalue()})).name == "npz"


def test_a_unit_that_is_not_a_length_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"^height_unit 'V' is not a length unit"):
        export_to_x3p({"height_map": surface(), "height_unit": "V"}, tmp_path / "v.x3p")
    assert list(tmp_path.iterdir()) == []


def test_huge_declared_dimensions_are_refused_before_allocating(tmp_path, x3p_samples):
    members = members_of(x3p_samples["testing"])
    members["main.xml"] = re.sub(rb"<SizeX>\d+</SizeX>", b"<SizeX>1000000000</SizeX>", members["main.xml"])
    members["main.xml"] = re.sub(rb"<SizeY>\d+</SizeY>", b"<SizeY>1000000000</SizeY>", members["main.xml"])
    members["md5checksum.hex"] = hashlib.md5(members["main.xml"]).hexdigest().encode() + b" *main.xml\n"
    path = write_zip(tmp_path / "huge.x3p", members)
    with pytest.raises(
        FormatError, match=r"^'.*huge\.x3p' is not a readable X3P file: The data file .* holds 4800 bytes"
    ):
        load_x3p(path)


def test_profiles_load_as_one_row_and_point_clouds_are_refused(tmp_path):
    x3pio.write(tmp_path / "p.x3p", np.linspace(0, 1e-6, 7), x_scale=1e-6)
    profile = load_x3p(tmp_path / "p.x3p")
    assert profile["height_map"].shape == (1, 7) and profile["x_length"] == pytest.approx(7e-6)
    x3pio.write_points(tmp_path / "c.x3p", np.array([[0.0, 0.0, 1.0], [1.0, 2.0, 3.0]]))
    with pytest.raises(FormatError, match=r"^'.*c\.x3p' holds a point cloud, not a height map on a grid$"):
        load_x3p(tmp_path / "c.x3p")


def test_only_the_first_layer_of_a_multilayer_file_loads_with_a_warning(tmp_path):
    layers = [np.zeros((2, 3)), np.ones((2, 3))]
    x3pio.Surface.from_layers(layers, x_scale=1e-6, y_scale=1e-6).save(tmp_path / "l.x3p")
    with pytest.warns(UserWarning, match=r"l\.x3p' holds 2 layers; only the first is loaded"):
        back = load_x3p(tmp_path / "l.x3p")
    np.testing.assert_array_equal(back["height_map"], layers[0])


@pytest.mark.parametrize(
    "date",
    [
        dt.datetime(1, 1, 1),
        dt.datetime(9999, 12, 31, 23, 59),
        dt.datetime(2020, 1, 1, tzinfo=dt.timezone(dt.timedelta(seconds=30))),
        dt.datetime(1, 1, 1, tzinfo=dt.UTC),
    ],
)
def test_dates_record2_cannot_hold_still_round_trip(tmp_path, date):
    data = {"height_map": surface(), "date": date}
    out = export_to_x3p(data, tmp_path / "d.x3p")
    assert x3pio.read(out, verify=True).metadata.date is not None
    assert_identical(data, load_x3p(out))
