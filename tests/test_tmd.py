"""Tests of the ``.tmd`` reader and writer (tmd_nb.formats.tmd) and of content-based dispatch in tmd_nb.load.

Synthetic files are written byte by byte with ``struct`` here, independently of export_to_tmd,
so that reader and writer are each checked against the layout rather than against each other.
"""

from __future__ import annotations

import itertools
import math
import os
import struct
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tmd_nb
from tmd_nb.errors import FormatError, MetadataNotStoredWarning
from tmd_nb.formats import tmd

V2_HEADER = b"Binary TrueMap Data File v2.0\r\n\0"
V1_HEADER = b"Binary TrueMap Data File\r\n\0"
TRUEMAP_V6 = "Created by TrueMap v6\r\n"

# The README table of shared/data/tmd: file -> (version, width, height, x_length, y_length, comment).
SAMPLES = {
    "v1_Dime.tmd": (1, 300, 300, 18.9566, 18.9566, ""),
    "v1_StepHeight.tmd": (1, 466, 429, 0.489591, 0.450044, ""),
    "v2_Dime.tmd": (2, 300, 300, 18.9566, 18.9566, TRUEMAP_V6),
    "v2_StepHeight.tmd": (2, 466, 429, 0.489591, 0.450044, TRUEMAP_V6),
    "v2_Surface.tmd": (2, 169, 169, 2.52, 2.52, TRUEMAP_V6),
    "v2_Vickers Indentation.tmd": (2, 400, 400, 0.0272936, 0.0272936, "Created by Truemap v6\r\n"),
}


def tmd_bytes(
    width: int,
    height: int,
    data: bytes | np.ndarray | None = None,
    *,
    header: bytes = V2_HEADER,
    comment: bytes = b"",
    lengths: tuple[float, float] = (1.0, 2.0),
    offsets: tuple[float, float] | None = (0.5, -0.25),
) -> bytes:
    """A .tmd file assembled by hand; ``offsets=None`` leaves them out (v1 layout)."""
    if data is None:
        data = np.arange(width * height, dtype="<f4")
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data, dtype="<f4").tobytes()
    out = header + comment + b"\0" + struct.pack("<II", width, height) + struct.pack("<ff", *lengths)
    if offsets is not None:
        out += struct.pack("<ff", *offsets)
    return out + data


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def f32(x: float) -> float:
    return float(np.float32(x))


# --------------------------------------------------------------------------- real scans


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_real_scan_loads_as_the_readme_says(tmd_samples: Path, name: str) -> None:
    version, width, height, x_length, y_length, comment = SAMPLES[name]
    path = tmd_samples / name
    d = tmd.load_tmd(path)
    assert set(d) == {
        "height_map",
        "x_length",
        "y_length",
        "x_offset",
        "y_offset",
        "lateral_unit",
        "height_unit",
        "comment",
        "tmd_version",
    }
    assert (d["lateral_unit"], d["height_unit"]) == ("mm", "mm")  # the unit the file holds
    hm = d["height_map"]
    assert type(hm) is np.ndarray and hm.dtype == np.float32 and hm.shape == (height, width)
    assert d["tmd_version"] == version
    assert d["x_length"] == pytest.approx(x_length, rel=2e-6) and d["y_length"] == pytest.approx(y_length, rel=2e-6)
    assert (d["x_offset"], d["y_offset"]) == (0.0, 0.0)
    assert d["comment"] == comment
    for key in ("x_length", "y_length", "x_offset", "y_offset"):
        assert type(d[key]) is float and f32(d[key]) == d[key], key  # exactly a float32 value
    # The heights are where the layout says: the last width*height*4 bytes of the file.
    raw = path.read_bytes()
    assert hm.tobytes() == raw[len(raw) - 4 * width * height :]
    assert np.isfinite(hm).any() and float(np.nanmax(hm)) > float(np.nanmin(hm))  # a real surface, not zeros


def test_every_sample_file_is_in_the_table(tmd_samples: Path) -> None:
    assert {p.name for p in tmd_samples.glob("*.tmd")} == set(SAMPLES)


@pytest.mark.parametrize("stem", ["Dime", "StepHeight"])
def test_v1_and_v2_files_of_a_scan_hold_identical_heights(tmd_samples: Path, stem: str) -> None:
    v1 = tmd.load_tmd(tmd_samples / f"v1_{stem}.tmd")
    v2 = tmd.load_tmd(tmd_samples / f"v2_{stem}.tmd")
    assert v1["height_map"].tobytes() == v2["height_map"].tobytes()
    assert (v1["x_length"], v1["y_length"]) == (v2["x_length"], v2["y_length"])


@pytest.mark.parametrize("name", sorted(n for n in SAMPLES if n.startswith("v2_")))
def test_reexporting_a_real_v2_scan_reproduces_its_bytes(tmd_samples: Path, tmp_path: Path, name: str) -> None:
    original = (tmd_samples / name).read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loaded dict re-exports without "metadata not stored" noise
        out = tmd.export_to_tmd(tmd.load_tmd(tmd_samples / name), tmp_path / "copy.tmd")
    written = Path(out).read_bytes()
    assert len(written) == len(original)
    if original.startswith(V2_HEADER):
        assert written == original
    else:
        # The writer spells the header canonically ("TrueMap"); Vickers has "Truemap". Only that differs.
        assert original[:32].lower() == V2_HEADER.lower() and original[:32] != V2_HEADER
        assert written[:32] == V2_HEADER and written[32:] == original[32:]


def test_v1_scan_exported_with_the_v2_comment_is_the_v2_file(tmd_samples: Path, tmp_path: Path) -> None:
    d = tmd.load_tmd(tmd_samples / "v1_Dime.tmd")
    d["comment"] = TRUEMAP_V6
    out = tmd.export_to_tmd(d, tmp_path / "dime.tmd")
    assert Path(out).read_bytes() == (tmd_samples / "v2_Dime.tmd").read_bytes()


@pytest.mark.parametrize("name", ["v1_StepHeight.tmd", "v2_Vickers Indentation.tmd"])
def test_loaded_scan_survives_npz_unchanged(tmd_samples: Path, tmp_path: Path, name: str) -> None:
    d = tmd.load_tmd(tmd_samples / name)
    back = tmd_nb.load_from_npz(tmd_nb.export_to_npz(d, tmp_path / "scan.npz"))
    assert_same_scan(d, back)


def assert_same_scan(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    assert a["height_map"].dtype == b["height_map"].dtype and a["height_map"].shape == b["height_map"].shape
    assert a["height_map"].tobytes() == b["height_map"].tobytes()
    for key in set(a) - {"height_map"}:
        assert type(a[key]) is type(b[key]), key
        if isinstance(a[key], float):
            assert struct.pack("<d", a[key]) == struct.pack("<d", b[key]) or (math.isnan(a[key]) and math.isnan(b[key]))
        else:
            assert a[key] == b[key], key


def test_mmap_gives_the_same_heights(tmd_samples: Path) -> None:
    path = tmd_samples / "v2_Surface.tmd"
    mapped = tmd.load_tmd(path, mmap=True)
    plain = tmd.load_tmd(path)
    assert isinstance(mapped["height_map"], np.memmap) and not mapped["height_map"].flags.writeable
    assert mapped["height_map"].tobytes() == plain["height_map"].tobytes()
    assert {k: v for k, v in mapped.items() if k != "height_map"} == {
        k: v for k, v in plain.items() if k != "height_map"
    }


def test_progress_reports_the_data_bytes(tmd_samples: Path) -> None:
    calls: list[tuple[int, int]] = []
    tmd.load_tmd(tmd_samples / "v2_Surface.tmd", progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (169 * 169 * 4, 169 * 169 * 4)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))


# --------------------------------------------------------------------------- every variant, hand-made


def test_v2_file(tmp_path: Path) -> None:
    hm = np.array([[1.5, -2.0, np.nan], [np.inf, -0.0, 1e-45]], dtype="<f4")
    path = write(tmp_path / "a.tmd", tmd_bytes(3, 2, hm, comment=b"hello\r\n", lengths=(0.1, 0.2), offsets=(3.0, -4.5)))
    d = tmd.load_tmd(path)
    assert d["height_map"].shape == (2, 3) and d["height_map"].tobytes() == hm.tobytes()
    assert (d["x_length"], d["y_length"], d["x_offset"], d["y_offset"]) == (f32(0.1), f32(0.2), 3.0, -4.5)
    assert d["comment"] == "hello\r\n" and d["tmd_version"] == 2


def test_v1_file_has_no_offsets(tmp_path: Path) -> None:
    content = tmd_bytes(2, 3, header=V1_HEADER, offsets=None, lengths=(5.0, 7.0))
    assert content.index(struct.pack("<II", 2, 3)) == 28  # header 27 bytes + empty comment's NUL
    d = tmd.load_tmd(write(tmp_path / "old.tmd", content))
    assert d["tmd_version"] == 1 and (d["x_offset"], d["y_offset"]) == (0.0, 0.0)
    assert (d["x_length"], d["y_length"]) == (5.0, 7.0)
    assert np.array_equal(d["height_map"], np.arange(6, dtype=np.float32).reshape(3, 2))


def test_v1_file_with_a_comment(tmp_path: Path) -> None:
    d = tmd.load_tmd(write(tmp_path / "c.tmd", tmd_bytes(1, 1, header=V1_HEADER, offsets=None, comment=b"note")))
    assert d["comment"] == "note" and d["tmd_version"] == 1


def test_gelsight_empty_comment_puts_dimensions_at_byte_33(tmp_path: Path) -> None:
    content = tmd_bytes(4, 2, comment=b"", offsets=(1.0, 2.0))
    assert content[32] == 0 and content[33:41] == struct.pack("<II", 4, 2)
    d = tmd.load_tmd(write(tmp_path / "gelsight.tmd", content))
    assert d["comment"] == "" and d["height_map"].shape == (2, 4) and (d["x_offset"], d["y_offset"]) == (1.0, 2.0)


@pytest.mark.parametrize(
    "header",
    [b"Binary Truemap Data File v2.0\r\n\0", b"BINARY TRUEMAP DATA FILE V2.0\r\n\0", b"binary truemap data file\r\n\0"],
)
def test_header_letter_case_does_not_matter(tmp_path: Path, header: bytes) -> None:
    v1 = b"v2.0" not in header.lower()
    content = tmd_bytes(2, 2, header=header, offsets=None if v1 else (0.0, 0.0), comment=b"Created by Truemap v6\r\n")
    d = tmd.load_tmd(write(tmp_path / "case.tmd", content))
    assert d["tmd_version"] == (1 if v1 else 2) and d["height_map"].shape == (2, 2)


def test_long_and_non_ascii_comments(tmp_path: Path) -> None:
    long = b"x" * 200_000  # longer than the reader's first read of the head
    d = tmd.load_tmd(write(tmp_path / "long.tmd", tmd_bytes(2, 2, comment=long)))
    assert d["comment"] == long.decode() and d["height_map"].shape == (2, 2)
    d = tmd.load_tmd(write(tmp_path / "latin.tmd", tmd_bytes(1, 1, comment=b"5 \xb5m")))
    assert d["comment"] == "5 \u00b5m"  # Latin-1: no byte is ever refused or lost


def test_non_finite_lengths_are_reported_as_read_and_survive_npz(tmp_path: Path) -> None:
    path = write(tmp_path / "nan.tmd", tmd_bytes(1, 2, lengths=(math.nan, math.inf), offsets=(-math.inf, 0.0)))
    d = tmd.load_tmd(path)
    assert math.isnan(d["x_length"]) and d["y_length"] == math.inf and d["x_offset"] == -math.inf
    assert_same_scan(d, tmd_nb.load_from_npz(tmd_nb.export_to_npz(d, tmp_path / "nan.npz")))


def test_looks_like_tmd() -> None:
    assert tmd.looks_like_tmd(V2_HEADER) and tmd.looks_like_tmd(V1_HEADER[:24])
    assert tmd.looks_like_tmd(b"binary TRUEMAP data file v2.0\r\n\0Created")
    assert tmd.looks_like_tmd(bytearray(V2_HEADER)) and tmd.looks_like_tmd(memoryview(V2_HEADER))
    assert not tmd.looks_like_tmd(b"Binary TrueMap Data Fil")  # too short to tell
    assert (
        not tmd.looks_like_tmd(b"") and not tmd.looks_like_tmd(b"\x93NUMPY") and not tmd.looks_like_tmd(b"PK\x03\x04")
    )
    assert not tmd.looks_like_tmd(b" Binary TrueMap Data File")


# --------------------------------------------------------------------------- bad files


def expect_format_error(path: Path, *words: str) -> FormatError:
    with pytest.raises(FormatError) as info:
        tmd.load_tmd(path)
    message = str(info.value)
    assert repr(str(path)) in message, message
    message = message.replace(repr(str(path)), "<path>")  # tmp_path names hold the test's name
    for word in words:
        assert word in message, message
    return info.value


def test_wrong_magic(tmp_path: Path) -> None:
    expect_format_error(write(tmp_path / "x.tmd", b"Binary TrueMup Data File v2.0\r\n\0" + b"\0" * 40), "not a TrueMap")
    expect_format_error(write(tmp_path / "y.tmd", b"\x93NUMPY\x01\x00"), "not a TrueMap")


def test_empty_file(tmp_path: Path) -> None:
    expect_format_error(write(tmp_path / "empty.tmd", b""), "empty")


def test_directory_and_missing_file_keep_their_os_errors(tmp_path: Path) -> None:
    (tmp_path / "dir.tmd").mkdir()
    with pytest.raises(IsADirectoryError):
        tmd.load_tmd(tmp_path / "dir.tmd")
    with pytest.raises(FileNotFoundError):
        tmd.load_tmd(tmp_path / "missing.tmd")


def test_unsupported_version_and_unterminated_header(tmp_path: Path) -> None:
    content = tmd_bytes(1, 1, header=b"Binary TrueMap Data File v3.0\r\n\0")
    expect_format_error(write(tmp_path / "v3.tmd", content), "unsupported version", "v3.0")
    expect_format_error(write(tmp_path / "nonul.tmd", b"Binary TrueMap Data File" + b"!" * 100), "header", "NUL")


@pytest.mark.parametrize("cut", [10, 31, 32, 40, 50, 56, 70, 79, 80, 85, -1])
def test_truncated_anywhere(tmp_path: Path, cut: int) -> None:
    content = tmd_bytes(2, 3, comment=b"Created by TrueMap v6\r\n")  # dims at 56, data at 80, 104 bytes
    assert len(content) == 104
    expect_format_error(write(tmp_path / "cut.tmd", content[:cut]), "truncated")


def test_extra_bytes_after_the_data(tmp_path: Path) -> None:
    expect_format_error(write(tmp_path / "extra.tmd", tmd_bytes(2, 2) + b"\0"), "1 bytes after the height data")


def test_v1_header_on_a_v2_layout_does_not_add_up(tmp_path: Path) -> None:
    # 8 offset bytes too many for a v1 file: rejected, not misread as shifted heights.
    expect_format_error(write(tmp_path / "mixed.tmd", tmd_bytes(2, 2, header=V1_HEADER)), "8 bytes after")
    expect_format_error(write(tmp_path / "mixed2.tmd", tmd_bytes(2, 2, offsets=None)), "truncated")


@pytest.mark.parametrize("width, height", [(0, 5), (5, 0), (0, 0)])
def test_empty_dimensions(tmp_path: Path, width: int, height: int) -> None:
    expect_format_error(write(tmp_path / "zero.tmd", tmd_bytes(width, height, b"")), "empty height map")


@pytest.mark.parametrize("width, height", [(65536, 65536), (0xFFFFFFFF, 0xFFFFFFFF), (1 << 31, 2), (20000, 20000)])
def test_huge_dimensions_are_refused_before_allocating(tmp_path: Path, width: int, height: int) -> None:
    # 65536 * 65536 * 4 wraps to 0 in 32- and 64-bit... sizes; the reader uses exact arithmetic.
    path = write(tmp_path / "huge.tmd", tmd_bytes(width, height, b"\0" * 64))
    tracemalloc.start()
    try:
        expect_format_error(path, "truncated", f"{width} x {height}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"allocated {peak} bytes for a {path.stat().st_size}-byte file"


def test_dimensions_that_wrap_in_uint32_are_not_accepted(tmp_path: Path) -> None:
    # 65537 * 65535 wraps (mod 2**32) to a product of 4294901759... and 2**16 * 2**16 to 0: a reader
    # computing in uint32 would accept an empty or tiny data block. This file holds 0 data bytes.
    expect_format_error(write(tmp_path / "wrap.tmd", tmd_bytes(1 << 16, 1 << 16, b"")), "truncated")


# --------------------------------------------------------------------------- writer


def parse_by_hand(content: bytes) -> tuple[str, int, int, tuple[float, ...], np.ndarray]:
    assert content[:32] == V2_HEADER
    end = content.index(b"\0", 32)
    width, height, *fields = struct.unpack_from("<IIffff", content, end + 1)
    data = np.frombuffer(content, dtype="<f4", offset=end + 25)
    assert data.size == width * height
    return content[32:end].decode("ascii"), width, height, tuple(fields), data.reshape(height, width)


def test_export_layout_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hm = rng.standard_normal((7, 5)).astype(np.float32)
    hm[0, 0], hm[1, 1], hm[2, 2], hm[3, 3] = np.nan, -np.inf, -0.0, np.float32(1e-45)
    d = {
        "height_map": hm,
        "x_length": f32(0.1),
        "y_length": 2.5,
        "x_offset": -1.25,
        "y_offset": f32(1e-7),
        "comment": "scan 12\r\n",
    }
    out = tmd.export_to_tmd(d, tmp_path / "out.tmd")
    assert out == str((tmp_path / "out.tmd").resolve()) and os.path.isabs(out)
    comment, width, height, fields, data = parse_by_hand(Path(out).read_bytes())
    assert (comment, width, height) == ("scan 12\r\n", 5, 7)
    assert fields == (d["x_length"], 2.5, -1.25, d["y_offset"])
    assert data[0, 0].view("<u4") == 0xD01502F9  # NaN is written as TrueMap's fill, -1e10 in float32
    assert data.tobytes()[4:] == hm.tobytes()[4:]
    back = tmd.load_tmd(out)
    assert np.isnan(back["height_map"][0, 0])  # and the fill loads as NaN
    assert back["height_map"].tobytes()[4:] == hm.tobytes()[4:]
    assert {k: back[k] for k in d if k != "height_map"} == {k: v for k, v in d.items() if k != "height_map"}
    assert back["tmd_version"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


@given(
    bits=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=24),
    width=st.integers(1, 6),
    lengths=st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=4, max_size=4),
    comment=st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=40),
)
def test_export_round_trip_is_bit_exact(
    tmp_path_factory: pytest.TempPathFactory, bits: list[int], width: int, lengths: list[float], comment: str
) -> None:
    rows = max(1, len(bits) // width)
    hm = np.resize(np.array(bits, dtype="<u4"), rows * width).view("<f4").reshape(rows, width)
    d = dict(
        zip(["x_length", "y_length", "x_offset", "y_offset"], lengths, strict=False), height_map=hm, comment=comment
    )
    out = tmd.export_to_tmd(d, tmp_path_factory.mktemp("rt") / "rt.tmd")
    back = tmd.load_tmd(out)
    gone = np.isnan(hm) | (hm.view("<u4") == 0xD01502F9)  # NaN and the fill both mean "no data"
    assert np.isnan(back["height_map"][gone]).all()
    assert back["height_map"][~gone].tobytes() == hm[~gone].tobytes()  # every other value bit for bit
    for key in ("x_length", "y_length", "x_offset", "y_offset", "comment"):
        assert back[key] == d[key] and type(back[key]) is type(d[key]), key


def test_defaults_for_a_bare_array(tmp_path: Path) -> None:
    d = tmd.load_tmd(tmd.export_to_tmd(np.ones((3, 4), dtype=np.float32), tmp_path / "bare.tmd"))
    assert (d["x_length"], d["y_length"], d["x_offset"], d["y_offset"], d["comment"]) == (4.0, 3.0, 0.0, 0.0, "")
    d = tmd.load_tmd(
        tmd.export_to_tmd({"height_map": np.ones((2, 2)), "comment": None, "x_offset": None}, tmp_path / "none.tmd")
    )
    assert d["comment"] == "" and d["x_offset"] == 0.0


def test_relative_path_returns_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmd.export_to_tmd(np.zeros((1, 1), dtype=np.float32), "rel.tmd")
    assert out == os.path.join(os.path.realpath(tmp_path), "rel.tmd") or out == str(tmp_path / "rel.tmd")
    assert os.path.isabs(out) and os.path.exists(out)


@pytest.mark.parametrize(
    "array",
    [
        np.array([[1, 2], [3, -4]], dtype=np.int8),
        np.array([[0, 65535]], dtype=np.uint16),
        np.array([[2**24, -(2**24), 2**30]], dtype=np.int32),
        np.array([[2**62, -(2**63), 0]], dtype=np.int64),
        np.array([[2**63, 2**40]], dtype=np.uint64),
        np.array([[True, False]]),
        np.array([[0.5, -np.inf, np.nan, float(np.float32(1e-45)), 3.4028234663852886e38]], dtype=np.float64),
        np.array([[0.5, 65504.0]], dtype=np.float16),
        np.array([[0.25, -1.0]], dtype=">f4"),
        np.array([[0.1, 0.2]], dtype=np.float32).astype(np.longdouble),
    ],
)
def test_exactly_representable_dtypes_are_accepted(tmp_path: Path, array: np.ndarray) -> None:
    d = tmd.load_tmd(tmd.export_to_tmd(array, tmp_path / "t.tmd"))
    expected = array.astype(np.float32)
    assert d["height_map"].dtype == np.float32
    assert np.array_equal(d["height_map"], expected, equal_nan=True)
    assert np.array_equal(d["height_map"].astype(np.float64), array.astype(np.float64), equal_nan=True)


def test_non_contiguous_input(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    for view in (base.T, base[::2, 1::2], np.asfortranarray(base)):
        d = tmd.load_tmd(tmd.export_to_tmd(view, tmp_path / "v.tmd"))
        assert np.array_equal(d["height_map"], view)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.array([[0.1]], dtype=np.float64), ["float32 cannot represent exactly", "index (0, 0)"]),
        (np.array([[1.0, 1e300]]), ["float32 cannot represent", "(0, 1)"]),
        (np.array([[1.0, 1e-300]]), ["float32 cannot represent"]),
        (np.array([[2**24 + 1]], dtype=np.int32), ["float32 cannot represent", "16777217"]),
        (np.array([[2**63 - 1]], dtype=np.int64), ["float32 cannot represent"]),
        (np.array([[2**53 + 1]], dtype=np.int64), ["float32 cannot represent"]),
        (np.array([[2**64 - 1]], dtype=np.uint64), ["float32 cannot represent"]),
        (np.array([[1 + 1j]]), ["complex"]),
        (np.zeros((0, 3), dtype=np.float32), ["empty"]),
    ],
)
def test_inexact_or_unsuitable_heights_are_refused(tmp_path: Path, array: np.ndarray, words: list[str]) -> None:
    target = write(tmp_path / "keep.tmd", b"previous content")
    with pytest.raises(ValueError) as info:
        tmd.export_to_tmd(array, target)
    for word in words:
        assert word in str(info.value), str(info.value)
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmd"]


@pytest.mark.parametrize(
    "key, value, error",
    [
        ("x_length", math.nan, ValueError),
        ("y_length", math.inf, ValueError),
        ("x_offset", 1e39, ValueError),
        ("y_offset", -math.inf, ValueError),
        ("x_length", "1.0", TypeError),
        ("x_length", True, TypeError),
        ("comment", "caf\u00e9", ValueError),
        ("comment", "a\0b", ValueError),
        ("comment", b"bytes", TypeError),
    ],
)
def test_bad_lengths_offsets_and_comments_are_refused(
    tmp_path: Path, key: str, value: object, error: type[Exception]
) -> None:
    target = write(tmp_path / "keep.tmd", b"previous content")
    with pytest.raises(error, match=key):
        tmd.export_to_tmd({"height_map": np.zeros((2, 2), dtype=np.float32), key: value}, target)
    assert target.read_bytes() == b"previous content"


def test_not_a_height_map_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2-D"):
        tmd.export_to_tmd(np.zeros(3, dtype=np.float32), tmp_path / "a.tmd")
    with pytest.raises(ValueError, match="height_map"):
        tmd.export_to_tmd({"x_length": 1.0}, tmp_path / "a.tmd")
    with pytest.raises(TypeError):
        tmd.export_to_tmd([[1.0]], tmp_path / "a.tmd")
    assert not list(tmp_path.iterdir())


def test_numpy_scalars_as_lengths(tmp_path: Path) -> None:
    d = {
        "height_map": np.zeros((1, 1), np.float32),
        "x_length": np.float32(0.3),
        "y_length": np.int64(3),
        "x_offset": np.float64(0.5),
    }
    back = tmd.load_tmd(tmd.export_to_tmd(d, tmp_path / "s.tmd"))
    assert (back["x_length"], back["y_length"], back["x_offset"]) == (f32(0.3), 3.0, 0.5)


def test_other_metadata_is_named_in_a_warning(tmp_path: Path) -> None:
    d = {"height_map": np.zeros((1, 1), np.float32), "operator": "ana", "tmd_version": 1}
    with pytest.warns(MetadataNotStoredWarning, match="'operator'") as record:
        tmd.export_to_tmd(d, tmp_path / "w.tmd")
    assert "tmd_version" not in str(record[0].message)


def test_a_failing_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = write(tmp_path / "scan.tmd", b"old scan")

    def fail(done: int, total: int) -> None:
        raise KeyboardInterrupt  # e.g. the user interrupts a long save

    with pytest.raises(KeyboardInterrupt):
        tmd.export_to_tmd(np.zeros((5, 5), np.float32), target, progress=fail)
    assert target.read_bytes() == b"old scan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.tmd"]


def test_export_progress(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    tmd.export_to_tmd(np.zeros((3, 5), np.float32), tmp_path / "p.tmd", progress=lambda *a: calls.append(a))
    assert calls[-1] == (60, 60)


# --------------------------------------------------------------------------- tmd_nb.load dispatch


def test_load_dispatches_by_content(tmp_path: Path) -> None:
    hm = np.arange(6, dtype=np.float32).reshape(2, 3)
    # NPY, even named .tmd
    np.save(tmp_path / "a.npy", hm)
    os.replace(tmp_path / "a.npy", tmp_path / "npy_named.tmd")
    got = tmd_nb.load(tmp_path / "npy_named.tmd")
    assert list(got) == ["height_map"] and got["height_map"].tobytes() == hm.tobytes()
    # NPZ, named .npy
    tmd_nb.export_to_npz({"height_map": hm, "note": "x"}, tmp_path / "b.npz")
    os.replace(tmp_path / "b.npz", tmp_path / "npz_named.npy")
    got = tmd_nb.load(tmp_path / "npz_named.npy")
    assert got["note"] == "x" and got["height_map"].tobytes() == hm.tobytes()
    # TMD, named .npz, and in lower case
    content = tmd_bytes(3, 2, hm, header=V2_HEADER.lower(), comment=b"c")
    got = tmd_nb.load(write(tmp_path / "scan.npz", content))
    assert got["tmd_version"] == 2 and got["comment"] == "c" and got["height_map"].tobytes() == hm.tobytes()
    # the lazy top-level names are the module's
    assert tmd_nb.load_tmd is tmd.load_tmd and tmd_nb.export_to_tmd is tmd.export_to_tmd


def test_load_real_scan_with_a_wrong_extension(tmd_samples: Path, tmp_path: Path) -> None:
    path = write(tmp_path / "scan.dat", (tmd_samples / "v1_Dime.tmd").read_bytes())
    got = tmd_nb.load(path)
    assert got["tmd_version"] == 1 and got["height_map"].shape == (300, 300)


def test_load_unknown_and_broken_files(tmp_path: Path) -> None:
    for name, content in [("text.tmd", b"hello world\n"), ("empty.npz", b""), ("tiny", b"B")]:
        with pytest.raises(FormatError, match=name):
            tmd_nb.load(write(tmp_path / name, content))
    # recognised as TMD by its start, then refused by the TMD reader
    with pytest.raises(FormatError, match="truncated"):
        tmd_nb.load(write(tmp_path / "cut.npy", tmd_bytes(2, 2)[:-1]))
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        tmd_nb.load(tmp_path / "d")


def test_module_imports_no_notebook_machinery() -> None:
    import ast

    tree = ast.parse(Path(tmd.__file__).read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    }
    assert imported <= {
        "__future__",
        "math",
        "numbers",
        "os",
        "stat",
        "struct",
        "warnings",
        "collections",
        "typing",
        "numpy",
    }, imported
