"""Instruments' own files through SurfaceTopography: checked point by point against Gwyddion.

Gwyddion (``gwyddion --convert-to-gwy``, headless: it needs no display for a conversion) is the
independent reader; gwyfile loads what it wrote (data in SI units, ``xreal``/``yreal`` in metres).
Where the two readers differ, the test says so and asserts the difference as it is.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ROOT, require

import tmd_nb
from tmd_nb import FormatError
from tmd_nb.formats import instruments, registry
from tmd_nb.storage import units

SAMPLES = ROOT.parent / "shared" / "data" / "instruments"
HERE = Path(__file__).resolve().parent
MB = 1 << 20
# What each sample is, and the shape (rows, columns) tmd_nb returns for its default channel.
EXPECTED = {
    "sur-2.sur": ("Digital Surf SUR", (484, 563)),
    "al3d-1.al3d": ("Alicona AL3D", (296, 200)),
    "metropro-1.dat": ("Zygo MetroPro DAT", (480, 640)),
    "plu-1.plu": ("Sensofar PLU", (576, 768)),
    "di-3.di": ("Bruker/Veeco NanoScope", (256, 256)),
    "example_ps.tiff": ("Park Systems TIFF", (512, 512)),
    "10x10-one_channel_without_name.ibw": ("Igor binary wave (Asylum)", (10, 10)),
    "xyz-2.txt": ("x y z text", (4, 4)),
    "opdx-3.opdx": ("Bruker Dektak OPDx", (1, 3001)),
}
# Heights: both readers multiply the same stored integers (or floats) by the same scale factors,
# in a different order at most, so they agree to a few ulps of the largest height (measured:
# <= 3.3e-16 relative). 1e-12 leaves room for that and fails on any unit or scale mistake.
HEIGHT_RTOL = 1e-12
# Sizes: the same header numbers, converted to metres by a power of ten.
SIZE_RTOL = 1e-12


def sample(name: str) -> Path:
    path = SAMPLES / name
    require(path.is_file(), f"instrument sample not found at {path} (it lives in shared/data/instruments)")
    return path


def gwyddion_reading(path: Path, out: Path) -> Any:
    """What Gwyddion reads in ``path``, as gwyfile loads the ``.gwy`` file Gwyddion writes."""
    exe = shutil.which("gwyddion")
    require(exe is not None, "Gwyddion is not installed (apt-get install gwyddion)")
    import gwyfile

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}  # headless
    target = out / (path.name + ".gwy")
    result = subprocess.run(
        [exe, f"--convert-to-gwy={target}", str(path)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    return gwyfile.load(str(target))


def gwy_channels(obj: Any) -> list[tuple[str, Any]]:
    """(title, data field) of each channel Gwyddion read, in its order."""
    ids = sorted(int(m.group(1)) for k in obj if (m := re.fullmatch(r"/(\d+)/data", k)))
    return [(str(obj.get(f"/{i}/data/title", "")), obj[f"/{i}/data"]) for i in ids]


def unit_of(field: Any, key: str) -> str:
    unit = field.get(key)
    return "" if unit is None else str(unit.get("unitstr") or "")


def metres(data: dict[str, Any], key: str) -> float:
    factor = units.metres_per(data["lateral_unit"] if key != "height_unit" else data["height_unit"])
    assert factor is not None
    return factor


# ------------------------------------------------------------------------ against Gwyddion


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"opdx-3.opdx"}))
def test_heights_and_sizes_match_gwyddion(name: str, tmp_path: Path) -> None:
    path = sample(name)
    data = tmd_nb.load(path)
    title, shape = EXPECTED[name]
    assert data["instrument_format"] == title
    assert data["height_map"].shape == shape
    assert data["height_map"].dtype == np.float64
    (_title, field), *_ = gwy_channels(gwyddion_reading(path, tmp_path))
    theirs = np.asarray(field.data)
    assert theirs.shape == shape  # rows x columns, row 0 first as Gwyddion shows it
    ours = data["height_map"]
    if data["height_unit"]:
        assert unit_of(field, "si_unit_z") == "m"
        ours = ours * metres(data, "height_unit")
        assert data["x_length"] * metres(data, "lateral_unit") == pytest.approx(field["xreal"], rel=SIZE_RTOL)
        assert data["y_length"] * metres(data, "lateral_unit") == pytest.approx(field["yreal"], rel=SIZE_RTOL)
    else:
        # IBW without a unit and x-y-z text: neither reader knows a unit, so no lengths are claimed.
        assert unit_of(field, "si_unit_z") == ""
        assert "x_length" not in data and "lateral_unit" not in data
    missing = np.isnan(ours)
    if name == "sur-2.sur":
        # Known difference: the file marks 117 points as not measured. SurfaceTopography reads them
        # as missing (NaN here); Gwyddion 2.62 fills them with one value just below the lowest
        # height (no mask), which would show as a height.
        assert missing.sum() == 117
        fill = np.unique(theirs[missing])
        assert fill.size == 1 and fill[0] < np.nanmin(ours)
    else:
        np.testing.assert_array_equal(missing, np.isnan(theirs))
    scale = np.nanmax(np.abs(theirs))
    np.testing.assert_allclose(ours[~missing], theirs[~missing], rtol=0, atol=HEIGHT_RTOL * scale)


@pytest.mark.slow
def test_the_dektak_profile_is_one_row_matching_gwyddions_graph(tmp_path: Path) -> None:
    path = sample("opdx-3.opdx")
    data = tmd_nb.load(path)
    assert data["height_map"].shape == (1, 3001)
    assert "y_length" not in data
    # Gwyddion 2.62 reads this file as a graph (a curve), not as an image channel.
    obj = gwyddion_reading(path, tmp_path)
    assert gwy_channels(obj) == []
    curve = obj["/0/graph/graph/0"]["curves"][0]
    x, y = np.asarray(curve["xdata"]), np.asarray(curve["ydata"])
    ours = data["height_map"][0] * metres(data, "height_unit")
    np.testing.assert_allclose(ours, y, rtol=0, atol=HEIGHT_RTOL * np.abs(y).max())
    # Gwyddion's x runs over point positions (n - 1 spacings); x_length covers n pixels.
    assert data["x_length"] * metres(data, "lateral_unit") == pytest.approx(x[-1] * 3001 / 3000, rel=SIZE_RTOL)


@pytest.mark.slow
def test_the_nanoscope_channels_against_gwyddion(tmp_path: Path) -> None:
    path = sample("di-3.di")
    listed = tmd_nb.channels(path)
    theirs = gwy_channels(gwyddion_reading(path, tmp_path))
    assert [c["name"] for c in listed] == [t for t, _ in theirs] == ["ZSensor", "AmplitudeError", "Phase", "Height"]
    assert [c["shape"] for c in listed] == [(256, 256)] * 4
    # The default is the first channel whose unit is a length, never the amplitude or phase.
    assert tmd_nb.load(path)["channel"] == "ZSensor"
    height = tmd_nb.load(path, channel="Height")
    assert np.array_equal(height["height_map"], tmd_nb.load(path, channel=3)["height_map"])
    field = theirs[3][1]
    np.testing.assert_allclose(
        height["height_map"] * 1e-9, field.data, rtol=0, atol=HEIGHT_RTOL * np.abs(field.data).max()
    )
    # Known discrepancy: SurfaceTopography gives AmplitudeError and Phase as raw counts with no
    # data unit (tmd_nb: height_unit ""), where Gwyddion scales them to volts and degrees. The
    # counts are proportional to Gwyddion's values; they are not heights, and are not called so.
    assert [unit_of(f, "si_unit_z") for _, f in theirs] == ["m", "V", "deg", "m"]
    assert [c["unit"] for c in listed] == ["nm", "", "", "nm"]
    amplitude = tmd_nb.load(path, channel="AmplitudeError")
    assert amplitude["height_unit"] == ""
    counts, volts = amplitude["height_map"], theirs[1][1].data
    assert not np.allclose(counts, volts)
    assert np.corrcoef(counts.ravel(), volts.ravel())[0, 1] > 1 - 1e-9


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "gwyddion_titles"),
    [
        ("al3d-1.al3d", ["Depth", "DepthImageRes", "Texture (R)", "Texture (G)", "Texture (B)"]),
        ("metropro-1.dat", ["Phase", "Intensity"]),
        ("plu-1.plu", ["Topography", "Gray"]),
    ],
)
def test_surfacetopography_lists_only_the_height_channel_where_gwyddion_lists_more(
    name: str, gwyddion_titles: list[str], tmp_path: Path
) -> None:
    # Known discrepancy: SurfaceTopography 1.27 reads the height channel only; Gwyddion also
    # reads the texture, intensity and grey images. The one channel is Gwyddion's first.
    path = sample(name)
    assert [t for t, _ in gwy_channels(gwyddion_reading(path, tmp_path))] == gwyddion_titles
    listed = tmd_nb.channels(path)
    assert len(listed) == 1 and listed[0]["is_height"]


# ------------------------------------------------------------------------ channels and metadata


def test_a_wrong_channel_names_itself_and_lists_the_choices() -> None:
    path = sample("di-3.di")
    choices = "0: 'ZSensor', 1: 'AmplitudeError', 2: 'Phase', 3: 'Height'"
    with pytest.raises(KeyError) as err:
        tmd_nb.load(path, channel="Heigth")
    assert err.value.args[0] == f"{str(path)!r} has no channel 'Heigth'; its channels are {choices}"
    with pytest.raises(ValueError, match=re.escape(f"has no channel 4; its channels are {choices}")):
        tmd_nb.load(path, channel=4)
    with pytest.raises(TypeError, match="channel must be a name or an index, not float"):
        tmd_nb.load(path, channel=1.0)  # type: ignore[arg-type]


def test_a_file_of_one_height_map_takes_no_channel(tmp_path: Path) -> None:
    path = tmd_nb.export_to_npz({"height_map": np.zeros((2, 3))}, tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"is a NPZ file of one height map: it takes no channel=1$"):
        tmd_nb.load(path, channel=1)
    assert tmd_nb.channels(path) == [
        {"name": "height_map", "index": 0, "shape": (2, 3), "unit": "mm", "lateral_unit": "mm", "is_height": True}
    ]


def test_repeated_channel_names_are_numbered() -> None:
    assert instruments._names(["Height", "Phase", "Height", "Height"]) == [
        "Height",
        "Phase",
        "Height (2)",
        "Height (3)",
    ]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_channels_lists_the_shapes_load_returns(name: str) -> None:
    path = sample(name)
    listed = tmd_nb.channels(path)
    assert len({c["name"] for c in listed}) == len(listed)
    data = tmd_nb.load(path)
    chosen = next(c for c in listed if c["name"] == data["channel"])
    assert chosen["shape"] == data["height_map"].shape
    assert data["height_unit"] == chosen["unit"]
    if data["height_unit"]:
        assert data["height_unit"] in units.LENGTHS and data["height_unit"] != "\u00b5m"  # "um", tmd_nb's name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_everything_read_survives_npz(name: str, tmp_path: Path) -> None:
    data = tmd_nb.load(sample(name))
    back = tmd_nb.load_from_npz(tmd_nb.export_to_npz(data, tmp_path / "x.npz"))
    assert set(back) == set(data)
    np.testing.assert_array_equal(back["height_map"], data["height_map"])
    for key in set(data) - {"height_map"}:
        assert back[key] == data[key], key


def test_the_files_own_metadata_is_kept() -> None:
    data = tmd_nb.load(sample("di-3.di"))
    assert data["instrument"]["name"] == "Dimension Icon"
    assert data["acquisition_time"].isoformat() == "2014-12-15T13:33:51"
    assert isinstance(data["vendor_header"], dict) and data["vendor_header"]


# ------------------------------------------------------------------------ the registry


def test_read_only_formats_are_never_offered_for_writing(tmp_path: Path) -> None:
    assert not instruments.FORMAT.writable
    assert "instrument" in registry.names() and "instrument" not in registry.names(writing=True)
    assert ".sur" in registry.extensions() and ".sur" not in registry.extensions(writing=True)
    with pytest.raises(ValueError, match=r"it is read only \(instrument\); use .npz, .npy, .tmd, .x3p, .gwy or .sdf"):
        tmd_nb.save(np.zeros((2, 2)), tmp_path / "x.sur")
    with pytest.raises(
        ValueError, match=r"^instrument files are read only: save as 'npz', 'npy', 'tmd', 'x3p', 'gwy' or 'sdf'$"
    ):
        tmd_nb.save(np.zeros((2, 2)), tmp_path / "x.npz", format="instrument")
    assert not (tmp_path / "x.sur").exists()
    from tmd_nb.notebook.panel.export import FORMATS as PANEL_FORMATS

    assert "instrument" not in {fmt for _, fmt, _ in PANEL_FORMATS}


def test_generic_extensions_are_not_claimed_but_their_content_is_read() -> None:
    assert ".txt" not in registry.extensions()
    assert tmd_nb.load(sample("xyz-2.txt"))["height_map"].shape == (4, 4)


def test_the_readme_table_is_the_registrys() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert registry.table() in readme, "README's table of formats differs from registry.table(): paste it again"


# ------------------------------------------------------------------------ lazy import, missing extra


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_import_and_own_formats_never_import_surfacetopography(tmp_path: Path) -> None:
    code = f"""
import sys, numpy as np, tmd_nb
assert "SurfaceTopography" not in sys.modules, "import tmd_nb"
for ext in ("npz", "npy", "tmd", "x3p", "gwy"):
    tmd_nb.load(tmd_nb.save(np.zeros((2, 2)), {str(tmp_path)!r} + "/a." + ext))
assert "SurfaceTopography" not in sys.modules, "loading tmd_nb's own formats"
tmd_nb.load({str(sample("xyz-2.txt"))!r})
print("SurfaceTopography" in sys.modules)
"""
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


@pytest.mark.slow
def test_without_the_extra_a_vendor_file_is_one_line_naming_its_format() -> None:
    path = sample("sur-2.sur")
    code = f"""
import sys
sys.modules["SurfaceTopography"] = None  # as if not installed: its import raises ImportError
import tmd_nb
for p in ({str(path)!r}, {str(sample("di-3.di"))!r}):
    try:
        tmd_nb.load(p)
    except tmd_nb.FormatError as e:
        print(e)
"""
    result = run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"{str(path)!r} is a Digital Surf SUR file; reading it needs SurfaceTopography: "
        "pip install 'tmd_nb[instruments]'",
        f"{str(sample('di-3.di'))!r} is a Bruker/Veeco NanoScope file; reading it needs SurfaceTopography: "
        "pip install 'tmd_nb[instruments]'",
    ]


# ------------------------------------------------------------------------ hostile files


def probe(path: Path, returned: int = 0) -> dict[str, Any]:
    """Load ``path`` in a child capped at 256 MB + 50 x its size + ``returned`` (instrument_probe.py)."""
    result = subprocess.run(
        [sys.executable, str(HERE / "instrument_probe.py"), str(path), str(256 * MB), "50", str(returned)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def sur_claiming(tmp_path: Path, columns: int, rows: int) -> Path:
    data = bytearray(sample("sur-2.sur").read_bytes())
    struct.pack_into("<iiI", data, 108, columns, rows, columns * rows)
    path = tmp_path / "claims.sur"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.slow
def test_a_header_claiming_more_points_than_the_file_holds_is_refused_before_reading(tmp_path: Path) -> None:
    # SurfaceTopography would allocate 60000 x 60000 x 4 bytes (14 GB) for this 1 MB file.
    path = sur_claiming(tmp_path, 60000, 60000)
    assert probe(path) == {
        "outcome": "FormatError",
        "message": f"{str(path)!r}: the Digital Surf SUR header claims 60000 x 60000 points, "
        f"more than a file of {path.stat().st_size} bytes holds",
        "context": False,
    }


def test_an_uncompressed_file_may_claim_one_point_per_byte_at_most(tmp_path: Path) -> None:
    # 1000 x 1100 points would pass the bound of a compressed file (1032 a byte), not of this one.
    path = sur_claiming(tmp_path, 1100, 1000)
    with pytest.raises(FormatError, match=r"claims 1000 x 1100 points, more than a file of 1090480 bytes holds$"):
        tmd_nb.load(path)


def test_errors_of_the_library_are_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.sur"
    path.write_bytes(sample("sur-2.sur").read_bytes()[:600_000])  # the header's 484 x 563 points fit, their data do not
    with pytest.raises(FormatError) as err:
        tmd_nb.load(path)
    text = str(err.value)
    assert text.startswith(f"{str(path)!r}: Digital Surf SUR file cannot be read: The file ended after ")
    assert "\n" not in text and len(text) < 400
    assert err.value.__suppress_context__


def test_progress_is_called_with_the_file_size() -> None:
    path = sample("plu-1.plu")
    calls: list[tuple[int, int]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the library's warnings stay inside
        tmd_nb.load(path, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(path.stat().st_size, path.stat().st_size)]


def test_channels_reads_no_heights(monkeypatch: pytest.MonkeyPatch) -> None:
    from SurfaceTopography.IO.DI import DIReader

    def no_heights(*args: object, **kwargs: object) -> None:
        raise AssertionError("channels() read heights")

    monkeypatch.setattr(DIReader, "topography", no_heights)
    assert len(tmd_nb.channels(sample("di-3.di"))) == 4
    with pytest.raises(FormatError, match="channels\\(\\) read heights"):  # load does read them
        tmd_nb.load(sample("di-3.di"))


@pytest.mark.parametrize("name", [n for n in EXPECTED if not n.endswith(".txt")])
def test_a_vendor_file_is_tried_first_by_its_own_reader(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SurfaceTopography tries its text readers first, which read a binary file line by line before
    # failing (slower than the vendor's reader on the whole file): a file with its vendor's signature
    # or extension is tried by that vendor's reader first, and found by it.
    import SurfaceTopography.IO as io

    tried: list[str] = []

    def spy(reader: Any) -> Any:
        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            tried.append(reader.format())
            reader.__init__(self, *args, **kwargs)

        return type(reader.__name__, (reader,), {"__init__": init})

    monkeypatch.setattr(io, "readers", [spy(r) for r in io.readers])
    copy = tmp_path / name  # a file not detected before (detection is remembered for the last file)
    copy.write_bytes(sample(name).read_bytes())
    data = tmd_nb.load(copy)
    assert data["instrument_format"] == EXPECTED[name][0]
    assert tried == [next(v.name for v in instruments.VENDORS if v.title == EXPECTED[name][0])]


def test_a_vendor_file_is_opened_once_by_the_reader_that_recognised_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As SurfaceTopography's open_topography does: the reader whose trial recognised the file reads
    # it (opening it again cost a NanoScope file its header parsed twice); one nobody loads is closed.
    from SurfaceTopography.IO.DI import DIReader

    opened: list[Any] = []
    init = DIReader.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        opened.append(args[0])
        init(self, *args, **kwargs)

    monkeypatch.setattr(DIReader, "__init__", counting)
    copies = []
    for i in range(3):  # files not detected before (detection is remembered for the last file)
        copies.append(tmp_path / f"{i}.di")
        copies[-1].write_bytes(sample("di-3.di").read_bytes())
    assert tmd_nb.load(copies[0])["channel"] == "ZSensor"
    assert len(opened) == 1 and opened[0].closed
    assert [c["name"] for c in tmd_nb.channels(copies[1])] == ["ZSensor", "AmplitudeError", "Phase", "Height"]
    assert len(opened) == 2 and opened[1].closed
    with instruments.handing_over():
        assert registry.recognise(copies[2]) is instruments.FORMAT
        assert not opened[2].closed  # kept for a load
    assert len(opened) == 3 and opened[2].closed  # none came: closed


def test_formats_tmd_nb_reads_itself_are_never_handed_to_surfacetopography() -> None:
    # A format of the registry that SurfaceTopography also reads (SDF, once tmd_nb reads it) must
    # be in instruments.OWN, or a damaged file of it would be read by the other reader instead.
    from SurfaceTopography.IO import readers

    theirs = {r.format() for r in readers}
    assert set(registry.names()) & theirs <= instruments.OWN


# ------------------------------------------------------------------------ %tmd_load and the load panel


@pytest.fixture
def ip(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipythondir")))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)  # the session's one shell: leave it as found
    before = set(shell.user_ns)
    shell.run_line_magic("load_ext", "tmd_nb")
    yield shell
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]
    shell.run_line_magic("unload_ext", "tmd_nb")


def test_tmd_load_takes_a_channel(ip: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = sample("di-3.di")
    ip.run_line_magic("tmd_load", f"{path} -c Height -n height")
    ip.run_line_magic("tmd_load", f"{path} --channel 2 -n phase")
    ip.run_line_magic("tmd_load", f"{path} -n default")
    assert [ip.user_ns[n]["channel"] for n in ("height", "phase", "default")] == ["Height", "Phase", "ZSensor"]
    capsys.readouterr()
    result = ip.run_cell(f"%tmd_load {path} -c Nope")
    err = capsys.readouterr().err
    assert type(result.error_in_exec).__name__ == "UsageError"
    choices = "0: 'ZSensor', 1: 'AmplitudeError', 2: 'Phase', 3: 'Height'"
    assert err.strip().splitlines()[-1].endswith(f"{str(path)!r} has no channel 'Nope'; its channels are {choices}")


def test_the_load_panel_offers_the_channels_of_a_file_that_has_several(tmp_path: Path) -> None:
    from tmd_nb import LoadPanel

    path = sample("di-3.di")
    panel = LoadPanel(namespace={}, directory=path.parent)
    assert str(path) in panel._path.options and str(sample("sur-2.sur")) in panel._path.options
    panel._path.value = str(path)
    assert panel.channel == "ZSensor" and panel.data is not None and panel.data["channel"] == "ZSensor"
    assert [v for _, v in panel._channel.options] == ["ZSensor", "AmplitudeError", "Phase", "Height"]
    assert panel._channel.layout.display == ""
    panel.channel = "Phase"
    assert panel.data is not None and panel.data["channel"] == "Phase"
    assert panel.status.startswith(f"Loaded {path}")
    panel._path.value = str(sample("sur-2.sur"))  # one channel: no choice shown
    assert panel.data is not None and panel.data["channel"] == "Default"
    assert panel._channel.layout.display == "none"
    npz = tmd_nb.export_to_npz(np.zeros((2, 2)), tmp_path / "a.npz")
    panel._path.value = npz
    assert panel.channel is None and panel.data is not None
