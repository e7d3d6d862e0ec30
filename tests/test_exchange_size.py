"""X3P and GWY files hold each height once: their size, what is in them, and the level option.

The sizes are properties of the formats as tmd_nb writes them (nothing stored twice), checked
by looking inside the files, never timed: speed is measured in ``benchmarks/``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import zipfile
import zlib

import gwyfile
import numpy as np
import pytest
import x3pio
from conftest import require
from helpers import assert_identical
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

import tmd_nb
from tmd_nb.storage import embedded

# Each example writes and fsyncs two files and reads them with two libraries: a quarter of the
# profile's examples (as in test_x3p and test_gwy).
FAST = settings(max_examples=max(1, settings.default.max_examples // 4))

LENGTH_UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9, "pm": 1e-12, "km": 1e3}
LEVELS = [None, "fastest", "balanced", "smallest", 0, 1, 6, 9]
RECORD = "pypi\\org\\project\\tmd-nb\\record.json"


def scan_like(n: int, dtype: type = np.float64, seed: int = 0) -> np.ndarray:
    """A rough surface in mm at full float precision (nearly random low mantissa bits), as scans are."""
    rng = np.random.default_rng(seed)
    z = np.cumsum(np.cumsum(rng.standard_normal((n, n)), axis=0), axis=1) * 1e-5
    return (z + rng.normal(0.0, 2e-5, z.shape)).astype(dtype)


def x3p_members(path) -> dict[str, int]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: info.file_size for info in zf.infolist()}


def record_of_x3p(path) -> dict:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(RECORD))


float_maps = st.sampled_from(["<f2", "<f4", ">f4", "<f8", ">f8"]).flatmap(
    lambda d: npst.arrays(
        d,
        npst.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=12),
        # float64 within 1e300, so that metres of any unit stay finite
        elements=npst.from_dtype(np.dtype(d), allow_nan=False, allow_infinity=False)
        if d[-1] != "8"
        else st.floats(-1e300, 1e300),
    )
)


@FAST
@given(hm=float_maps, unit=st.sampled_from(sorted(LENGTH_UNITS)), level=st.sampled_from(LEVELS))
def test_float_maps_are_stored_once_as_they_are_and_read_in_metres(tmp_path, hm, unit, level):
    """Any unit, any level: data.bin is the map's own numbers, x3pio sees metres, no exact copy."""
    data = {"height_map": hm, "height_unit": unit, "lateral_unit": "um"}
    path = tmd_nb.export_to_x3p(data, tmp_path / "f.x3p", level=level)
    assert_identical(data, tmd_nb.load_x3p(path))
    members = x3p_members(path)
    assert set(members) == {"main.xml", "md5checksum.hex", "bindata/data.bin", RECORD}
    width = 8 if hm.dtype.itemsize == 8 else 4
    assert members["bindata/data.bin"] == width * hm.size
    with zipfile.ZipFile(path) as zf:
        stored = np.frombuffer(zf.read("bindata/data.bin"), dtype=f"<f{width}").reshape(hm.shape)
    np.testing.assert_array_equal(stored, hm.astype(f"<f{width}"))
    record = record_of_x3p(path)
    assert record["tmd_nb"] == 3 and record["height"]["stored"] is True and record["height"]["exact"] is None
    file = x3pio.read(path, verify=True)
    assert file.header.z.increment == LENGTH_UNITS[unit]
    np.testing.assert_array_equal(file.layers[0].z, hm.astype(np.float64) * LENGTH_UNITS[unit])


@FAST
@given(
    dtype=st.sampled_from(["?", "u1", "i1", "<i2", ">u2", "<i4", ">i4"]),
    unit=st.sampled_from(sorted(LENGTH_UNITS)),
    level=st.sampled_from(LEVELS),
    seed=st.integers(0, 2**32 - 1),
)
def test_integer_maps_are_stored_as_integers_with_their_increment(tmp_path, dtype, unit, level, seed):
    rng = np.random.default_rng(seed)
    info = np.iinfo(dtype) if dtype != "?" else None
    hm = (
        rng.integers(0, 2, (5, 7)).astype(dtype)
        if info is None
        else rng.integers(info.min, info.max, (5, 7), endpoint=True).astype(dtype)
    )
    data = {"height_map": hm, "height_unit": unit}
    path = tmd_nb.export_to_x3p(data, tmp_path / "i.x3p", level=level)
    assert_identical(data, tmd_nb.load_x3p(path))
    assert embedded.HEIGHT_MAP + ".npy" not in "".join(x3p_members(path))
    file = x3pio.read(path, verify=True)
    np.testing.assert_array_equal(file.layers[0].z, hm.astype(np.float64) * LENGTH_UNITS[unit])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", LEVELS)
def test_an_x3p_file_is_the_size_of_the_npz_of_the_same_map(tmp_path, dtype, level):
    hm = scan_like(300, dtype)
    data = {"height_map": hm, "x_length": 0.3, "y_length": 0.3}
    x3p_size = os.path.getsize(tmd_nb.export_to_x3p(data, tmp_path / "s.x3p", level=level))
    npz_size = os.path.getsize(tmd_nb.export_to_npz(data, tmp_path / "s.npz", level=level))
    # main.xml, the checksum and the record are a few kB: within 5% of the NPZ at this size
    assert x3p_size <= 1.05 * npz_size
    assert x3p_members(tmp_path / "s.x3p")["bindata/data.bin"] == hm.nbytes
    file = x3pio.read(tmp_path / "s.x3p", verify=True)
    np.testing.assert_array_equal(file.layers[0].z, hm.astype(np.float64) * 1e-3)
    assert_identical(data, tmd_nb.load(tmp_path / "s.x3p"))


def test_the_level_changes_how_much_the_x3p_zip_is_compressed(tmp_path):
    data = {"height_map": np.repeat(np.arange(200, dtype=np.float32), 200).reshape(200, 200)}
    with zipfile.ZipFile(tmd_nb.save(data, tmp_path / "stored.x3p", level=0)) as zf:
        stored = zf.getinfo("bindata/data.bin")
        assert stored.compress_type == zipfile.ZIP_STORED and stored.compress_size == data["height_map"].nbytes
    sizes = {}
    for level in ("fastest", "smallest"):
        with zipfile.ZipFile(tmd_nb.save(data, tmp_path / f"{level}.x3p", level=level)) as zf:
            info = zf.getinfo("bindata/data.bin")
            assert info.compress_type == zipfile.ZIP_DEFLATED
            sizes[level] = info.compress_size
            assert zf.testzip() is None
    assert sizes["smallest"] < sizes["fastest"] < stored.compress_size // 10


def test_an_unknown_level_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"compression level must be .* not 'fast'"):
        tmd_nb.export_to_x3p(np.zeros((2, 2)), tmp_path / "a.x3p", level="fast")
    with pytest.raises(ValueError, match="not 10"):
        tmd_nb.save(np.zeros((2, 2)), tmp_path / "a.x3p", level=10)
    assert not (tmp_path / "a.x3p").exists()
    with pytest.raises(ValueError, match="^level applies to NPZ and X3P only, not GWY$"):
        tmd_nb.save(np.zeros((2, 2)), tmp_path / "a.gwy", level=1)
    with pytest.raises(ValueError, match="^compress applies to NPZ only, not X3P$"):
        tmd_nb.save(np.zeros((2, 2)), tmp_path / "a.x3p", compress=False)


@pytest.mark.parametrize("level", ["fastest", "balanced", "smallest", 0, 6])
def test_gwyddion_reads_x3p_files_of_every_level_in_metres(tmp_path, level):
    require(shutil.which("gwyddion") is not None, "Gwyddion is not installed")
    hm = scan_like(40, np.float32)
    data = {"height_map": hm, "x_length": 4.0, "y_length": 2.0, "height_unit": "um"}
    path = tmd_nb.export_to_x3p(data, tmp_path / "g.x3p", level=level)
    out = tmp_path / "g.gwy"
    subprocess.run(["gwyddion", f"--convert-to-gwy={out}", path], check=True, capture_output=True, timeout=120)
    field = next(iter(gwyfile.util.get_datafields(gwyfile.load(str(out))).values()))
    assert field.xreal == pytest.approx(4e-3) and field.yreal == pytest.approx(2e-3)
    np.testing.assert_allclose(field.data, hm.astype(np.float64) * 1e-6, rtol=1e-7)


def test_a_float64_map_in_mm_makes_a_gwy_file_of_8_bytes_a_point(tmp_path):
    hm = scan_like(200)
    data = {"height_map": hm}
    path = tmd_nb.export_to_gwy(data, tmp_path / "d.gwy")
    container = gwyfile.load(path)
    keys = set(container)
    # float64 metres cannot give back every float64 millimetre: only those points are kept
    assert f"/tmd_nb/{embedded.HEIGHT_MAP}" not in keys
    assert f"/tmd_nb/{embedded.PATCH_AT}" in keys
    assert (tmp_path / "d.gwy").stat().st_size <= 1.05 * 8 * hm.size
    np.testing.assert_array_equal(container["/0/data"].data, hm * 1e-3)
    assert_identical(data, tmd_nb.load_gwy(path))


@FAST
@given(
    hm=npst.arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.integers(1, 12)),
        elements=st.floats(-1e300, 1e300),  # metres of any unit stay finite
    ),
    unit=st.sampled_from(sorted(LENGTH_UNITS)),
)
def test_gwy_round_trips_any_float64_map_in_any_unit(tmp_path, hm, unit):
    data = {"height_map": hm, "height_unit": unit}
    path = tmd_nb.export_to_gwy(data, tmp_path / "a.gwy")
    assert_identical(data, tmd_nb.load_gwy(path))
    field = gwyfile.load(path)["/0/data"]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(field.data, hm * LENGTH_UNITS[unit])


def test_a_patch_that_does_not_fit_the_map_is_a_format_error(tmp_path):
    hm = scan_like(30)
    record = embedded.pack(hm, {}, hm * 1e-3, 1e-3)
    assert embedded.PATCH_AT in record and embedded.HEIGHT_MAP not in record
    bad = np.load(io.BytesIO(record[embedded.PATCH_AT]))
    bad[0] = hm.size  # one past the end
    members = dict(record)
    members[embedded.PATCH_AT] = embedded.npy_bytes(bad)
    text = json.loads(members[embedded.RECORD])
    text["checksums"][embedded.PATCH_AT] = f"{zlib.crc32(members[embedded.PATCH_AT]):08x}"
    members[embedded.RECORD] = json.dumps(text).encode()
    with pytest.raises(tmd_nb.FormatError, match="patch does not fit the height map"):
        embedded.unpack(members, hm * 1e-3, "'p'", fields={})
    good = embedded.unpack(record, hm * 1e-3, "'p'", fields={})
    assert good.current and good.height_map is not None and good.height_map.tobytes() == hm.tobytes()


def test_a_gwy_file_is_what_gwyfile_serializes_for_what_it_reads(tmp_path):
    """The pieces written one by one (the map from its own buffer) make gwyfile's exact bytes."""
    hm = scan_like(60, np.float32)
    hm[5, 7] = np.nan
    data = {"height_map": hm, "title": "T", "operator": "me", "mask": np.eye(60, dtype=bool)}
    path = tmd_nb.export_to_gwy(data, tmp_path / "s.gwy")
    raw = (tmp_path / "s.gwy").read_bytes()
    assert raw[:4] == b"GWYP" and raw[4:] == gwyfile.load(path).serialize()
    assert_identical(data, tmd_nb.load_gwy(path))


def test_a_changed_byte_in_a_patch_is_an_error(tmp_path):
    hm = scan_like(30)
    record = embedded.pack(hm, {}, hm * 1e-3, 1e-3, fields={})
    damaged = bytearray(record[embedded.PATCH_VALUES])
    damaged[-1] ^= 0x01
    with pytest.raises(tmd_nb.FormatError, match="member '__patch_values__' is damaged"):
        embedded.unpack({**record, embedded.PATCH_VALUES: bytes(damaged)}, hm * 1e-3, "'p'", fields={})
