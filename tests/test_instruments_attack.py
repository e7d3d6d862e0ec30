"""Instruments' files with lying headers: every size field made huge, negative or zero.

Each sample's binary header is searched for the fields that hold its dimensions (the values
Gwyddion's README gives for it), and each is rewritten; text headers have their numbers rewritten.
Each file is loaded in the capped child of ``test_instruments_fuzz`` (memory after the imports +
256 MB + 50 x the file): it loads, or raises one FormatError naming the file.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from hypothesis import given
from hypothesis import strategies as st
from test_instruments_fuzz import NAMES, SAMPLES, Child, check, fresh

import tmd_nb
from tmd_nb.formats import instruments, registry

#: The dimensions of each sample, as its header states them (columns and rows; the profile's points).
DIMENSIONS = {
    "sur-2.sur": (563, 484),
    "al3d-1.al3d": (200, 296),
    "metropro-1.dat": (640, 480),
    "plu-1.plu": (768, 576),
    "di-3.di": (256,),
    "example_ps.tiff": (512,),
    "10x10-one_channel_without_name.ibw": (10,),
    "opdx-3.opdx": (3001,),
    "xyz-2.txt": (),
}
LIES = (0, -1, -(1 << 31), 1000, 1 << 16, (1 << 31) - 1)


def variants(name: str) -> Iterator[tuple[str, bytes]]:
    """(label, content) for each dimension field of the sample rewritten with each lie."""
    data = (SAMPLES / name).read_bytes()
    head = data[:4096]
    for n in DIMENSIONS[name]:
        for code, size in (("<i", 4), (">i", 4), ("<h", 2), (">h", 2), ("<I", 4)):
            packed = struct.pack(code, n)
            at = head.find(packed)
            while at != -1:
                for lie in LIES:
                    value = lie * n if lie == 1000 else lie
                    try:
                        new = struct.pack(code, value)
                    except struct.error:
                        continue
                    yield f"{code}@{at}={value}", data[:at] + new + data[at + size :]
                at = head.find(packed, at + 1)
        text = str(n).encode()
        at = head.find(text)
        while at != -1:
            for lie in (b"0", b"-1", text + b"000", b"99999999999", b"1e9"):
                yield f"text@{at}={lie.decode()}", data[:at] + lie + data[at + len(text) :]
            at = head.find(text, at + 1)


CASES = [(name, label) for name in NAMES for label, _ in variants(name)]


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    require(bool(NAMES), f"instrument samples not found at {SAMPLES} (they live in shared/data/instruments)")
    c = Child()
    yield c
    c.close()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "label"), CASES)
def test_lying_dimensions(child: Child, tmp_path_factory: pytest.TempPathFactory, name: str, label: str) -> None:
    content = dict(variants(name))[label]
    path = tmp_path_factory.getbasetemp() / f"lying{Path(name).suffix}"
    path.write_bytes(content)
    check(child, path)


def plux(path: Path, columns: int, rows: int, layer: bytes | int) -> Path:
    """A Sensofar PLUX file (a zip of ``index.xml`` and a float32 layer); ``layer`` an int: that
    many zero bytes, deflated (a zip bomb when it is more than the index claims)."""
    index = (
        '<?xml version="1.0"?><xml><GENERAL>'
        f"<IMAGE_SIZE_X>{columns}</IMAGE_SIZE_X><IMAGE_SIZE_Y>{rows}</IMAGE_SIZE_Y>"
        "<FOV_X>0.5</FOV_X><FOV_Y>0.25</FOV_Y><DATE>2020-01-01 00:00:00</DATE></GENERAL>"
        "<INFO><ITEM_0><NAME>Device</NAME><VALUE>S neox</VALUE></ITEM_0></INFO>"
        "<LAYER_0><FILENAME_Z>LAYER_0.raw</FILENAME_Z></LAYER_0></xml>"
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("index.xml", index)
        with z.open("LAYER_0.raw", "w", force_zip64=True) as member:
            if isinstance(layer, bytes):
                member.write(layer)
            else:
                chunk = bytes(1 << 20)
                for start in range(0, layer, len(chunk)):
                    member.write(chunk[: layer - start])
    return path


def test_a_plux_file_is_read_as_sensofars_not_refused_as_an_npz(tmp_path: Path) -> None:
    # A PLUX file is a zip: the NPZ reader took every zip, and refused it ("member 'index.xml'
    # is not an NPY array"), so no PLUX file ever reached SurfaceTopography.
    heights = np.arange(12, dtype="<f4").reshape(3, 4)
    heights[1, 2] = np.nan
    path = plux(tmp_path / "scan.plux", 4, 3, heights.tobytes())
    assert registry.recognise(path).name == "instrument"
    data = tmd_nb.load(path)
    assert data["instrument_format"] == "Sensofar PLUX"
    np.testing.assert_array_equal(data["height_map"], heights.astype(np.float64))
    assert (data["x_length"], data["y_length"], data["height_unit"]) == (2.0, 0.75, "um")
    assert [c["shape"] for c in tmd_nb.channels(path)] == [(3, 4)]


def test_an_npz_is_still_an_npz(tmp_path: Path) -> None:
    tmd_nb.export_to_npz(np.zeros((2, 3)), tmp_path / "a.npz")
    assert registry.recognise(tmp_path / "a.npz").name == "npz"


@pytest.mark.slow
def test_a_plux_whose_layer_inflates_far_past_its_index_stays_within_the_bound(tmp_path: Path) -> None:
    # 100 x 100 points claimed, 512 MB of zeros in the layer (a file of half a megabyte).
    path = plux(tmp_path / "bomb.plux", 100, 100, 512 << 20)
    assert fresh(path) == {"outcome": "ok", "shape": [100, 100]}


def test_a_plux_index_claiming_more_points_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    path = plux(tmp_path / "claim.plux", 40000, 40000, bytes(16))
    with pytest.raises(tmd_nb.FormatError, match=r"claims 40000 x 40000 points, more than a file of \d+ bytes"):
        tmd_nb.load(path)


def test_a_zip_member_without_a_name_is_recognised_without_raising(tmp_path: Path) -> None:
    # A zero name length in the central directory: X3P's look at the members raised zipfile's
    # IndexError (its is_dir() indexes the name's last character) from recognition.
    path = tmp_path / "unnamed.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo(""), b"x")
    with pytest.raises(tmd_nb.FormatError, match=r"^'.*unnamed\.npz'"):
        tmd_nb.load(path)


@pytest.mark.slow
def test_a_text_line_of_millions_of_numbers_stays_within_the_bound(tmp_path: Path) -> None:
    # 18 MB on one line: SurfaceTopography's x-y-z reader, tried first, kept an array per column
    # and went past 256 MB + 50 x the file (a MemoryError under the cap, 1.3 GB without it).
    path = tmp_path / "wide.asc"
    path.write_text(" ".join(["1e999"] * 3_000_000) + "\n")
    result = fresh(path)
    assert result["outcome"] == "FormatError", result


@given(
    lengths=st.lists(st.integers(0, 2 * instruments.MAX_TABLE_LINE), min_size=1, max_size=24),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
)
def test_the_longest_line_is_measured_across_reads(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], ending: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "lines.xyz"
    path.write_bytes(ending.join("1" * n for n in lengths).encode())
    assert instruments._lines_fit(path) == (max(lengths) <= instruments.MAX_TABLE_LINE)


def test_an_xyz_table_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "grid.xyz"
    path.write_text("".join(f"{x} {y} {x + 10 * y}\r\n" for y in range(3) for x in range(4)))
    np.testing.assert_array_equal(tmd_nb.load(path)["height_map"], np.arange(4) + 10 * np.arange(3)[:, None])


def test_a_damaged_tiff_is_one_line_and_nothing_on_standard_error(tmp_path: Path) -> None:
    # StripOffsets pointed at 0: tifffile logged three lines on standard error for each of the
    # several times the file was opened, besides the result.
    data = bytearray((SAMPLES / "example_ps.tiff").read_bytes())
    (ifd,) = struct.unpack_from("<I", data, 4)
    (count,) = struct.unpack_from("<H", data, ifd)
    strips = next(ifd + 2 + 12 * i for i in range(count) if struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0] == 273)
    struct.pack_into("<I", data, strips + 8, 0)  # where the StripOffsets are: at 0
    path = tmp_path / "damaged.tiff"
    path.write_bytes(bytes(data))
    code = (
        "import tmd_nb, warnings\n"
        "warnings.simplefilter('ignore')\n"
        f"print(tmd_nb.load({str(path)!r})['height_map'].shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout, result.stderr) == ("(512, 512)\n", "")
