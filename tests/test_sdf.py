"""SDF (ISO 25178-71): lossless round trips, what sdfio and Gwyddion read, the shared samples, hostile files."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import gwyfile
import numpy as np
import pytest
import sdfio
from helpers import assert_identical, height_maps, memory_probe, metadata_dicts
from hypothesis import example, given
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import FormatError, export_to_sdf, load_sdf
from tmd_nb.errors import MAX_MESSAGE
from tmd_nb.formats import registry, sdf

HERE = Path(__file__).resolve().parent
SHARED_SDF = HERE.parents[0].parent / "shared" / "data" / "sdf"
GWYDDION = shutil.which("gwyddion")
DBL_MAX = np.finfo(np.float64).max


def surface(shape=(20, 30), dtype=np.float64) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (np.sin(x / 5.0) * np.cos(y / 7.0)).astype(dtype)


def samples() -> dict[str, Path]:
    from conftest import require

    found = {p.stem: p for p in SHARED_SDF.glob("*.sdf")}
    require(len(found) >= 6, f"SDF samples not found at {SHARED_SDF} (they live in shared/data/sdf)")
    return found


def gwyddion_reads(path: Path, tmp_path: Path) -> object | None:
    """The ``/0/data`` field (and mask) Gwyddion 2.62 makes of ``path``, or None if it cannot open it."""
    from conftest import require

    require(GWYDDION is not None, "Gwyddion (Debian package gwyddion) is not installed")
    out = tmp_path / (path.stem + ".gwyddion.gwy")
    done = subprocess.run([GWYDDION, f"--convert-to-gwy={out}", str(path)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.exists():
        return None
    return gwyfile.load(str(out))


def format_error(path: Path, loader=load_sdf, chained: bool = False) -> str:
    with pytest.raises(FormatError) as info:
        loader(path)
    text = str(info.value)
    assert text.startswith(f"'{path}'") and len(text) <= MAX_MESSAGE and "\n" not in text, text
    if not chained:
        assert info.value.__context__ is None, "an exception chain is kept alive"
    return text


# --------------------------------------------------------------------------- round trips


@given(hm=height_maps)
def test_every_height_map_comes_back_bit_for_bit(tmp_path, hm):
    back = load_sdf(export_to_sdf({"height_map": hm}, tmp_path / "a.sdf"))
    assert_identical({"height_map": hm}, back)


@given(meta=metadata_dicts)
def test_every_metadata_key_comes_back_typed(tmp_path, meta):
    data = {"height_map": surface((3, 4)), **meta}
    assert_identical(data, load_sdf(export_to_sdf(data, tmp_path / "m.sdf")))


def test_float64_heights_in_millimetres_come_back_exactly_without_a_second_copy(tmp_path):
    # Dividing the metres sdfio sees by Zscale is one ulp off on a few percent of points: the
    # data area holds the millimetres themselves, so no exact copy is needed in the trailer.
    hm = np.random.default_rng(1).standard_normal((64, 80)) * 0.37
    assert ((hm * 1e-3) / 1e-3 != hm).any()
    out = Path(export_to_sdf({"height_map": hm}, tmp_path / "mm.sdf"))
    back = load_sdf(out)
    assert back["height_map"].tobytes() == hm.tobytes()
    assert out.stat().st_size < sdf.header_size("ISO-1.0") + hm.nbytes + 1000
    assert "TmdNbArray" not in out.read_bytes()[sdf.header_size("ISO-1.0") + hm.nbytes :].decode()


def test_save_and_load_pick_sdf_by_extension_and_content(tmp_path):
    data = {"height_map": surface().astype(np.float32), "operator": "me"}
    path = tmd_nb.save(data, tmp_path / "s.sdf")
    assert registry.recognise(path) is sdf.FORMAT
    renamed = Path(path).rename(tmp_path / "s.dat")
    assert_identical(data, tmd_nb.load(renamed))


@pytest.mark.parametrize(
    ("dtype", "code"),
    [("?", 5), ("u1", 5), ("i1", 5), ("<i2", 5), ("<u2", 6), (">i4", 6), ("<f4", 7), ("<f8", 7), ("<i8", 7)],
)
def test_integer_maps_are_stored_as_integers(tmp_path, dtype, code):
    hm = (np.arange(12).reshape(3, 4) % 2 == 0) if dtype == "?" else np.arange(12).reshape(3, 4).astype(dtype)
    out = export_to_sdf({"height_map": hm, "height_unit": "nm", "lateral_unit": "um"}, tmp_path / "i.sdf")
    file = sdfio.read(out)
    assert int(file.header.data_type) == code and file.header.z_scale == 1e-9
    np.testing.assert_array_equal(file.data, hm.astype(np.float64) * 1e-9)
    assert_identical({"height_map": hm, "height_unit": "nm", "lateral_unit": "um"}, load_sdf(out))


def test_a_value_at_the_integer_marker_moves_to_a_wider_type(tmp_path):
    for dtype, code in (("<i2", 6), ("<i4", 7)):
        hm = np.array([[np.iinfo(dtype).min, 0, 5]], dtype=dtype)
        out = export_to_sdf({"height_map": hm}, tmp_path / "m.sdf")
        file = sdfio.read(out)
        assert int(file.header.data_type) == code and not np.isnan(file.data).any()
        assert_identical({"height_map": hm}, load_sdf(out))


def test_what_sdfio_reads(tmp_path):
    hm = surface((6, 8))
    hm[2, 3] = np.nan
    hm[0, 0] = np.inf
    data = {
        "height_map": hm,
        "x_length": 16.0,
        "y_length": 3.0,
        "lateral_unit": "um",
        "height_unit": "nm",
        "date": dt.datetime(2024, 5, 6, 7, 8, tzinfo=dt.UTC),
    }
    out = export_to_sdf(data, tmp_path / "w.sdf")
    file = sdfio.read(out)
    assert (str(file.header.revision), file.header.format) == ("ISO-1.0", sdfio.FileFormat.BINARY)
    assert file.header.manufacturer_id == "tmd_nb"
    assert file.header.create_date == dt.datetime(2024, 5, 6, 7, 8, tzinfo=dt.UTC)
    assert (file.header.x_scale, file.header.y_scale, file.header.z_scale) == (2e-6, 0.5e-6, 1e-9)
    expected = hm * 1e-9
    expected[~np.isfinite(hm)] = np.nan  # NaN and infinity are missing points, not heights
    np.testing.assert_array_equal(file.data, expected)
    raw = np.frombuffer(Path(out).read_bytes(), "<f8", count=48, offset=sdf.header_size("ISO-1.0"))
    assert raw[3 * 8 + 3 - 8] == -DBL_MAX and raw[0] == -DBL_MAX  # ISO-1.0's marker for float64
    sdfio.validate_trailer_tagged(sdfio.Revision.ISO_2_0, file.trailer)  # Name = Value lines
    assert_identical(data, load_sdf(out))


def test_maps_wider_than_iso1_allows_are_written_as_iso2(tmp_path):
    profile = np.linspace(0.0, 1.0, sdf.MAX_ISO1_SIDE + 5).reshape(1, -1)
    out = export_to_sdf({"height_map": profile}, tmp_path / "long.sdf")
    file = sdfio.read(out)
    assert str(file.header.revision) == "ISO-2.0" and file.data.shape == profile.shape
    np.testing.assert_array_equal(file.data, profile * 1e-3)
    assert_identical({"height_map": profile}, load_sdf(out))


def test_offsets_and_units_come_back_through_the_record(tmp_path):
    data = {"height_map": surface((4, 5)), "x_offset": 1.5, "y_offset": -2.0, "lateral_unit": "mm"}
    assert_identical(data, load_sdf(export_to_sdf(data, tmp_path / "o.sdf")))


def test_an_empty_map_comes_back_empty(tmp_path):
    for shape in ((0, 3), (2, 0)):
        hm = np.zeros(shape, dtype=np.float32)
        assert_identical({"height_map": hm}, load_sdf(export_to_sdf({"height_map": hm}, tmp_path / "e.sdf")))


def test_a_loaded_files_trailer_fields_are_written_again_for_other_software(tmp_path):
    foreign = load_sdf(samples()["iso1_surface_binary"])
    out = export_to_sdf(foreign, tmp_path / "again.sdf")
    fields = sdfio.parse_tagged_fields(sdfio.read(out).trailer.decode())
    assert fields["OperatorName"] == "Jane Doe" and fields["PartName"] == "Synthetic bumps"
    assert_identical(foreign, load_sdf(out))


# --------------------------------------------------------------------------- files changed by other software


def test_a_file_whose_heights_changed_loads_the_files_heights_with_a_warning(tmp_path):
    out = export_to_sdf({"height_map": surface(), "operator": "me"}, tmp_path / "e.sdf")
    file = sdfio.read(out)
    file.data = file.data * 2
    file.save(out)
    with pytest.warns(UserWarning, match=r"e\.sdf'.*heights changed after tmd_nb wrote it"):
        back = load_sdf(out)
    assert back["operator"] == "me" and back["height_unit"] == "m"
    np.testing.assert_allclose(back["height_map"], surface() * 2e-3, rtol=1e-15)


def test_a_file_whose_zscale_changed_is_noticed(tmp_path):
    out = Path(export_to_sdf({"height_map": surface((3, 4))}, tmp_path / "z.sdf"))
    content = bytearray(out.read_bytes())
    struct.pack_into("<d", content, 8 + 34 + 4 + 16, 2e-3)  # Zscale
    out.write_bytes(bytes(content))
    with pytest.warns(UserWarning, match="heights changed after tmd_nb wrote it"):
        back = load_sdf(out)
    np.testing.assert_allclose(back["height_map"], surface((3, 4)) * 2e-3, rtol=1e-15)


def test_a_copy_converted_to_ascii_by_sdfio_keeps_integer_heights_exactly(tmp_path):
    hm = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    data = {"height_map": hm, "height_unit": "um", "note": "kept"}
    file = sdfio.read(export_to_sdf(data, tmp_path / "b.sdf"))
    (tmp_path / "a.sdf").write_bytes(file.dumps(format=sdfio.FileFormat.ASCII))
    assert_identical(data, load_sdf(tmp_path / "a.sdf"))


# --------------------------------------------------------------------------- the shared samples


def test_every_shared_sample_loads_as_sdfio_reads_it():
    for name, path in samples().items():
        back = tmd_nb.load(path)
        file = sdfio.read(path)
        np.testing.assert_array_equal(back["height_map"], file.data, err_msg=name)
        rows, cols = file.data.shape
        assert back["x_length"] == file.header.x_scale * cols and back["y_length"] == file.header.y_scale * rows
        assert (back["lateral_unit"], back["height_unit"]) == ("m", "m")
        assert back["sdf_header"]["revision"] == str(file.header.revision)
        assert np.isnan(back["height_map"]).any(), name  # every sample has missing points
    profile = tmd_nb.load(samples()["iso1_profile_ascii"])
    assert profile["height_map"].shape == (1, 128)
    assert tmd_nb.load(samples()["iso1_surface_ascii"])["sdf_trailer"] == {
        "OperatorName": "Jane Doe",
        "PartName": "Synthetic bumps",
    }


def test_every_shared_sample_loads_through_tmd_load(ip):
    for name, path in samples().items():
        result = ip.run_line_magic("tmd_load", f"'{path}'")
        np.testing.assert_array_equal(result["height_map"], sdfio.read(path).data, err_msg=name)
        assert result["sdf_header"]["revision"] == str(sdfio.read(path).header.revision)


def test_shared_samples_match_gwyddion_where_gwyddion_opens_them(tmp_path):
    opened = set()
    for name, path in samples().items():
        container = gwyddion_reads(path, tmp_path)
        if container is None:
            continue
        opened.add(name)
        field = container["/0/data"]
        ours = tmd_nb.load(path)
        theirs = field.data.copy()
        if str(ours["sdf_header"]["revision"]).startswith("BCR"):
            theirs = theirs[::-1]  # Gwyddion 2.62 does not reverse BCR-1.0's rows
            mask = container["/0/mask"].data[::-1] if "/0/mask" in container else None
        else:
            mask = container["/0/mask"].data if "/0/mask" in container else None
        assert mask is not None, name
        missing = np.isnan(ours["height_map"])
        np.testing.assert_array_equal(mask > 0.5, missing, err_msg=name)
        np.testing.assert_allclose(theirs[~missing], ours["height_map"][~missing], rtol=1e-12, err_msg=name)
        assert field["xreal"] == pytest.approx(ours["x_length"], rel=1e-12)
        assert field["yreal"] == pytest.approx(ours["y_length"], rel=1e-12)
    # Gwyddion 2.62 reads binary files only here: its text reader stops at the first BAD token,
    # and it has no ISO-2.0 binary reader. Both binary ISO-1.0 and BCR-1.0 samples must be among them.
    assert {"iso1_surface_binary", "bcr1_surface_uint16_binary"} <= opened


# --------------------------------------------------------------------------- the real Gwyddion reads what we write


@pytest.mark.parametrize(
    ("hm", "units"),
    [
        (surface((20, 30)), {"lateral_unit": "um", "height_unit": "nm", "x_length": 60.0, "y_length": 20.0}),
        (np.arange(-50, 50, dtype=np.int16).reshape(10, 10), {"height_unit": "nm"}),
        (np.arange(200, dtype=np.uint16).reshape(1, 200), {"lateral_unit": "mm", "x_length": 4.0, "y_length": 0.02}),
        (surface((7, 9), np.float32), {}),
    ],
    ids=["float64", "int16", "uint16-profile", "float32-default-mm"],
)
def test_gwyddion_reads_what_export_to_sdf_writes(tmp_path, hm, units):
    data = {"height_map": hm, **units}
    out = Path(export_to_sdf(data, tmp_path / "ours.sdf"))
    container = gwyddion_reads(out, tmp_path)
    assert container is not None, "Gwyddion could not open an SDF file tmd_nb wrote"
    field = container["/0/data"]
    phys = tmd_nb.storage.units.physical(data)
    factor = tmd_nb.storage.units.metres_per(phys.height_unit)
    lateral = tmd_nb.storage.units.metres_per(phys.lateral_unit)
    assert field.data.shape == hm.shape
    np.testing.assert_allclose(field.data, hm.astype(np.float64) * factor, rtol=1e-14)
    rows, cols = hm.shape
    assert field["xreal"] == pytest.approx((phys.x_length or cols) * lateral, rel=1e-14)
    assert field["yreal"] == pytest.approx((phys.y_length or rows) * lateral, rel=1e-14)
    assert_identical(data, load_sdf(out))


def test_what_gwyddion_makes_of_missing_points(tmp_path):
    # ISO-1.0 marks a missing float64 point with -DBL_MAX. Gwyddion 2.62 masks NaN only in float
    # data, so it shows the marker as a height of -DBL_MAX x Zscale; sdfio and tmd_nb read NaN.
    hm = surface((5, 6))
    hm[1, 2] = np.nan
    out = Path(export_to_sdf({"height_map": hm, "height_unit": "um"}, tmp_path / "nan.sdf"))
    container = gwyddion_reads(out, tmp_path)
    assert container is not None
    shown = container["/0/data"].data
    finite = np.isfinite(hm)
    np.testing.assert_allclose(shown[finite], hm[finite] * 1e-6, rtol=1e-14)
    assert shown[1, 2] == pytest.approx(-DBL_MAX * 1e-6, rel=1e-12)
    assert np.isnan(sdfio.read(out).data[1, 2]) and np.isnan(load_sdf(out)["height_map"][1, 2])


# --------------------------------------------------------------------------- the writer refuses what the reader would


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"height_unit": "V"}, "height_unit 'V' is not a length unit"),
        ({"lateral_unit": "px"}, "lateral_unit 'px' is not a length unit"),
        ({"x_length": 1e308, "y_length": 1.0, "lateral_unit": "km"}, "gives a pixel spacing of inf"),
        ({"x_length": 1.0, "y_length": 1e-320, "lateral_unit": "pm"}, "y_length 1e-320 pm gives a pixel"),
    ],
)
def test_the_writer_refuses_units_and_sizes_sdf_cannot_hold(tmp_path, meta, message):
    data = {"height_map": surface((3, 4)), **meta}
    with pytest.raises(ValueError, match=re.escape(message)):
        registry.by_name("sdf").check(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        export_to_sdf(data, tmp_path / "no.sdf")
    assert not (tmp_path / "no.sdf").exists()


def test_a_failed_save_leaves_the_old_file_untouched(tmp_path):
    target = tmp_path / "keep.sdf"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        export_to_sdf({"height_map": surface((3, 4)), "bad": object()}, target)
    assert target.read_bytes() == b"old"


# --------------------------------------------------------------------------- hostile files


def binary_header(
    points=2,
    profiles=2,
    data_type=7,
    scales=(1e-6, 1e-6, 1e-6, -1.0),
    revision=b"ISO-1.0",
    compression=0,
    check_type=0,
    prefix=b"b",
) -> bytes:
    counts = struct.pack("<II" if revision == b"ISO-2.0" else "<HH", points, profiles)
    return (
        prefix
        + revision
        + b"hand-made "
        + b"010120241200" * 2
        + counts
        + struct.pack("<dddd", *scales)
        + bytes([compression, data_type, check_type])
    )


def ascii_file(points="2", profiles="2", data="1 2\r\n3 4", scales=("1e-6", "1e-6", "1e-6"), data_type="6") -> bytes:
    return (
        "aISO-1.0\r\nManufacID = x\r\nCreateDate = 010120241200\r\nModDate = 010120241200\r\n"
        f"NumPoints = {points}\r\nNumProfiles = {profiles}\r\nXscale = {scales[0]}\r\nYscale = {scales[1]}\r\n"
        f"Zscale = {scales[2]}\r\nZresolution = -1\r\nCompression = 0\r\nDataType = {data_type}\r\nCheckType = 0\r\n"
        f"*\r\n{data}\r\n*\r\n*\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (binary_header(60000, 60000) + b"\0" * 1000, "60000 x 60000 points of 8 bytes need 28800000000 bytes"),
        (
            binary_header(2**32 - 1, 2**32 - 1, revision=b"ISO-2.0") + b"\0" * 64,
            "4294967295 x 4294967295 points of 8 bytes need",
        ),
        (binary_header(2, 2) + b"\0" * 31, "2 x 2 points of 8 bytes need 32 bytes, but 31 follow the header"),
        (binary_header()[:50], "is truncated: 50 bytes, less than the 81-byte SDF header"),
        (binary_header(data_type=9) + b"\0" * 32, "unknown SDF data type code 9"),
        (binary_header(compression=1) + b"\0" * 32, "Compressed SDF data areas are not supported"),
        (binary_header(check_type=1) + b"\0" * 32, "Checksummed SDF data areas are not supported"),
        (binary_header(data_type=0) + b"\0" * 4, "Data type UINT8 is not valid for SDF revision ISO-1.0"),
        (binary_header(0, 5) + b"", "holds 5 profiles of 0 points; an SDF grid needs at least one of each"),
        (binary_header(scales=(0.0, 1.0, 1.0, 1.0)) + b"\0" * 32, "has Xscale = 0.0; it must be a positive finite"),
        (binary_header(scales=(1.0, np.nan, 1.0, 1.0)) + b"\0" * 32, "has Yscale = nan; it must be a positive"),
        (binary_header(scales=(1.0, 1.0, -1.0, 1.0)) + b"\0" * 32, "has Zscale = -1.0; it must be a positive"),
        (binary_header(scales=(1.0, 1.0, np.inf, 1.0)) + b"\0" * 32, "has Zscale = inf; it must be a positive"),
        (b"bXYZ-1.0" + b"\0" * 100, "is not an SDF file: it starts with b'bXYZ-1.0'"),
        (ascii_file(points="99999999999", profiles="99999999999"), "Expected 9999999999800000000001 data values"),
        (ascii_file(points="-2", profiles="-1"), "has NumPoints = -2; a count cannot be negative"),
        (ascii_file(points="4", profiles="-1", data="1 2 3 4"), "has NumProfiles = -1; a count cannot be negative"),
        (ascii_file(points="2.0"), "Invalid integer value for SDF header field 'NumPoints': '2.0'"),
        (ascii_file(points="9" * 5000), "Invalid integer value for SDF header field 'NumPoints'"),
        (ascii_file(data="1 2\r\n3 inf"), "Invalid data value at position 3: 'inf'"),
        (ascii_file(data="1 2 * 3 4"), "Expected 4 data values, found 5"),
        (ascii_file(scales=("1e400", "1", "1")), "has Xscale = inf"),
        (ascii_file(scales=("1", "1", "-0")), "has Zscale = -0.0"),
        (ascii_file(data_type="3"), "Data type BINARY32 is not valid for SDF revision ISO-1.0"),
        (ascii_file().replace(b"Zresolution = -1\r\n", b""), "Missing required SDF header field 'Zresolution'"),
        (b"\xef\xbb\xbf" * 2 + ascii_file(), "is not an SDF file"),
        (ascii_file(points="x"), "Invalid integer value for SDF header field 'NumPoints': 'x'"),
        (ascii_file(data="1 2\r\n3 4.5"), "Invalid data value at position 3: '4.5'"),
        (ascii_file(data="1 2 3"), "Expected 4 data values, found 3"),
        (ascii_file(points="0", profiles="0", data=""), "holds 0 profiles of 0 points"),
        (ascii_file(scales=("1e-6", "-1", "1")), "has Yscale = -1.0"),
        (ascii_file(scales=("abc", "1", "1")), "Invalid float value for SDF header field 'Xscale'"),
        (ascii_file(data_type="42"), "Unknown SDF data type code 42"),
        (b"aISO-1.0", "is not a readable SDF file: SDF file is missing the header and data records"),
        (b"aISO-1.0\r\nManufacID = x\r\n", "must contain header, data and trailer records"),
    ],
)
def test_malformed_and_lying_files_are_one_line_format_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.sdf"
    path.write_bytes(content)
    assert message in format_error(path)
    if content.removeprefix(b"\xef\xbb\xbf")[:8] in sdf.MAGICS:
        assert message in format_error(path, tmd_nb.load)


def test_a_profile_with_a_meaningless_yscale_takes_the_xscale(tmp_path):
    path = tmp_path / "p.sdf"
    path.write_bytes(binary_header(3, 1, scales=(2e-6, 0.0, 1e-6, -1.0)) + struct.pack("<3d", 1.0, 2.0, 3.0))
    back = load_sdf(path)
    assert back["height_map"].shape == (1, 3) and (back["x_length"], back["y_length"]) == (6e-6, 2e-6)


def test_non_finite_stored_values_are_missing_points(tmp_path):
    path = tmp_path / "inf.sdf"
    values = struct.pack("<4d", np.inf, -np.inf, np.nan, -DBL_MAX)
    path.write_bytes(binary_header() + values)
    assert np.isnan(load_sdf(path)["height_map"]).all()
    path.write_bytes(binary_header(scales=(1.0, 1.0, 1e300, -1.0)) + struct.pack("<4d", 1e300, 1.0, 2.0, 3.0))
    np.testing.assert_array_equal(load_sdf(path)["height_map"], [[np.nan, 1e300], [2e300, 3e300]])


def test_a_byte_order_mark_and_upper_case_magic_are_read(tmp_path):
    path = tmp_path / "bom.sdf"
    path.write_bytes(b"\xef\xbb\xbf" + ascii_file())
    np.testing.assert_array_equal(tmd_nb.load(path)["height_map"], [[1e-6, 2e-6], [3e-6, 4e-6]])
    path.write_bytes(binary_header(prefix=b"B") + struct.pack("<4d", 1, 2, 3, 4))
    np.testing.assert_array_equal(tmd_nb.load(path)["height_map"], [[1e-6, 2e-6], [3e-6, 4e-6]])


@pytest.mark.parametrize(
    "trailer",
    [
        "TmdNbRecord = {not json}\r\nTmdNbEnd = 1\r\n",
        "TmdNbRecord = {}\r\n",
        "TmdNbArray1 = eA== AAAA\r\nTmdNbEnd = 1\r\n",
        'TmdNbRecord = {"tmd_nb": 1}\r\nTmdNbArray1 = !!! AAAA\r\nTmdNbEnd = 2\r\n',
        'TmdNbRecord = {"tmd_nb": 99}\r\nTmdNbEnd = 1\r\n',
        "TmdNbEnd = 0\r\n",
    ],
)
def test_a_damaged_record_in_the_trailer_is_a_format_error(tmp_path, trailer):
    path = tmp_path / "rec.sdf"
    path.write_bytes(binary_header() + struct.pack("<4d", 1, 2, 3, 4) + trailer.encode())
    format_error(path, chained=True)  # the record's own errors (embedded.unpack) keep their context


def test_every_cut_of_a_file_tmd_nb_wrote_is_a_format_error(tmp_path):
    # tmd_nb's files say so in ManufacID and always end with the record's last line, CR LF included,
    # so a cut anywhere (even exactly at the end of the data area, a valid SDF file) is noticed.
    hm = surface((5, 6))
    hm[1, 1] = np.nan
    good = Path(export_to_sdf({"height_map": hm, "arr": np.ones(3), "k": "v"}, tmp_path / "g.sdf")).read_bytes()
    path = tmp_path / "cut.sdf"
    for n in range(len(good)):
        path.write_bytes(good[:n])
        format_error(path, chained=True)
    path.write_bytes(good)
    assert_identical({"height_map": hm, "arr": np.ones(3), "k": "v"}, load_sdf(path))


@example(edits=[(100, 0xFF)], cut=None, ascii=False)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10_000),
    ascii=st.booleans(),
)
def test_fuzzed_files_raise_only_format_error(tmp_path, edits, cut, ascii):
    hm = surface((4, 5))
    hm[0, 0] = np.nan
    out = export_to_sdf({"height_map": hm, "t": (1, 2), "mask": np.ones((4, 5), bool)}, tmp_path / "good.sdf")
    data = bytearray(sdfio.read(out).dumps(format=sdfio.FileFormat.ASCII) if ascii else Path(out).read_bytes())
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    target = tmp_path / "fuzz.sdf"
    target.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = load_sdf(target)
        except FormatError as exc:
            assert str(exc).startswith(f"'{target}'") and "\n" not in str(exc), str(exc)
        else:
            assert result["height_map"].ndim == 2


def test_the_writer_output_is_what_sdfio_writes_but_for_the_exact_data_area(tmp_path):
    hm = surface((3, 4))
    out = Path(export_to_sdf({"height_map": hm}, tmp_path / "x.sdf")).read_bytes()
    file = sdfio.SdfFile.loads(out)
    again = file.dumps()
    start = sdf.header_size("ISO-1.0")
    assert again[:start] == out[:start] and again[start + hm.nbytes :] == out[start + hm.nbytes :]
    assert np.frombuffer(out, "<f8", 12, start).tobytes() == hm.tobytes()  # the millimetres themselves


def test_load_reports_progress(tmp_path):
    out = export_to_sdf({"height_map": surface()}, tmp_path / "p.sdf")
    seen: list[tuple[int, int]] = []
    load_sdf(out, progress=lambda done, total: seen.append((done, total)))
    size = Path(out).stat().st_size
    assert seen and seen[-1] == (size, size)


# --------------------------------------------------------------------------- memory, in a capped process

MB = 1 << 20


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "outcome", "message"),
    [
        ("ascii_one_per_line", "ok", ""),  # sdfio's tokens and lines cost the most per byte: "-1\n"
        ("ascii_one_line", "ok", ""),  # measured: 35 x the file at its peak, the returned array included
        ("ascii_count_lies", "FormatError", "Expected 8000001 data values, found 8000000"),
        ("ascii_blank_lines", "FormatError", "Expected 4 data values, found 1"),
        ("binary_lies", "FormatError", "65535 x 65535 points of 8 bytes need 34358689800 bytes"),
        ("binary_uint8", "ok", ""),  # 1-byte values become float64: the returned array, 8 x the file
    ],
)
def test_memory_stays_within_the_returned_array_plus_256_mb_plus_50_times_the_file(tmp_path, name, outcome, message):
    n = 8_000_000
    path = tmp_path / f"{name}.sdf"
    returned = 0
    if name == "ascii_one_per_line":
        path.write_bytes(ascii_file(points=str(n), profiles="1", data="-1\r\n" * n))
        returned = 8 * n
    elif name == "ascii_one_line":
        path.write_bytes(ascii_file(points=str(n), profiles="1", data="-1 " * n))
        returned = 8 * n
    elif name == "ascii_count_lies":
        path.write_bytes(ascii_file(points=str(n + 1), profiles="1", data="-1 " * n))
    elif name == "ascii_blank_lines":
        path.write_bytes(ascii_file(data="1" + "\n" * (3 * n)))
    elif name == "binary_lies":
        path.write_bytes(binary_header(65535, 65535) + b"\0" * (16 * MB))
    else:
        header = binary_header(4000, 4000, data_type=0, revision=b"BCR-1.0")
        path.write_bytes(header + bytes(range(256)) * (4000 * 4000 // 256))
        returned = 8 * 4000 * 4000
    result = memory_probe(path, returned)
    assert result["outcome"] == outcome, result
    if outcome == "FormatError":
        assert message in result["message"] and path.name in result["message"], result


# --------------------------------------------------------------------------- cases an outside attack tried, kept


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (ascii_file().replace(b"\r\n", b"\r"), [[1e-6, 2e-6], [3e-6, 4e-6]]),  # CR-only lines (BCR allows them)
        (ascii_file().replace(b"\r\n", b"\n"), [[1e-6, 2e-6], [3e-6, 4e-6]]),
        (ascii_file(points="+2"), [[1e-6, 2e-6], [3e-6, 4e-6]]),
        (ascii_file().replace(b"NumPoints", b"numpoints"), [[1e-6, 2e-6], [3e-6, 4e-6]]),
        (ascii_file().replace(b"CheckType = 0", b"CheckType = 0\r\nFoo = bar"), [[1e-6, 2e-6], [3e-6, 4e-6]]),
        (ascii_file(data="1 2\r\n3 BAD"), [[1e-6, 2e-6], [3e-6, np.nan]]),
        (ascii_file(data="1 2\r\n3 nan", data_type="5"), [[1e-6, 2e-6], [3e-6, np.nan]]),
        (ascii_file(data="1 2\r\n3 1e999", data_type="7"), [[1e-6, 2e-6], [3e-6, np.nan]]),  # overflow: no height
        (ascii_file(data="1 2\r\n3 -inf", data_type="7"), [[1e-6, 2e-6], [3e-6, np.nan]]),
        # BCR-1.0: symbolic data types, ';' comments, the type's maximum as missing, rows stored last first
        (ascii_file(data_type="LONGINT").replace(b"aISO-1.0", b"aBCR-1.0"), [[3e-6, 4e-6], [1e-6, 2e-6]]),
        (
            ascii_file(data="1 2 ; note\r\n3 2147483647").replace(b"aISO-1.0", b"aBCR-1.0"),
            [[3e-6, np.nan], [1e-6, 2e-6]],
        ),
        (
            binary_header(data_type=1, revision=b"BCR-1.0") + struct.pack("<4H", 1, 2, 3, 65535),
            [[3e-6, np.nan], [1e-6, 2e-6]],
        ),
        (binary_header(data_type=5) + struct.pack("<4h", 1, 2, 3, -32768), [[1e-6, 2e-6], [3e-6, np.nan]]),
        (
            binary_header(data_type=3, revision=b"ISO-2.0") + struct.pack("<4f", 1, 2, 3, np.finfo(np.float32).min),
            [[1e-6, 2e-6], [3e-6, np.nan]],
        ),
    ],
)
def test_variants_real_writers_produce_load_as_sdfio_reads_them(tmp_path, content, expected):
    path = tmp_path / "v.sdf"
    path.write_bytes(content)
    back = load_sdf(path)
    np.testing.assert_array_equal(back["height_map"], expected)
    theirs = sdfio.read(path).data  # sdfio keeps an overflowing number as infinity; tmd_nb as missing
    np.testing.assert_array_equal(back["height_map"], np.where(np.isfinite(theirs), theirs, np.nan))


def test_a_trailer_that_is_not_text_or_too_long_still_loads(tmp_path):
    path = tmp_path / "t.sdf"
    path.write_bytes(binary_header() + b"\0" * 32 + b"\xff\xfe caf\xe9")
    assert load_sdf(path)["sdf_trailer"] == "\ufffd\ufffd caf\ufffd"
    path.write_bytes(binary_header() + b"\0" * 32 + b"x" * (sdf.MAX_TRAILER_TEXT + 1))
    with pytest.warns(UserWarning, match=r"t\.sdf': its trailer of 1048577 characters is not kept"):
        assert "sdf_trailer" not in load_sdf(path)


@pytest.mark.parametrize(
    ("find", "replace", "message"),
    [
        (b'"dtype": "<f8"', b'"dtype": "|O"', "tmd_nb record holds dtype object, not a numeric height map"),
        (b'"exact": null', b'"exact": "height_map"', "its tmd_nb record refers to a missing exact height map"),
        (b"TmdNbEnd = 2", b"TmdNbEnd = 3", "its tmd_nb record in the trailer is cut short or damaged"),
        (b"TmdNbRecord", b"TmdNbEnd = 0\r\nTmdNbRecord", "its tmd_nb record in the trailer is cut short or damaged"),
        (b'"metadata": {', b'"metadata": {"d": ' + b"[" * 5000 + b"]" * 5000 + b", ", "nested 5002 levels deep"),
        (b'"metadata": {', b'"metadata":\r\n {', "its tmd_nb record is not valid JSON"),
    ],
)
def test_edits_of_the_record_are_format_errors(tmp_path, find, replace, message):
    good = Path(export_to_sdf({"height_map": surface((3, 4)), "arr": np.ones(3)}, tmp_path / "g.sdf")).read_bytes()
    assert find in good
    path = tmp_path / "r.sdf"
    path.write_bytes(good.replace(find, replace, 1))
    assert message in format_error(path, chained=True)


@pytest.mark.parametrize("encoding", [sdfio.FileFormat.BINARY, sdfio.FileFormat.ASCII])
@pytest.mark.parametrize(
    ("revision", "data_type"),
    [(r, t) for r in sdfio.Revision for t in sdfio.DataType if t in r.rules.data_types],
    ids=lambda v: str(getattr(v, "name", v)),
)
def test_every_revision_encoding_and_data_type_loads(tmp_path, revision, data_type, encoding):
    heights = np.array([[0.0, 1.0, 2.0, 3.0], [4.0, np.nan, 6.0, 100.0], [7.0, 8.0, 9.0, 10.0]]) * 1e-7
    path = tmp_path / "t.sdf"
    meta = sdfio.Metadata(revision=revision, data_type=data_type, manufacturer_id="acme")
    sdfio.write(path, heights, x_scale=2e-6, y_scale=3e-6, format=encoding, metadata=meta)
    back = tmd_nb.load(path)
    np.testing.assert_array_equal(back["height_map"], sdfio.read(path).data)
    assert np.isnan(back["height_map"][1, 1]) and np.isfinite(np.delete(back["height_map"].ravel(), 5)).all()
    np.testing.assert_allclose(back["height_map"], heights, rtol=0, atol=101e-7 / 100)  # within the coding step
    assert (back["x_length"], back["y_length"]) == (8e-6, 9e-6)
    assert back["sdf_header"]["data_type"] == data_type.name.lower()
