"""Physical truth under odd inputs: unit spellings and types, lengths a format cannot hold, one-axis
lengths, edits by other software over missing points, and units as Gwyddion itself reads them.

Every file is read back with the field's own reader (x3pio, gwyfile, the ``.tmd`` layout parsed by
hand, Gwyddion itself where installed) and compared in metres.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import unicodedata
from pathlib import Path

import gwyfile
import numpy as np
import pytest
import x3pio
from conftest import require
from gwyfile.objects import GwyContainer, GwyDataField, GwySIUnit
from hypothesis import given
from hypothesis import strategies as st

import tmd_nb
from tmd_nb.formats import units

WRITERS = ["tmd", "x3p", "gwy"]
ANGSTROM_SIGN = "\u212b"  # what some software writes for the angstrom; NFC makes it U+00C5


def tmd_fields(path: str) -> tuple[tuple[float, float, float, float], np.ndarray]:
    """``((x_length, y_length, x_offset, y_offset) in mm, float32 heights)`` from the bytes, by the layout."""
    content = Path(path).read_bytes()
    comment_end = content.index(b"\0", content.index(b"\0") + 1)
    width, height, *fields = struct.unpack_from("<IIffff", content, comment_end + 1)
    heights = np.frombuffer(content, "<f4", offset=comment_end + 25).reshape(height, width)
    return (fields[0], fields[1], fields[2], fields[3]), heights


def x3p_lengths(path: str) -> tuple[float, float, float, float]:
    """``(x_length, y_length, x_offset, y_offset)`` in metres, as x3pio reads them."""
    file = x3pio.read(path)
    z = np.asarray(file.layers[0].z)
    rows, cols = z.shape if z.ndim == 2 else (1, z.size)  # a profile is one row
    x_off, y_off, _ = (float(v) for v in file.placement.offset)
    return float(file.header.x.increment) * cols, float(file.header.y.increment) * rows, x_off, y_off


def gwy_lengths(path: str) -> tuple[float, float, float, float]:
    field = gwyfile.load(path)["/0/data"]
    return field["xreal"], field["yreal"], field.get("xoff", 0.0), field.get("yoff", 0.0)


def existing(path: Path) -> bytes:
    """Write a file at ``path`` as a user would have one there, and return its bytes."""
    tmd_nb.save({"height_map": np.ones((2, 2), np.float32)}, path)
    return path.read_bytes()


# --------------------------------------------------------------------------- unit keys of the wrong type


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("key, value", [("units", b"um"), ("lateral_unit", 6), ("height_unit", ["nm"])])
def test_a_unit_key_that_is_no_string_is_refused_not_read_as_millimetres(
    tmp_path: Path, fmt: str, key: str, value: object
) -> None:
    """``{"units": b"um"}`` was written as millimetres (1000x too large) by every writer, silently."""
    out = tmp_path / f"u.{fmt}"
    before = existing(out)
    scan = {"height_map": np.ones((2, 3)), "x_length": 3.0, "y_length": 2.0, key: value}
    with pytest.raises(TypeError, match=rf"^{key} must be a unit name \(str\) such as 'um', not "):
        tmd_nb.save(scan, out)
    assert out.read_bytes() == before  # the old file is untouched


def test_a_unit_key_holding_none_is_no_unit_given() -> None:
    assert units.factors({"units": None, "height_unit": "nm"}) == (1e-3, 1e-9)


# --------------------------------------------------------------------------- spellings of one unit


@pytest.mark.parametrize("spelling, same", [(ANGSTROM_SIGN, "\u00c5"), ("\u00b5m", "um"), ("\uff4d\uff4d", "mm")])
def test_every_spelling_of_a_unit_is_that_unit(tmp_path: Path, spelling: str, same: str) -> None:
    """The angstrom sign U+212B was refused with a message listing 'Å', which looks the same."""
    assert units.metres_per(spelling) == units.metres_per(same)
    assert units.convert(3.0, spelling, "mm") == units.convert(3.0, same, "mm")
    scan = {"height_map": np.full((2, 4), 5.0), "units": spelling, "x_length": 4.0, "y_length": 2.0}
    reference = {**scan, "units": same}
    for fmt in WRITERS:
        a, b = tmd_nb.save(scan, tmp_path / f"a.{fmt}"), tmd_nb.save(reference, tmp_path / f"b.{fmt}")
        if fmt == "tmd":
            assert tmd_fields(a)[0] == tmd_fields(b)[0]
            assert tmd_fields(a)[1].tobytes() == tmd_fields(b)[1].tobytes()
        elif fmt == "x3p":
            assert x3p_lengths(a) == x3p_lengths(b)
            np.testing.assert_array_equal(x3pio.read(a).layers[0].z, x3pio.read(b).layers[0].z)
        else:
            assert gwy_lengths(a) == gwy_lengths(b)
            np.testing.assert_array_equal(gwyfile.load(a)["/0/data"].data, gwyfile.load(b)["/0/data"].data)


# --------------------------------------------------------------------------- lengths a format cannot hold as given


BAD_LENGTHS = [
    ("x_length", -3.0, ValueError, "must be positive"),
    ("y_length", 0, ValueError, "must be positive"),
    ("x_length", float("nan"), ValueError, "must be a finite number"),
    ("y_length", float("inf"), ValueError, "must be a finite number"),
    ("x_length", 10**400, ValueError, "must be a finite number"),
    ("x_length", True, TypeError, "must be a real number"),
    ("y_length", "3", TypeError, "must be a real number"),
    ("x_length", np.complex128(3), TypeError, "must be a real number"),
    ("x_offset", float("nan"), ValueError, "must be a finite number"),
    ("y_offset", -float("inf"), ValueError, "must be a finite number"),
    ("x_offset", "1", TypeError, "must be a real number"),
]


@pytest.mark.parametrize("fmt", ["x3p", "gwy"])
@pytest.mark.parametrize("key, value, error, message", BAD_LENGTHS, ids=lambda v: repr(v)[:12])
def test_a_length_or_offset_the_file_cannot_hold_is_refused_not_replaced(
    tmp_path: Path, fmt: str, key: str, value: object, error: type, message: str
) -> None:
    """X3P and Gwyddion wrote one unit per pixel for such a length and 0 for such an offset, silently,
    while tmd_nb's record kept the value given: other software and tmd_nb saw different sizes."""
    out = tmp_path / f"l.{fmt}"
    before = existing(out)
    scan = {"height_map": np.ones((2, 3)), "units": "um", "x_length": 3.0, "y_length": 2.0, key: value}
    with pytest.raises(error, match=rf"^{key} {message}"):
        tmd_nb.save(scan, out)
    assert out.read_bytes() == before


@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("key", ["x_length", "x_offset"])
def test_a_length_beyond_range_in_the_files_unit_is_a_value_error(tmp_path: Path, fmt: str, key: str) -> None:
    """1e306 km is beyond float64 in metres (Gwyddion: a FormatError naming no file); 10**400 was an OverflowError."""
    for value in (1e306, 10**400):
        scan = {"height_map": np.ones((2, 3)), "units": "km", "x_length": 3.0, "y_length": 2.0, key: value}
        with pytest.raises(ValueError, match=rf"^{key} "):
            tmd_nb.save(scan, tmp_path / f"o.{fmt}")
        assert not (tmp_path / f"o.{fmt}").exists()


@pytest.mark.parametrize("fmt", ["x3p", "gwy"])
def test_a_finite_height_beyond_range_in_metres_is_refused_not_written_as_missing(tmp_path: Path, fmt: str) -> None:
    """1e306 km became +inf metres: an invalid point in X3P, a masked filled point in Gwyddion."""
    hm = np.array([[1.0, 1e306]])
    with pytest.raises(ValueError, match=r"^height 1e\+306 at index \(0, 1\) is beyond float64 range"):
        tmd_nb.save({"height_map": hm, "units": "km"}, tmp_path / f"h.{fmt}")


# --------------------------------------------------------------------------- a length for one axis only


@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    axis=st.sampled_from(["x", "y"]),
    length=st.floats(0.5, 1e3),
    unit=st.sampled_from(["mm", "um", "nm"]),
)
def test_a_length_given_for_one_axis_reaches_every_format(
    tmp_path: Path, rows: int, cols: int, axis: str, length: float, unit: str
) -> None:
    """X3P ignored the given length when the other axis had none (one unit per pixel on both axes)."""
    scan = {"height_map": np.zeros((rows, cols)), "units": unit, f"{axis}_length": length}
    per = units.metres_per(unit)
    # the axis without a length: one unit per pixel, as documented
    expected = (length * per, rows * per) if axis == "x" else (cols * per, length * per)
    np.testing.assert_allclose(x3p_lengths(tmd_nb.save(scan, tmp_path / "a.x3p"))[:2], expected, rtol=1e-12)
    np.testing.assert_allclose(gwy_lengths(tmd_nb.save(scan, tmp_path / "a.gwy"))[:2], expected, rtol=1e-12)
    in_mm = tmd_fields(tmd_nb.save(scan, tmp_path / "a.tmd"))[0][:2]
    np.testing.assert_allclose(np.multiply(in_mm, 1e-3), expected, rtol=1e-6)  # float32 millimetres


# ------------------------------------------------------------------ edits by other software over missing points


def gwy_edit(path: str, edit) -> None:
    container = gwyfile.load(path)
    edit(container)
    container.tofile(path)


def set_field(key: str, value: object):
    return lambda c: c["/0/data"].__setitem__(key, value)


def nudge_data(c) -> None:
    data = c["/0/data"].data.copy()
    data[0, 0] += 1e-9  # a measured point, not a missing one
    c["/0/data"]["data"] = data.reshape(-1)


def add_grain(c) -> None:
    mask = c["/0/mask"].data.copy()
    mask[2, 0] = 1.0
    c["/0/mask"]["data"] = mask.reshape(-1)


EDITS = {
    "rescale": set_field("xreal", 8e-6),
    "offset": set_field("yoff", -2e-6),
    "unit": set_field("si_unit_xy", GwySIUnit(unitstr="mm")),  # Gwyddion reads it as "m"
    "data": nudge_data,
    "grain": add_grain,
}


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("with_mask", [False, True])
def test_an_edit_in_gwyddion_leaves_missing_points_missing(tmp_path: Path, edit: str, with_mask: bool) -> None:
    """After any edit, the points tmd_nb filled (with the mean, masked) came back as heights, and the
    mask of the missing points as a user "mask": exported again, they were measurements."""
    hm = np.linspace(0.29, 0.31, 12, dtype=np.float32).reshape(3, 4)
    hm[1, 1] = hm[0, 3] = np.nan
    scan: dict = {"height_map": hm, "units": "um", "x_length": 4.0, "y_length": 3.0}
    user = np.zeros(hm.shape, dtype=bool)
    if with_mask:
        user[2, 2:] = True
        scan["mask"] = user
    out = tmd_nb.save(scan, tmp_path / "e.gwy")
    gwy_edit(out, EDITS[edit])
    with pytest.warns(UserWarning, match=r"e\.gwy'.*changed after tmd_nb wrote it"):
        back = tmd_nb.load(out)
    container = gwyfile.load(out)  # what the file holds now
    np.testing.assert_array_equal(np.isnan(back["height_map"]), np.isnan(hm))
    finite = ~np.isnan(hm)
    np.testing.assert_array_equal(back["height_map"][finite], container["/0/data"].data[finite])
    selection = user.copy()
    if edit == "grain":
        selection[2, 0] = True
    if selection.any():
        np.testing.assert_array_equal(back["mask"], selection)
    else:
        assert "mask" not in back
    for fmt in ("x3p", "tmd"):  # exported again, the missing points stay missing
        again = tmd_nb.load(tmd_nb.save({k: v for k, v in back.items() if k != "mask"}, tmp_path / f"again.{fmt}"))
        np.testing.assert_array_equal(np.isnan(again["height_map"]), np.isnan(hm))


# --------------------------------------------------------------------------- units as Gwyddion reads them


LENGTH_SPELLINGS = ["m", "mm", "um", "\u00b5m", "\u03bcm", "nm", "\u00c5", ANGSTROM_SIGN, "cm", "km", "pm", " nm "]


def foreign_gwy(path: Path, xy: str, z: str) -> Path:
    data = np.arange(12, dtype=np.float64).reshape(3, 4)
    field = GwyDataField(
        data, xreal=4.0, yreal=3.0, xoff=0.5, si_unit_xy=GwySIUnit(unitstr=xy), si_unit_z=GwySIUnit(unitstr=z)
    )
    GwyContainer({"/0/data": field}).tofile(str(path))
    return path


@pytest.mark.parametrize("unit", LENGTH_SPELLINGS)
def test_a_prefixed_length_unit_in_a_gwy_file_is_read_as_gwyddion_reads_it(tmp_path: Path, unit: str) -> None:
    """Gwyddion drops the prefix of a unit string and keeps the numbers (xreal 4 with "mm" is 4 m);
    tmd_nb read 4 mm, and wrote a 1000x smaller X3P and TMD from it."""
    back = tmd_nb.load(foreign_gwy(tmp_path / "f.gwy", unit, unit))
    assert (back["x_length"], back["x_offset"], back["lateral_unit"], back["height_unit"]) == (4.0, 0.5, "m", "m")
    x3p = x3pio.read(tmd_nb.save(back, tmp_path / "f.x3p"))
    assert float(x3p.header.x.increment) * 4 == 4.0 and x3p.layers[0].z[0, 1] == 1.0


@pytest.mark.parametrize("unit, base", [("mV", "V"), ("kHz", "Hz"), ("V", "V"), (" V ", "V"), ("deg", "deg"), ("", "")])
def test_a_prefixed_unit_of_another_quantity_is_its_base_unit(tmp_path: Path, unit: str, base: str) -> None:
    back = tmd_nb.load(foreign_gwy(tmp_path / "v.gwy", "m", unit))
    assert back["height_unit"] == base and back["height_map"][0, 1] == 1.0


def test_gwyddion_itself_reads_the_units_as_tmd_nb_does(tmp_path: Path) -> None:
    require(shutil.which("gwyddion") is not None, "Gwyddion is not installed (apt-get install gwyddion)")
    for i, unit in enumerate([*LENGTH_SPELLINGS, "mV", "kHz", " V "]):
        source = foreign_gwy(tmp_path / f"in{i}.gwy", unit if unit not in ("mV", "kHz", " V ") else "m", unit)
        peer = tmp_path / f"out{i}.gwy"
        subprocess.run(
            ["gwyddion", f"--convert-to-gwy={peer}", str(source)], check=True, capture_output=True, timeout=120
        )
        seen = gwyfile.load(str(peer))["/0/data"]  # what Gwyddion read
        ours = tmd_nb.load(source)
        assert (ours["x_length"], ours["x_offset"]) == (seen["xreal"], seen["xoff"]), unit
        assert ours["lateral_unit"] == seen["si_unit_xy"]["unitstr"], unit
        assert ours["height_unit"] == seen["si_unit_z"]["unitstr"], unit
        np.testing.assert_array_equal(ours["height_map"].reshape(-1), seen.data.reshape(-1))


def test_convert_of_a_folder_mixing_units_gives_every_file_its_own_size(tmp_path: Path) -> None:
    """One folder: a Gwyddion file from other software in "nm", a micrometre NPZ, a TMD, an X3P."""
    src = tmp_path / "src"
    src.mkdir()
    foreign_gwy(src / "g.gwy", "nm", "nm")  # 4 m wide as Gwyddion reads it
    tmd_nb.save({"height_map": np.ones((3, 4)), "units": "um", "x_length": 4.0, "y_length": 3.0}, src / "u.npz")
    tmd_nb.save({"height_map": np.ones((3, 4), np.float32), "x_length": 4.0, "y_length": 3.0}, src / "t.tmd")
    tmd_nb.save({"height_map": np.ones((3, 4)), "units": "nm", "x_length": 4.0, "y_length": 3.0}, src / "n.x3p")
    report = tmd_nb.convert(src, tmp_path / "out", format="x3p", jobs=1, progress=False)
    assert not report.failed, report.failed
    widths = {Path(source).stem: x3p_lengths(output)[0] for source, output in report.converted}
    assert widths == pytest.approx({"g": 4.0, "u": 4e-6, "t": 4e-3, "n": 4e-9}, rel=1e-12)


@pytest.mark.parametrize("holes", [False, True])
def test_a_mask_that_was_only_metadata_survives_an_edit(tmp_path: Path, holes: bool) -> None:
    """A "mask" of labels (uint8) is no channel mask; after a rescale in Gwyddion it was dropped."""
    hm = np.ones((3, 4))
    if holes:
        hm[0, 0] = np.nan
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = tmd_nb.save({"height_map": hm, "mask": labels, "k": 1}, tmp_path / "l.gwy")
    gwy_edit(out, set_field("xreal", 1.0))
    with pytest.warns(UserWarning, match=r"changed after tmd_nb wrote it"):
        back = tmd_nb.load(out)
    assert back["mask"].dtype == np.uint8 and (back["mask"] == labels).all() and back["k"] == 1
    np.testing.assert_array_equal(np.isnan(back["height_map"]), np.isnan(hm))


# --------------------------------------------------------------------------- the TrueMap fill


@pytest.mark.parametrize(
    "unit, value", [("um", -1e13), ("m", -1e7), ("nm", -1e16), ("um", -1.0000000001e13), ("cm", np.float32(-1e9))]
)
def test_a_height_converted_onto_the_fill_is_refused_not_written_as_missing(
    tmp_path: Path, unit: str, value: float
) -> None:
    """-1e13 um is -1e10 mm, TrueMap's fill: it was written and loaded back as a missing point."""
    out = tmp_path / "f.tmd"
    before = existing(out)
    with pytest.raises(ValueError, match=r"^height .* at index \(0, 1\) is TrueMap's fill value -1e10 in mm"):
        tmd_nb.save({"height_map": np.array([[1.0, value]]), "units": unit}, out)
    assert out.read_bytes() == before


def test_the_fill_in_millimetres_is_the_fill(tmp_path: Path) -> None:
    """A memory-mapped scan holds its own fill heights: written back, they stay the fill."""
    hm = np.array([[0.3, np.nan]], dtype=np.float32)
    first = tmd_nb.save({"height_map": hm, "x_length": 1.0, "y_length": 1.0}, tmp_path / "a.tmd")
    mapped = tmd_nb.load_tmd(first, mmap=True)
    second = tmd_nb.save(dict(mapped), tmp_path / "b.tmd")
    assert Path(first).read_bytes() == Path(second).read_bytes()
    assert np.isnan(tmd_nb.load(second)["height_map"][0, 1])


# --------------------------------------------------------------------------- a chain of conversions


def metres_by_reader(path: str) -> tuple[tuple[float, ...], np.ndarray]:
    """Sizes and heights in metres by the field's own reader (the ``.npz`` by numpy and json)."""
    suffix = Path(path).suffix
    if suffix == ".x3p":
        file = x3pio.read(path)
        z = np.asarray(file.layers[0].z, dtype=np.float64)
        return x3p_lengths(path), z + float(file.placement.offset[2])
    if suffix == ".gwy":
        container = gwyfile.load(path)
        data = container["/0/data"].data.copy()
        if "/0/mask" in container:
            data[container["/0/mask"].data > 0.5] = np.nan  # the filled points are no measurement
        return gwy_lengths(path), data
    if suffix == ".tmd":
        fields, heights = tmd_fields(path)
        values = np.where(heights.view("<u4") == 0xD01502F9, np.nan, heights.astype(np.float64))
        return tuple(v * 1e-3 for v in fields), values * 1e-3
    with np.load(path) as archive:
        meta = json.loads(str(archive["metadata"]))
        heights = archive["height_map"].astype(np.float64)
    powers = {"m": 0, "mm": -3, "um": -6, "nm": -9}
    lateral = 10.0 ** powers[meta.get("lateral_unit", meta.get("units", "mm"))]
    height = 10.0 ** powers[meta.get("height_unit", meta.get("units", "mm"))]
    sizes = tuple(meta.get(k, 0.0) * lateral for k in ("x_length", "y_length", "x_offset", "y_offset"))
    return sizes, heights * height


@given(
    unit=st.sampled_from(["m", "mm", "um", "nm"]),
    lengths=st.tuples(st.floats(0.5, 1e3), st.floats(0.5, 1e3)),
    offsets=st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 5)),
)
def test_a_chain_of_conversions_keeps_every_size_and_height_in_metres(
    tmp_path: Path, unit: str, lengths: tuple[float, float], offsets: tuple[float, float], seed: int, shape
) -> None:
    """npz -> x3p -> gwy -> tmd -> npz -> x3p through convert(), each file checked by its own reader."""
    rng = np.random.default_rng(seed)
    hm = rng.uniform(-500, 500, shape).astype(np.float32)
    hm[rng.random(shape) < 0.3] = np.nan
    scan = {"height_map": hm, "units": unit, "x_length": lengths[0], "y_length": lengths[1]}
    scan.update(x_offset=offsets[0], y_offset=offsets[1])
    per = 10.0 ** {"m": 0, "mm": -3, "um": -6, "nm": -9}[unit]
    expected = np.array([*lengths, *offsets]) * per
    previous = tmd_nb.save(scan, tmp_path / "s0" / "scan.npz")
    for step, fmt in enumerate(["x3p", "gwy", "tmd", "npz", "x3p"], start=1):
        report = tmd_nb.convert(previous, tmp_path / f"s{step}", format=fmt, overwrite=True, jobs=1, progress=False)
        assert not report.failed, report.failed
        previous = report.converted[0][1]
        sizes, heights = metres_by_reader(previous)
        rel = 1e-6 if step >= 3 else 1e-12  # float32 millimetres from the .tmd on
        np.testing.assert_allclose(sizes, expected, rtol=rel, atol=1e-30, err_msg=f"{fmt} at step {step}")
        np.testing.assert_allclose(
            heights, hm.astype(np.float64) * per, rtol=rel, atol=1e-30, err_msg=f"{fmt} at step {step}"
        )


# --------------------------------------------------------------------------- any text as a unit


@given(text=st.text(max_size=6), key=st.sampled_from(["units", "lateral_unit", "height_unit"]))
def test_any_text_as_a_unit_is_a_known_length_or_a_value_error_naming_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    out = tmp_path / "any.x3p"
    before = existing(out)
    scan = {"height_map": np.ones((2, 2)), "x_length": 2.0, "y_length": 2.0, key: text}
    known = unicodedata.normalize("NFKC", text).strip() in units.LENGTHS
    if known:
        tmd_nb.save(scan, out)
        per = units.LENGTHS[unicodedata.normalize("NFKC", text).strip()]
        lateral = per if key != "height_unit" else 1e-3
        assert x3p_lengths(str(out))[0] == pytest.approx(2.0 * lateral, rel=1e-15)
    else:
        with pytest.raises(ValueError, match=rf"^{key} .* is not a length unit tmd_nb knows"):
            tmd_nb.save(scan, out)
        assert out.read_bytes() == before


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_missing_points_are_filled_within_the_range_even_near_float64s_limit(tmp_path: Path, sign: float) -> None:
    """The mean of 1e308 and 1.7e308 overflowed: the missing point was written as an infinite height."""
    hm = sign * np.array([[1e308, 1.7e308, np.nan]])
    container = gwyfile.load(tmd_nb.save({"height_map": hm, "units": "m"}, tmp_path / "big.gwy"))
    data = container["/0/data"].data
    assert np.isfinite(data).all() and min(hm[0, :2]) <= data[0, 2] <= max(hm[0, :2])
    assert (container["/0/mask"].data > 0.5).tolist() == [[False, False, True]]


@pytest.mark.parametrize("shape", [(0, 3), (2, 0)])
def test_an_empty_map_with_a_mask_is_a_readable_gwy_file(tmp_path: Path, shape: tuple[int, int]) -> None:
    """The mask of an empty map became an empty /0/mask beside the one-point grid: a file nothing reads."""
    scan = {"height_map": np.zeros(shape), "mask": np.zeros(shape, dtype=bool)}
    out = tmd_nb.save(scan, tmp_path / "e.gwy")
    container = gwyfile.load(out)
    assert container["/0/mask"].data.shape == container["/0/data"].data.shape == (1, 1)
    back = tmd_nb.load(out)
    assert back["height_map"].shape == shape and back["mask"].shape == shape and back["mask"].dtype == np.bool_


@given(
    seed=st.integers(0, 2**16),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    holes=st.floats(0.0, 1.0),
    with_mask=st.booleans(),
    edit=st.sampled_from(sorted(set(EDITS) - {"grain"})),
)
def test_after_any_edit_the_missing_points_and_the_mask_stay_apart(
    tmp_path: Path, seed: int, shape: tuple[int, int], holes: float, with_mask: bool, edit: str
) -> None:
    """Where the user's mask and a missing point coincide, the file's one mask cannot tell them apart."""
    rng = np.random.default_rng(seed)
    hm = rng.uniform(-1, 1, shape)
    hm[rng.random(shape) < holes] = np.nan
    scan: dict = {"height_map": hm, "x_length": 1.0, "y_length": 1.0}
    user = rng.random(shape) < 0.3
    if with_mask:
        scan["mask"] = user
    out = tmd_nb.save(scan, tmp_path / "p.gwy")
    gwy_edit(out, EDITS[edit])
    with pytest.warns(UserWarning, match=r"changed after tmd_nb wrote it"):
        back = tmd_nb.load(out)
    np.testing.assert_array_equal(np.isnan(back["height_map"]), np.isnan(hm))
    if with_mask:
        np.testing.assert_array_equal(back["mask"], user)
    else:
        assert "mask" not in back


def test_a_length_too_small_for_float32_millimetres_is_refused_not_written_as_zero(tmp_path: Path) -> None:
    """1e-300 m is 1e-297 mm, which float32 rounds to 0: the .tmd file said the scan had no width."""
    out = tmp_path / "t.tmd"
    before = existing(out)
    scan = {"height_map": np.ones((2, 3)), "units": "m", "x_length": 1e-300, "y_length": 1.0}
    with pytest.raises(ValueError, match=r"^x_length 1e-300 m is too small for a \.tmd file: it rounds to 0 mm"):
        tmd_nb.save(scan, out)
    assert out.read_bytes() == before
    tiny = tmd_nb.load(tmd_nb.save({**scan, "x_length": 2e-45}, out))  # a float32 subnormal: kept, rounded
    assert tiny["x_length"] > 0


@pytest.mark.parametrize("fmt", ["x3p", "gwy"])
def test_a_length_that_underflows_in_metres_is_refused(tmp_path: Path, fmt: str) -> None:
    """5e-324 pm is 0 m: Gwyddion's file said the scan had no width (xreal 0)."""
    scan = {"height_map": np.ones((2, 3)), "units": "pm", "x_length": 5e-324, "y_length": 1.0}
    with pytest.raises(ValueError, match=r"^x_length 5e-324 pm is too small for float64 in SI units"):
        tmd_nb.save(scan, tmp_path / f"t.{fmt}")
