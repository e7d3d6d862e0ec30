"""The public NPY/NPZ API: exact round trips, typed metadata, interoperability, clear errors."""

from __future__ import annotations

import collections
import datetime as dt
import enum
import json
import os
import pathlib
import warnings
import zoneinfo

import numpy as np
import pytest
from helpers import assert_identical, height_maps, metadata_dicts, metadata_values
from hypothesis import given, settings
from hypothesis import strategies as st

import tmd_nb
from tmd_nb import FormatError, MetadataNotStoredWarning, export_to_npy, export_to_npz, load_from_npy, load_from_npz
from tmd_nb.storage.metadata import MAX_DEPTH

# Each example of a file round trip writes and fsyncs a file (about 0.1 s with metadata): this one
# runs a quarter of the profile's examples, so that the thorough profile stays within its time in
# CI; the metadata codec itself runs the full count without files (the last test of this module,
# and test_hostile's round trip of every value export accepts).
QUARTER = settings(max_examples=max(1, settings.default.max_examples // 4))


def surface(shape=(40, 30), dtype=np.float32) -> np.ndarray:
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (np.sin(x / 5.0) * np.cos(y / 7.0)).astype(dtype)


# --- round trips --------------------------------------------------------------------------------


@given(hm=height_maps, compress=st.booleans())
def test_npz_round_trip_keeps_dtype_shape_and_bits(tmp_path, hm, compress):
    path = export_to_npz({"height_map": hm}, tmp_path / "a.npz", compress=compress)
    back = load_from_npz(path)
    assert list(back) == ["height_map"]
    assert_identical(hm, back["height_map"])


@given(hm=height_maps)
def test_npy_round_trip_keeps_dtype_shape_and_bits(tmp_path, hm):
    path = export_to_npy(hm, tmp_path / "a.npy")
    assert_identical(hm, load_from_npy(path))
    assert_identical(hm, np.load(path, allow_pickle=False))


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a,
        lambda a: np.asfortranarray(a),
        lambda a: a[::2, ::3],
        lambda a: a.T,
        lambda a: a[::-1, 1:],
        lambda a: a.astype(">f8"),
    ],
    ids=["C", "F", "strided", "transposed", "reversed", "big-endian"],
)
@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_memory_layouts_round_trip(tmp_path, make, fmt):
    hm = make(surface((20, 18)))
    if fmt == "npy":
        back = load_from_npy(export_to_npy(hm, tmp_path / "a.npy"))
    else:
        back = load_from_npz(export_to_npz({"height_map": hm}, tmp_path / "a.npz"))["height_map"]
    assert back.shape == hm.shape and back.dtype.str == hm.dtype.str
    assert np.array_equal(back, hm)


def test_special_floats_keep_their_bits(tmp_path):
    hm = np.array([[np.nan, np.inf, -np.inf], [-0.0, 0.0, 5e-324]], dtype=np.float64)
    hm.view(np.uint64)[0, 0] = 0x7FF8_0000_DEAD_BEEF  # a NaN with a payload
    for back in (
        load_from_npz(export_to_npz({"height_map": hm}, tmp_path / "a.npz"))["height_map"],
        load_from_npy(export_to_npy(hm, tmp_path / "a.npy")),
    ):
        assert back.tobytes() == hm.tobytes()


@QUARTER
@given(meta=metadata_dicts)
def test_metadata_round_trips_with_types(tmp_path, meta):
    data = {"height_map": surface((3, 4)), **meta}
    back = load_from_npz(export_to_npz(data, tmp_path / "m.npz"))
    assert_identical(data, back)


SUPPORTED_VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    10**4000,
    -(7**6000),
    1.5,
    float("nan"),
    float("inf"),
    -float("inf"),
    -0.0,
    1 + 2j,
    complex(float("nan"), -0.0),
    "",
    "héllo \U0001f600 \x00 \ud800",
    b"\x00\xff",
    [],
    (),
    {},
    [1, (2, [3])],
    {"a": {"b": None}},
    {"__tmd_type__": "int", "hex": "0x10"},
    {"__tmd_type__": {"__tmd_type__": 1}},
    dt.datetime(2024, 3, 1, 12, 30, 1, 5),
    dt.datetime(2024, 3, 1, tzinfo=dt.UTC),
    dt.datetime(2024, 3, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30))),
    dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.date(1, 1, 1),
    dt.time(23, 59, 59, 999999),
    dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=9))),
    dt.timedelta(days=-3, microseconds=7),
    pathlib.Path("/data/scan 1.tmd"),
    pathlib.PurePosixPath("a/b"),
    pathlib.PureWindowsPath(r"C:\scans\x.tmd"),
    np.float32(1.5),
    np.float16(-0.0),
    np.longdouble(1) / 3,
    np.int8(-7),
    np.uint64(2**64 - 1),
    np.bool_(True),
    np.complex64(1 - 1j),
    np.datetime64("2024-01-01T12:00", "ms"),
    np.timedelta64(3, "h"),
    np.str_("é"),
    np.bytes_(b"ab"),
    np.arange(6, dtype=">i2").reshape(2, 3),
    np.array(["a", "bé"]),
    np.array([b"x"]),
    np.zeros((0, 3)),
    np.array(3.5),
    np.array(["2024-01-01"], dtype="M8[D]"),
]


@pytest.mark.parametrize(
    "value", SUPPORTED_VALUES, ids=[f"{i}-{type(v).__name__}" for i, v in enumerate(SUPPORTED_VALUES)]
)
def test_each_supported_type_round_trips(tmp_path, value):
    data = {"height_map": surface((2, 2)), "v": value, "nested": [{"deep": value}]}
    assert_identical(data, load_from_npz(export_to_npz(data, tmp_path / "v.npz")))


def test_zoneinfo_comes_back_as_the_same_zone(tmp_path):
    when = dt.datetime(2025, 7, 1, 9, 0, tzinfo=zoneinfo.ZoneInfo("America/New_York"))
    back = load_from_npz(export_to_npz({"height_map": surface(), "t": when}, tmp_path / "z.npz"))["t"]
    assert back == when and back.tzinfo is zoneinfo.ZoneInfo("America/New_York")


def test_nesting_100_levels_works_and_deeper_is_a_clear_error(tmp_path):
    deep: object = "leaf"
    for i in range(100):
        deep = [deep] if i % 2 else {"k": deep}
    data = {"height_map": surface(), "deep": deep}
    assert_identical(data, load_from_npz(export_to_npz(data, tmp_path / "d.npz")))
    for _ in range(MAX_DEPTH):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than"):
        export_to_npz({"height_map": surface(), "deep": deep}, tmp_path / "too_deep.npz")
    assert not (tmp_path / "too_deep.npz").exists()


def test_any_str_key_works_including_metadata_and_reserved_member_names(tmp_path):
    data = {
        "height_map": surface(),
        "metadata": np.arange(3),
        "__tmd_nb_format__": "mine",
        "__array_0__": np.ones(2),
        "mask": np.zeros((40, 30), bool),
        "with/slash": np.eye(2),
        "": "empty key",
        "é": 1,
    }
    assert_identical(data, load_from_npz(export_to_npz(data, tmp_path / "k.npz")))


def test_extra_arrays_are_real_arrays_in_the_archive(tmp_path):
    mask = surface() > 0
    x = np.linspace(0, 1, 30)
    path = export_to_npz(
        {"height_map": surface(), "mask": mask, "x": x, "calib": {"table": np.eye(3)}}, tmp_path / "a.npz"
    )
    with np.load(path) as npz:
        assert npz["mask"].dtype == bool and np.array_equal(npz["mask"], mask)
        assert np.array_equal(npz["x"], x)
        meta = json.loads(str(npz["metadata"]))
        member = meta["calib"]["table"]["member"]
        assert np.array_equal(npz[member], np.eye(3))


# --- interoperability -------------------------------------------------------------------------


def test_plain_numpy_and_json_read_native_values_as_themselves(tmp_path):
    native = {
        "units": "µm",
        "x_length": 18.9566,
        "count": 2**53,
        "ok": True,
        "none": None,
        "list": [1, "two", 3.0, [None]],
        "dict": {"a": {"b": [False]}},
    }
    typed = {"when": dt.datetime(2024, 1, 2, 3, 4, 5), "big": 2**53 + 1, "nan": float("nan"), "t": (1, 2)}
    path = export_to_npz({"height_map": surface(), **native, **typed}, tmp_path / "i.npz")
    with np.load(path) as npz:  # allow_pickle is off by default
        assert np.array_equal(npz["height_map"], surface())
        meta = json.loads(str(npz["metadata"]))
    for key, value in native.items():
        assert meta[key] == value and type(meta[key]) is type(value)
    assert set(meta) == set(native) | set(typed)
    assert all(isinstance(meta[k], dict) and "__tmd_type__" in meta[k] for k in typed)


def test_a_user_dict_that_looks_like_a_tag_round_trips(tmp_path):
    fake = {"__tmd_type__": "datetime", "value": "2024-01-01T00:00:00", "tz": None}
    back = load_from_npz(export_to_npz({"height_map": surface(), "fake": fake}, tmp_path / "f.npz"))
    assert back["fake"] == fake and type(back["fake"]) is dict


def test_tmd_toolkit_files_load(tmp_path):
    meta = {"x_length": 18.9566, "y_length": 18.9566, "comment": "Created by TrueMap v6", "width": 30}
    path = tmp_path / "toolkit.npz"
    np.savez_compressed(path, height_map=surface(), metadata=np.array(json.dumps(meta)))
    back = load_from_npz(path)
    assert_identical({"height_map": surface(), **meta}, back)


def test_plain_savez_files_load_with_their_other_members(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, height_map=surface((5, 6), np.float64), x=np.arange(6), y=np.arange(5.0))
    back = load_from_npz(path)
    assert list(back) == ["height_map", "x", "y"]
    assert back["height_map"].dtype == np.float64 and np.array_equal(back["height_map"], surface((5, 6), np.float64))
    assert np.array_equal(back["x"], np.arange(6))


def test_load_picks_the_reader_by_content(tmp_path):
    npz = export_to_npz({"height_map": surface(), "units": "mm"}, tmp_path / "scan.data")
    npy = export_to_npy(surface(), tmp_path / "scan.npz")  # misleading extension
    assert tmd_nb.load(npz)["units"] == "mm"
    assert np.array_equal(tmd_nb.load(npy)["height_map"], surface())
    (tmp_path / "junk.npz").write_bytes(b"hello world")
    with pytest.raises(FormatError, match="junk.npz"):
        tmd_nb.load(tmp_path / "junk.npz")


# --- paths and return values ------------------------------------------------------------------


def test_writes_exactly_the_given_path_and_returns_it_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for writer, name in ((export_to_npz, "noext"), (export_to_npy, "noext2"), (export_to_npz, "a.npy.npz")):
        out = writer({"height_map": surface()}, name)
        assert out == str(tmp_path / name) and os.path.isabs(out)
        assert (tmp_path / name).is_file()
    assert sorted(os.listdir(tmp_path)) == ["a.npy.npz", "noext", "noext2"]


def test_npy_warns_that_metadata_is_not_stored(tmp_path):
    with pytest.warns(MetadataNotStoredWarning, match="units"):
        export_to_npy({"height_map": surface(), "units": "mm"}, tmp_path / "a.npy")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_to_npy({"height_map": surface()}, tmp_path / "b.npy")
        export_to_npy(surface(), tmp_path / "c.npy")


def test_npy_mmap_is_read_only(tmp_path):
    path = export_to_npy(surface(), tmp_path / "a.npy")
    arr = load_from_npy(path, mmap=True)
    assert isinstance(arr, np.memmap) and not arr.flags.writeable
    assert np.array_equal(arr, surface())
    # and such a memory map exports again without trouble
    assert np.array_equal(load_from_npz(export_to_npz({"height_map": arr}, tmp_path / "m.npz"))["height_map"], arr)


def test_npy_that_is_not_2d_is_refused_from_its_header_before_reading_data(tmp_path, monkeypatch):
    np.save(tmp_path / "cube.npy", np.zeros((40, 40, 40)))
    from tmd_nb.storage import npyfile as npy

    def must_not_read(*args, **kwargs):
        raise AssertionError("data was read before the header was checked")

    monkeypatch.setattr(npy, "read_into", must_not_read)
    with pytest.raises(FormatError, match=r"cube.npy.*3-D"):
        load_from_npy(tmp_path / "cube.npy")


def test_npy_that_is_not_2d_is_a_format_error(tmp_path):
    for i, arr in enumerate((np.arange(5), np.zeros((2, 2, 2)), np.array(1.0), np.array([["a"]]))):
        np.save(tmp_path / f"{i}.npy", arr)
        with pytest.raises(FormatError, match=f"{i}.npy"):
            load_from_npy(tmp_path / f"{i}.npy")


# --- refusing what cannot be stored -------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


Point = collections.namedtuple("Point", "x y")


class MyStr(str):
    pass


@pytest.mark.parametrize(
    "value, type_name",
    [
        (object(), "object"),
        (collections.OrderedDict(a=1), "OrderedDict"),
        (Color.RED, "Color"),
        (Point(1, 2), "Point"),
        (MyStr("x"), "MyStr"),
        (collections.defaultdict(int), "defaultdict"),
        ({1, 2}, "set"),
        (np.array([object()], dtype=object), "dtype object"),
        (np.void(b"ab"), "void"),
        (np.zeros(2, dtype=[("a", "i4")]), "dtype"),
        (bytearray(b"x"), "bytearray"),
        (dt.UTC, "timezone"),
    ],
)
def test_unsupported_values_raise_type_error_naming_key_path_and_type(tmp_path, value, type_name):
    target = tmp_path / "sub" / "x.npz"
    with pytest.raises(TypeError, match=r"\['outer'\]\[0\]\['bad'\]") as info:
        export_to_npz({"height_map": surface(), "outer": [{"bad": value}]}, target)
    assert type_name in str(info.value)
    assert not (tmp_path / "sub").exists(), "parent directory created before validation passed"


def test_non_str_keys_are_refused(tmp_path):
    with pytest.raises(TypeError, match="key 1 of type int"):
        export_to_npz({"height_map": surface(), "d": {1: "x"}}, tmp_path / "a.npz")
    with pytest.raises(TypeError, match="key 2"):
        export_to_npz({"height_map": surface(), 2: "x"}, tmp_path / "a.npz")
    assert not (tmp_path / "a.npz").exists()


@pytest.mark.parametrize(
    "hm, error, match",
    [
        (np.array(1.0), ValueError, "must be 2-D.*0-D"),
        (np.arange(4.0), ValueError, "must be 2-D.*1-D"),
        (np.zeros((2, 2, 2)), ValueError, "must be 2-D.*3-D"),
        (np.array([["a"]]), TypeError, "dtype <U1"),
        (np.zeros((2, 2), dtype="M8[s]"), TypeError, "dtype datetime64"),
        (np.zeros((2, 2), dtype=object), TypeError, "dtype object"),
        ([[1.0, 2.0]], TypeError, "list"),
        (np.ma.masked_array(np.zeros((2, 2))), TypeError, "masked array"),
    ],
)
def test_bad_height_maps_are_clear_errors(tmp_path, hm, error, match):
    for writer, name in ((export_to_npz, "a.npz"), (export_to_npy, "a.npy")):
        with pytest.raises(error, match=match):
            writer({"height_map": hm}, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_missing_height_map_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no 'height_map' entry.*'units'"):
        export_to_npz({"units": "mm"}, tmp_path / "a.npz")
    with pytest.raises(TypeError, match="2-D numpy array"):
        export_to_npz("not a dict", tmp_path / "a.npz")


def test_failed_validation_leaves_an_existing_file_untouched(tmp_path):
    path = export_to_npz({"height_map": surface(), "v": 1}, tmp_path / "keep.npz")
    before = pathlib.Path(path).read_bytes()
    with pytest.raises(TypeError):
        export_to_npz({"height_map": surface(), "v": object()}, path)
    assert pathlib.Path(path).read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.npz"]


@given(value=metadata_values)
def test_metadata_values_never_change_type_silently(value):
    from tmd_nb.storage.metadata import decode, encode

    encoded, arrays = encode({"v": value})
    json_text = json.dumps(encoded, allow_nan=False)
    assert_identical({"v": value}, decode(json.loads(json_text), arrays))
