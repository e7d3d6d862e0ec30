"""Physical truth in every format: one unit convention, missing points, masks, and edits by other software.

Each file is read back with the field's own reader (x3pio, gwyfile, numpy + json, the ``.tmd``
layout parsed by hand) as well as with tmd_nb, and sizes and heights are compared in metres.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import subprocess
import warnings
import zipfile
from fractions import Fraction
from pathlib import Path

import gwyfile
import numpy as np
import pytest
import x3pio
from conftest import require
from gwyfile.objects import GwyContainer, GwyDataField
from hypothesis import given
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import FormatError, MetadataNotStoredWarning
from tmd_nb.formats import tmd
from tmd_nb.storage import embedded, units

V6 = b"Binary TrueMap Data File v2.0\r\n\0Created by TrueMap v6\r\n\0"
FILL_BITS = 0xD01502F9  # float32(-1e10), TrueMap's no-data height
# The README's quick start: heights and lengths in micrometres, said once with "units".
README_SCAN = {
    "height_map": np.full((4, 8), 1.0, dtype=np.float32),
    "units": "um",
    "x_length": 640.0,
    "y_length": 320.0,
}


def truemap_file(heights: np.ndarray, lengths=(0.64, 0.63), offsets=(0.0, 0.0)) -> bytes:
    """A TrueMap v6 file assembled by hand (the layout of the module docstring), heights as given."""
    rows, cols = heights.shape
    data = np.ascontiguousarray(heights, dtype="<f4").tobytes()
    return V6 + struct.pack("<IIffff", cols, rows, *lengths, *offsets) + data


def parse_tmd(content: bytes) -> tuple[tuple[float, ...], np.ndarray]:
    """``((x_length, y_length, x_offset, y_offset) in mm, float32 heights as stored)``, parsed by hand."""
    end = content.index(b"\0", content.index(b"\0") + 1)
    cols, rows, *fields = struct.unpack_from("<IIffff", content, end + 1)
    return tuple(fields), np.frombuffer(content, "<f4", offset=end + 25).reshape(rows, cols)


def filled_scan(seed: int = 0, shape=(642, 648), share=0.29) -> np.ndarray:
    """A TrueMap-like scan: a tilted surface in mm, with a share of the points the fill height."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    heights = (0.3 + 1e-5 * x - 2e-5 * y + 1e-4 * rng.standard_normal(shape)).astype(np.float32)
    rim = np.hypot(x - shape[1] / 2, y - shape[0] / 2) > 0.4775 * min(shape)  # outside a disc: no data
    heights[rim] = np.float32(-1e10)
    return heights


# --------------------------------------------------------------------------- 1. the "units" key


def test_units_is_shorthand_for_both_and_the_specific_keys_win() -> None:
    phys = units.physical({"units": "um"})
    assert (phys.lateral_unit, phys.height_unit, phys.lateral_key, phys.height_key) == ("um", "um", "units", "units")
    phys = units.physical({"units": "um", "height_unit": "nm"})
    assert (phys.lateral_unit, phys.height_unit, phys.height_key) == ("um", "nm", "height_unit")
    assert units.physical({"units": 3}).lateral_unit == "mm"  # not a string: absent, the TrueMap default
    assert units.factors({"units": "nm"}) == (1e-9, 1e-9)


@pytest.mark.parametrize("key", ["units", "lateral_unit", "height_unit"])
def test_an_unknown_unit_names_its_key_and_the_known_units(key: str) -> None:
    with pytest.raises(ValueError, match=rf"^{key} 'furlong' is not a length unit tmd_nb knows; use one of 'km', 'm'"):
        units.factors({key: "furlong"})


@pytest.mark.parametrize("ext", [".tmd", ".x3p", ".gwy"])
def test_export_refuses_an_unknown_unit_before_writing(tmp_path: Path, ext: str) -> None:
    target = tmp_path / f"scan{ext}"
    with pytest.raises(ValueError, match=r"units 'umm' is not"):
        tmd_nb.save({**README_SCAN, "units": "umm"}, target)
    assert not target.exists()


def test_gwy_refuses_a_prefixed_unit_it_would_misread(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"height_unit 'mV' is not a unit tmd_nb can write to Gwyddion"):
        tmd_nb.save({**README_SCAN, "height_unit": "mV"}, tmp_path / "v.gwy")


def test_the_readme_scan_reaches_x3p_and_gwyddion_in_metres(tmp_path: Path) -> None:
    # Before: "units" was ignored, and a 1 um height became 0.001 m.
    file = x3pio.read(tmd_nb.save(README_SCAN, tmp_path / "r.x3p"))
    np.testing.assert_allclose(file.layers[0].z, 1e-6, rtol=1e-7)
    assert file.header.x.increment * 8 == pytest.approx(640e-6, rel=1e-15)
    field = gwyfile.load(tmd_nb.save(README_SCAN, tmp_path / "r.gwy"))["/0/data"]
    np.testing.assert_allclose(field.data, 1e-6, rtol=1e-7)
    assert field["xreal"] == pytest.approx(640e-6, rel=1e-15)


# --------------------------------------------------------------------------- 2. .tmd holds millimetres


def test_export_to_tmd_converts_into_millimetres(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unit key is honoured by converting: nothing "not saved"
        out = tmd_nb.export_to_tmd({**README_SCAN, "x_offset": 10.0}, tmp_path / "r.tmd")
    fields, heights = parse_tmd(Path(out).read_bytes())
    assert fields == tuple(float(np.float32(v)) for v in (0.64, 0.32, 0.01, 0.0))
    assert (heights == np.float32(0.001)).all()
    back = tmd_nb.load(out)
    assert (back["lateral_unit"], back["height_unit"], back["x_length"]) == ("mm", "mm", float(np.float32(0.64)))


def test_save_and_convert_to_tmd_convert_too(tmp_path: Path) -> None:
    fields, heights = parse_tmd(Path(tmd_nb.save(README_SCAN, tmp_path / "s.tmd")).read_bytes())
    assert fields[0] == float(np.float32(0.64)) and (heights == np.float32(0.001)).all()
    source = tmd_nb.save(README_SCAN, tmp_path / "scan.npz")
    report = tmd_nb.convert(source, tmp_path / "out", format="tmd", jobs=1, progress=False)
    assert report.ok
    assert parse_tmd((tmp_path / "out" / "scan.tmd").read_bytes())[0] == fields


def test_an_x3p_from_other_software_becomes_a_tmd_in_millimetres(tmp_path: Path) -> None:
    z = np.linspace(1e-6, 2e-6, 12).reshape(3, 4)  # metres, as every X3P holds them
    x3pio.Surface.from_array(z, x_scale=1e-6, y_scale=1e-6).save(tmp_path / "foreign.x3p")
    out = tmd_nb.save(tmd_nb.load(tmp_path / "foreign.x3p"), tmp_path / "f.tmd")
    fields, heights = parse_tmd(Path(out).read_bytes())
    assert fields[:2] == (float(np.float32(0.004)), float(np.float32(0.003)))
    np.testing.assert_array_equal(heights, (z * 1000).astype(np.float32))


def test_the_warning_names_only_keys_that_are_lost(tmp_path: Path) -> None:
    with pytest.warns(MetadataNotStoredWarning) as caught:
        tmd_nb.export_to_tmd({**README_SCAN, "lateral_unit": "nm", "operator": "me"}, tmp_path / "w.tmd")
    message = str(caught[0].message)
    assert "'operator'" in message and "unit" not in message.split("not saved")[1]


# --------------------------------------------------------------------------- 4. TrueMap's fill height


def test_a_scan_with_fill_points_loads_them_as_nan_and_writes_them_back_bit_for_bit(tmp_path: Path) -> None:
    heights = filled_scan()
    share = (heights.view("<u4") == FILL_BITS).mean()
    assert 0.2 < share < 0.4  # as in the real 648 x 642 TrueMap v6 scan (29 %)
    original = truemap_file(heights)
    (tmp_path / "scan.tmd").write_bytes(original)
    scan = tmd_nb.load(tmp_path / "scan.tmd")
    assert np.isnan(scan["height_map"]).mean() == share
    assert np.nanmin(scan["height_map"]) > 0.2  # no -1e10 floor: the surface itself
    assert Path(tmd_nb.export_to_tmd(scan, tmp_path / "again.tmd")).read_bytes() == original
    assert Path(tmd_nb.save(scan, tmp_path / "again2.tmd")).read_bytes() == original
    # memory-mapped, the heights are the file's own, and missing() finds the fill
    assert (
        tmd.missing(tmd.load_tmd(tmp_path / "scan.tmd", mmap=True)["height_map"]) == np.isnan(scan["height_map"])
    ).all()


def test_fill_points_reach_x3p_and_gwyddion_as_their_missing_points(tmp_path: Path) -> None:
    (tmp_path / "scan.tmd").write_bytes(truemap_file(filled_scan(1, (60, 64))))
    scan = tmd_nb.load(tmp_path / "scan.tmd")
    gone = np.isnan(scan["height_map"])
    z = x3pio.read(tmd_nb.save(scan, tmp_path / "s.x3p")).layers[0].z
    assert (np.isnan(z) == gone).all()  # X3P invalid points, not 10 km pits
    container = gwyfile.load(tmd_nb.save(scan, tmp_path / "s.gwy"))
    data, mask = container["/0/data"].data, container["/0/mask"].data > 0.5
    assert (mask == gone).all()
    lo, hi = (float(f(scan["height_map"])) * 1e-3 for f in (np.nanmin, np.nanmax))
    assert lo <= data.min() and data.max() <= hi  # filled within the range, never -1e7 m or 0
    assert np.isnan(tmd_nb.load(tmp_path / "s.gwy")["height_map"][gone]).all()


def test_convert_turns_fill_points_into_each_formats_missing_points(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    heights = filled_scan(2, (40, 50))
    (tmp_path / "in" / "scan.tmd").write_bytes(truemap_file(heights))
    gone = heights.view("<u4") == FILL_BITS
    for fmt in ("npz", "x3p", "gwy", "tmd"):
        assert tmd_nb.convert(tmp_path / "in", tmp_path / fmt, format=fmt, jobs=1, progress=False).ok
    with np.load(tmp_path / "npz" / "scan.npz") as archive:
        assert (np.isnan(archive["height_map"]) == gone).all()
    assert (np.isnan(x3pio.read(tmp_path / "x3p" / "scan.x3p").layers[0].z) == gone).all()
    assert ((gwyfile.load(str(tmp_path / "gwy" / "scan.gwy"))["/0/mask"].data > 0.5) == gone).all()
    assert (tmp_path / "tmd" / "scan.tmd").read_bytes() == truemap_file(heights)


@pytest.mark.parametrize("fill", [-1e10, -1.0000001e10, -1e11, -np.inf])
def test_only_the_exact_fill_value_counts_as_missing(tmp_path: Path, fill: float) -> None:
    heights = np.zeros((2, 2), dtype=np.float32)
    heights[0, 0] = fill
    (tmp_path / "f.tmd").write_bytes(truemap_file(heights))
    back = tmd_nb.load(tmp_path / "f.tmd")["height_map"]
    assert np.isnan(back[0, 0]) == (np.float32(fill).view("<u4") == FILL_BITS)


def test_every_real_scan_round_trips_through_load_and_export(tmd_samples: Path, tmp_path: Path) -> None:
    for path in sorted(tmd_samples.glob("*.tmd")):
        scan = tmd_nb.load(path)
        _, stored = parse_tmd(Path(tmd_nb.export_to_tmd(scan, tmp_path / "x.tmd")).read_bytes())
        _, original = parse_tmd(path.read_bytes()) if scan["tmd_version"] == 2 else (None, scan["height_map"])
        assert stored.tobytes() == np.asarray(original, "<f4").tobytes(), path.name


# --------------------------------------------------------------------------- 5. a mask selects


def foreign_gwy(path: Path, data: np.ndarray, mask: np.ndarray | None) -> Path:
    shape = data.shape
    entries = {
        "/0/data": GwyDataField(data, xreal=shape[1] * 1e-6, yreal=shape[0] * 1e-6, si_unit_xy="m", si_unit_z="m")
    }
    if mask is not None:
        entries["/0/mask"] = GwyDataField(mask.astype(np.float64), xreal=shape[1] * 1e-6, yreal=shape[0] * 1e-6)
    GwyContainer(entries).tofile(str(path))
    return path


def test_a_foreign_mask_selects_and_never_erases(tmp_path: Path) -> None:
    data = np.arange(12, dtype=np.float64).reshape(3, 4) * 1e-9
    grains = data > 5e-9
    back = tmd_nb.load(foreign_gwy(tmp_path / "g.gwy", data, grains))
    np.testing.assert_array_equal(back["height_map"], data)  # the grains are measured heights
    assert back["mask"].dtype == np.bool_ and (back["mask"] == grains).all()
    assert "mask" not in tmd_nb.load(foreign_gwy(tmp_path / "n.gwy", data, None))


def test_a_mask_in_the_data_is_the_channels_mask_and_comes_back(tmp_path: Path) -> None:
    hm = np.linspace(0.29, 0.31, 48).reshape(6, 8)
    mask = np.zeros(hm.shape, dtype=bool)
    mask[1:3, 2:5] = True
    hm[5, 7] = np.nan
    out = tmd_nb.save({"height_map": hm, "mask": mask}, tmp_path / "m.gwy")
    container = gwyfile.load(out)
    # Gwyddion has one mask per channel: the user's selection and the missing point, together
    expected = mask.copy()
    expected[5, 7] = True
    assert ((container["/0/mask"].data > 0.5) == expected).all()
    assert 0.29e-3 <= container["/0/data"].data[5, 7] <= 0.31e-3
    back = tmd_nb.load(out)  # the record keeps the two apart
    assert (back["mask"] == mask).all() and back["mask"].dtype == np.bool_
    assert np.isnan(back["height_map"][5, 7]) and np.isnan(back["height_map"]).sum() == 1
    np.testing.assert_array_equal(back["height_map"], hm)


# --------------------------------------------------------------------------- 3. edits by other software


def gwy_edit(path: str, **changes: float) -> None:
    container = gwyfile.load(path)
    for key, value in changes.items():
        container["/0/data"][key] = value
    container.tofile(path)


@pytest.mark.parametrize("change", [{"xreal": 8e-6}, {"xoff": 1e-6}, {"yreal": 6e-6, "yoff": -2e-6}])
def test_a_gwyddion_rescale_or_offset_is_noticed(tmp_path: Path, change: dict) -> None:
    scan = {"height_map": np.ones((3, 4), np.float32), "units": "um", "x_length": 4.0, "y_length": 3.0, "k": 1}
    out = tmd_nb.save(scan, tmp_path / "e.gwy")
    gwy_edit(out, **change)
    with pytest.warns(UserWarning, match=r"e\.gwy'.*data changed after tmd_nb wrote it"):
        back = tmd_nb.load(out)
    field = gwyfile.load(out)["/0/data"]
    assert (back["x_length"], back["y_length"]) == (field["xreal"], field["yreal"])
    assert (back["x_offset"], back["y_offset"]) == (field.get("xoff", 0.0), field.get("yoff", 0.0))
    assert (back["lateral_unit"], back["k"]) == ("m", 1) and "units" not in back


def test_a_gwyddion_mask_edit_is_noticed(tmp_path: Path) -> None:
    out = tmd_nb.save({"height_map": np.ones((3, 4))}, tmp_path / "m.gwy")
    container = gwyfile.load(out)
    container["/0/mask"] = GwyDataField(np.eye(3, 4), xreal=4e-3, yreal=3e-3)
    container.tofile(out)
    with pytest.warns(UserWarning, match=r"mask, lengths, offsets or units"):
        back = tmd_nb.load(out)
    assert (back["mask"] == (np.eye(3, 4) > 0)).all()


def test_a_file_gwyddion_itself_rewrote_still_loads_exactly(tmp_path: Path) -> None:
    require(shutil.which("gwyddion") is not None, "Gwyddion is not installed (apt-get install gwyddion)")
    hm = np.linspace(0.29, 0.31, 48, dtype=np.float32).reshape(6, 8)
    hm[2, 3] = np.nan
    scan = {"height_map": hm, "units": "um", "x_length": 4.0, "y_length": 3.0, "x_offset": 1.5}
    tmd_nb.save(scan, tmp_path / "a.gwy")
    subprocess.run(
        ["gwyddion", f"--convert-to-gwy={tmp_path / 'b.gwy'}", str(tmp_path / "a.gwy")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    field = gwyfile.load(str(tmp_path / "b.gwy"))["/0/data"]  # what Gwyddion read: metres
    assert (field["xreal"], field["xoff"]) == (pytest.approx(4e-6), pytest.approx(1.5e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = tmd_nb.load(tmp_path / "b.gwy")
    np.testing.assert_array_equal(back["height_map"], hm)
    assert back["units"] == "um" and back["x_offset"] == 1.5


def rewrite_main_xml(path: str, edit) -> None:
    """Rewrite an X3P's main.xml as a tool that does not know tmd_nb would: checksum updated, extensions kept."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    xml = edit(members["main.xml"].decode("utf-8"))
    members["main.xml"] = xml.encode("utf-8")
    members["md5checksum.hex"] = f"{hashlib.md5(members['main.xml']).hexdigest()} *main.xml\n".encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            zf.writestr(name, content)


def nth_tag(xml: str, tag: str, n: int, value: str) -> str:
    found = list(re.finditer(rf"<{tag}>([^<]*)</{tag}>", xml))
    m = found[n]
    return xml[: m.start(1)] + value + xml[m.end(1) :]


@pytest.mark.parametrize(
    "edit, key, expected",
    [
        (lambda xml: nth_tag(xml, "Increment", 0, "2e-06"), "x_length", 8e-6),  # CX increment
        (lambda xml: nth_tag(xml, "Offset", 0, "5e-06"), "x_offset", 5e-6),
        (lambda xml: nth_tag(xml, "Offset", 2, "1e-06"), "z", 1e-6 + 1e-6),  # CZ offset: heights move
    ],
)
def test_an_x3p_edit_of_increments_or_offsets_is_noticed(tmp_path: Path, edit, key: str, expected: float) -> None:
    scan = {"height_map": np.ones((3, 4), np.float32), "units": "um", "x_length": 4.0, "y_length": 3.0}
    out = tmd_nb.save(scan, tmp_path / "e.x3p")
    rewrite_main_xml(out, edit)
    with pytest.warns(UserWarning, match=r"e\.x3p'.*heights changed after tmd_nb wrote it, or its increments"):
        back = tmd_nb.load(out)
    file = x3pio.read(out)
    if key == "z":
        np.testing.assert_allclose(back["height_map"], file.layers[0].z + file.placement.offset[2])
        np.testing.assert_allclose(back["height_map"], expected)
    else:
        assert back[key] == pytest.approx(expected) and back["lateral_unit"] == "m"


# --------------------------------------------------------------------------- the record itself


def x3p_record(path: str) -> dict[str, bytes]:
    file = x3pio.read(path)
    return {
        uri.rsplit("/", 1)[1]: file.extensions[uri]
        for uri in file.extensions
        if uri.startswith(tmd_nb.formats.x3p.VENDOR)
    }


def replace_x3p_member(path: str, name: str, content: bytes) -> None:
    file = x3pio.read(path)
    file.extensions[f"{tmd_nb.formats.x3p.VENDOR}/{name}"] = content
    file.save(path)


def test_a_changed_byte_in_the_exact_height_copy_is_an_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hm = rng.standard_normal((8, 9)) + 1j * rng.standard_normal((8, 9))  # X3P holds the real part only
    out = tmd_nb.save({"height_map": hm}, tmp_path / "c.x3p")
    copy = bytearray(x3p_record(out)["height_map.npy"])  # complex: stored exactly beside the real part
    copy[-1] ^= 0x01
    replace_x3p_member(out, "height_map.npy", bytes(copy))
    with pytest.raises(FormatError, match=r"c\.x3p'.*member 'height_map' is damaged"):
        tmd_nb.load(out)


def test_a_record_with_a_height_map_key_or_not_utf8_is_an_error(tmp_path: Path) -> None:
    out = tmd_nb.save({"height_map": np.ones((2, 3), np.float32)}, tmp_path / "r.x3p")
    record = json.loads(x3p_record(out)["record.json"])
    record["metadata"]["height_map"] = [1, 2]
    replace_x3p_member(out, "record.json", json.dumps(record).encode())
    with pytest.raises(FormatError, match=r"r\.x3p'.*'height_map' key"):
        tmd_nb.load(out)
    replace_x3p_member(out, "record.json", b'{"tmd_nb": 2, "x": "\xff"}')
    with pytest.raises(FormatError, match=r"r\.x3p': its tmd_nb record is not UTF-8 text"):
        tmd_nb.load(out)


def test_version_1_records_still_load_exactly(tmp_path: Path) -> None:
    """A file as tmd_nb wrote it before the fingerprint covered lengths: heights only, 0 under the mask."""
    hm = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    hm[1, 1] = np.nan
    out = tmd_nb.save({"height_map": hm, "x_length": 4.0, "y_length": 3.0, "k": "v"}, tmp_path / "old.gwy")
    container = gwyfile.load(out)
    mask = container["/0/mask"].data > 0.5
    data = container["/0/data"].data.copy()
    data[mask] = 0.0
    container["/0/data"]["data"] = data.reshape(-1)  # gwyfile keeps the values flat
    record = json.loads(container["/tmd_nb/record.json"])
    seen = np.where(mask, np.nan, data)
    record.update({"tmd_nb": 1, "fingerprint": embedded.fingerprint(seen)})
    record["height"].pop("missing")
    record.pop("checksums")
    record.pop("seal")  # version 1 had none
    container["/tmd_nb/record.json"] = json.dumps(record)
    del container["/tmd_nb/__missing__"]
    container.tofile(out)
    back = tmd_nb.load(out)
    np.testing.assert_array_equal(back["height_map"], hm)
    assert back["k"] == "v" and back["height_map"].dtype == np.float32


def test_version_1_x3p_records_still_load_exactly(tmp_path: Path) -> None:
    hm = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    out = tmd_nb.save({"height_map": hm, "x_length": 4.0, "y_length": 3.0, "k": "v"}, tmp_path / "old.x3p")
    record = json.loads(x3p_record(out)["record.json"])
    assert record["height"]["exact"] is None  # restored from the metres alone, as version 1 did
    seen = x3pio.read(out).layers[0].z
    record.update({"tmd_nb": 1, "fingerprint": embedded.fingerprint(seen)})
    record["height"].pop("missing")
    record.pop("checksums")
    record.pop("seal")  # version 1 had none
    replace_x3p_member(out, "record.json", json.dumps(record).encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = tmd_nb.load(out)
    assert back["height_map"].tobytes() == hm.tobytes() and back["k"] == "v" and back["x_length"] == 4.0


POWERS = {"km": 3, "m": 0, "cm": -2, "mm": -3, "um": -6, "\u00b5m": -6, "\u03bcm": -6, "nm": -9, "Å": -10, "pm": -12}


@given(
    value=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e200, max_value=1e200),
    a=st.sampled_from(sorted(POWERS)),
    b=st.sampled_from(sorted(POWERS)),
)
def test_a_conversion_is_the_correctly_rounded_value(value: float, a: str, b: str) -> None:
    assert set(POWERS) == set(units.LENGTHS)
    exact = Fraction(value) * Fraction(10) ** (POWERS[a] - POWERS[b])
    assert units.convert(value, a, b) == float(exact)  # float(Fraction) rounds correctly


# --------------------------------------------------------------------------- the property, over formats


def in_metres(meta: dict, shape: tuple[int, int]) -> tuple[float, float, float, float, float]:
    """``(x_length, y_length, x_offset, y_offset, metres per height unit)``, by the documented rule.

    Written out here from docs/FORMAT.md, not with tmd_nb.storage.units: the specific unit key,
    else ``units``, else millimetres; every length is given in this test.
    """

    def metres(key: str) -> float:
        unit = meta.get(key, meta.get("units", "mm"))
        return float(Fraction(10) ** POWERS[unit])

    lateral, height = metres("lateral_unit"), metres("height_unit")
    return (
        meta["x_length"] * lateral,
        meta["y_length"] * lateral,
        meta.get("x_offset", 0.0) * lateral,
        meta.get("y_offset", 0.0) * lateral,
        height,
    )


def read_independently(path: str, fmt: str) -> tuple[tuple[float, ...], np.ndarray]:
    """``((x_length, y_length, x_offset, y_offset) in metres, heights in metres)`` by the field's own reader."""
    if fmt == "x3p":
        file = x3pio.read(path)
        z = file.layers[0].z
        x_off, y_off, z_off = file.placement.offset
        return (file.header.x.increment * z.shape[1], file.header.y.increment * z.shape[0], x_off, y_off), z + z_off
    if fmt == "gwy":
        field = gwyfile.load(path)["/0/data"]
        container = gwyfile.load(path)
        data = field.data.copy()
        if "/0/mask" in container:
            data[container["/0/mask"].data > 0.5] = np.nan  # the filled points are no measurement
        return (field["xreal"], field["yreal"], field.get("xoff", 0.0), field.get("yoff", 0.0)), data
    if fmt == "tmd":
        fields, heights = parse_tmd(Path(path).read_bytes())
        values = np.where(heights.view("<u4") == FILL_BITS, np.nan, heights.astype(np.float64))
        return tuple(v * 1e-3 for v in fields), values * 1e-3
    with np.load(path) as archive:  # npz: numpy and json, no tmd_nb
        meta = json.loads(str(archive["metadata"]))
        hm = archive["height_map"]
    x, y, xo, yo, h = in_metres(meta, hm.shape)
    return (x, y, xo, yo), hm.astype(np.float64) * h


unit_names = st.sampled_from(["m", "mm", "um", "nm"])


@given(
    fmt=st.sampled_from(["npz", "tmd", "x3p", "gwy"]),
    style=st.sampled_from(["units", "specific", "both", "none"]),
    lateral=unit_names,
    height=unit_names,
    lengths=st.tuples(st.floats(0.5, 1e3), st.floats(0.5, 1e3)),
    offsets=st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
    seed=st.integers(0, 2**16),
    holes=st.booleans(),
)
def test_every_format_keeps_sizes_and_heights_in_metres(
    tmp_path: Path, fmt, style, lateral, height, lengths, offsets, seed, holes
) -> None:
    rng = np.random.default_rng(seed)
    hm = (rng.uniform(-500, 500, (5, 7))).astype(np.float32)
    if holes:
        hm[rng.random(hm.shape) < 0.3] = np.nan
    meta: dict = {"x_length": lengths[0], "y_length": lengths[1], "x_offset": offsets[0], "y_offset": offsets[1]}
    if style == "units":
        meta["units"] = lateral
        height = lateral
    elif style == "specific":
        meta.update(lateral_unit=lateral, height_unit=height)
    elif style == "both":  # the specific keys win over the shorthand
        meta.update(units="km", lateral_unit=lateral, height_unit=height)
    else:
        lateral = height = "mm"
    data = {"height_map": hm, **meta}
    expected = in_metres(data, hm.shape)
    expected_heights = hm.astype(np.float64) * expected[4]
    path = tmd_nb.save(data, tmp_path / f"p.{fmt}")
    # float32 in mm for .tmd; metres in float64 elsewhere
    rel, tiny = (1e-6, 1e-30) if fmt == "tmd" else (1e-12, 0.0)  # tiny: offsets float32 rounds to 0
    sizes, heights = read_independently(path, fmt)
    np.testing.assert_allclose(sizes, expected[:4], rtol=rel, atol=tiny)
    np.testing.assert_allclose(heights, expected_heights, rtol=rel, atol=tiny)
    back = tmd_nb.load(path)
    got = in_metres(back, hm.shape)
    np.testing.assert_allclose(got[:4], expected[:4], rtol=rel, atol=tiny)
    np.testing.assert_allclose(back["height_map"].astype(np.float64) * got[4], expected_heights, rtol=rel, atol=tiny)
    if fmt != "tmd":  # the record gives back exactly what was saved
        np.testing.assert_array_equal(back["height_map"], hm)
