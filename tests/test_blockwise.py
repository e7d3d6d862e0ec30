"""The blockwise ways of saving and loading (one fused pass over a map, on every core) give what
the whole-map ways give, bit for bit; a record's seal finds an edit of the record alone.

Blocks are made small here so that a small map takes many blocks and both threads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import warnings
from pathlib import Path

import gwyfile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

import tmd_nb
from tmd_nb import FormatError
from tmd_nb.storage import _io, blockwise, embedded

FAST = settings(max_examples=max(1, settings.default.max_examples // 4))
UNITS = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "nm": 1e-9, "km": 1e3}


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blockwise, "BLOCK_BYTES", 64)
    monkeypatch.setattr(blockwise, "_threads", lambda: 2)


def test_blocks_cover_the_range_in_order_on_the_calling_thread_and_the_pool() -> None:
    arrived = threading.Barrier(2, timeout=60)  # each thread's first block waits for the other's
    first: dict[str, int] = {}
    lock = threading.Lock()

    def job(start: int, stop: int) -> tuple[int, int]:
        with lock:
            new = threading.current_thread().name not in first
            first.setdefault(threading.current_thread().name, start)
        if new:
            arrived.wait()
        return start, stop

    parts = blockwise.map_blocks(1000, 8, job)
    assert parts == [(s, min(s + 8, 1000)) for s in range(0, 1000, 8)]
    assert threading.current_thread().name in first
    assert any(name.startswith("tmd_nb-blocks") for name in first)


PAYLOAD = bytes(1 << 20)


@pytest.mark.parametrize("where", ["calling thread", "pool"])
def test_after_a_job_raises_no_block_starts_and_its_error_is_raised(where: str) -> None:
    log: list[tuple[str, int]] = []
    arrived = threading.Barrier(2, timeout=60)
    seen: set[str] = set()

    def job(start: int, stop: int) -> int:
        name = threading.current_thread().name
        if name not in seen:
            seen.add(name)
            arrived.wait()  # both threads are taking blocks
        log.append(("start", start))
        hashlib.sha256(PAYLOAD).digest()  # work without the GIL, as numpy's and the CRC's is
        if name.startswith("tmd_nb-blocks") == (where == "pool"):  # its first block
            log.append(("raised", start))
            raise ZeroDivisionError(f"block {start}")
        return start

    with pytest.raises(ZeroDivisionError, match=r"^block \d+$"):
        blockwise.map_blocks(1000, 8, job)
    raised = next(i for i, entry in enumerate(log) if entry[0] == "raised")
    # the other thread may have checked for an error just before it was raised: one block more at most
    assert len([entry for entry in log[raised:] if entry[0] == "start"]) <= 1
    assert len(log) < 1000 // 8  # not every block


def test_crcs_of_pieces_combine_into_the_whole_crc() -> None:
    import zlib

    data = np.random.default_rng(0).bytes(1000)
    pieces = [data[i : i + 77] for i in range(0, 1000, 77)]
    assert blockwise.combine_crcs([(zlib.crc32(p), len(p)) for p in pieces]) == zlib.crc32(data)


finite_maps = st.sampled_from([np.float16, np.float32, np.float64]).flatmap(
    lambda t: npst.arrays(
        t,
        npst.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
        elements=npst.from_dtype(np.dtype(t), allow_nan=False, allow_infinity=False, min_value=-1e4, max_value=1e4),
    )
)


@FAST
@given(hm=finite_maps, unit=st.sampled_from(sorted(UNITS)))
def test_the_survey_is_what_the_whole_map_ways_find(hm: np.ndarray, unit: str) -> None:
    factor = UNITS[unit]
    found = embedded.survey(hm, factor)
    assert found is not None
    standard = embedded.standard_heights(hm, factor)
    assert found.heights.tobytes() == standard.tobytes()
    assert f"{found.crc:08x}" == embedded.fingerprint(standard)
    back = embedded.restore(standard, hm.dtype, factor)
    expected = np.flatnonzero(back.view(f"u{hm.itemsize}") != hm.view(f"u{hm.itemsize}"))
    np.testing.assert_array_equal(found.differing, expected)


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e307])
def test_a_map_with_a_height_that_is_not_finite_in_si_units_takes_the_whole_map_way(value: float) -> None:
    hm = np.ones((20, 20))
    hm[7, 3] = value
    assert embedded.survey(hm, 1e3) is None
    assert embedded.survey(np.ones((20, 20), np.int32), 1.0) is None  # not a float map


maps_with_holes = st.sampled_from([np.float32, np.float64]).flatmap(
    lambda t: npst.arrays(
        t,
        npst.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=30),
        elements=st.one_of(
            st.just(np.nan),
            npst.from_dtype(np.dtype(t), allow_nan=False, allow_infinity=False, min_value=-1e3, max_value=1e3),
        ),
    )
)


@FAST
@given(hm=maps_with_holes, unit=st.sampled_from(sorted(UNITS)))
def test_gwy_files_saved_and_loaded_a_block_at_a_time_come_back_exactly(tmp_path_factory, hm, unit) -> None:
    path = tmp_path_factory.mktemp("gwy") / "m.gwy"
    data = {"height_map": hm, "height_unit": unit, "x_length": 2.0, "y_length": 1.0}
    tmd_nb.export_to_gwy(data, path)
    back = tmd_nb.load_gwy(path)
    assert (
        back["height_map"].dtype == hm.dtype
        and back["height_map"].tobytes() == np.where(np.isnan(hm), np.array(np.nan, hm.dtype), hm).tobytes()
    )
    field = gwyfile.load(str(path))["/0/data"]  # an independent reader: metres
    finite = np.isfinite(hm)
    np.testing.assert_array_equal(field.data.reshape(hm.shape)[finite], hm[finite].astype(np.float64) * UNITS[unit])


def record_of(path: Path) -> str:
    return gwyfile.load(str(path))["/tmd_nb/record.json"]


def with_record(path: Path, text: str) -> None:
    container = gwyfile.load(str(path))
    container["/tmd_nb/record.json"] = text
    container.tofile(str(path))


def test_a_record_ends_with_the_seal_of_the_rest(tmp_path: Path) -> None:
    import zlib

    path = Path(tmd_nb.export_to_gwy(np.linspace(0, 1, 600).reshape(20, 30), tmp_path / "s.gwy"))
    text = record_of(path)
    found = re.search(r', "seal": "([0-9a-f]{8})"\}\Z', text)
    assert found is not None
    assert f"{zlib.crc32((text[: found.start()] + '}').encode()):08x}" == found.group(1)


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r["height"].update(factor=0.002),
        lambda r: r["height"].update(dtype="<f2", patch=None),
        lambda r: r["metadata"].update(height_unit="um"),
        lambda r: r.update(tmd_nb=2),
    ],
)
def test_an_edit_of_a_sealed_record_alone_is_a_format_error(tmp_path: Path, edit) -> None:
    hm = np.random.default_rng(1).normal(size=(20, 30))  # float64 mm: a patch
    path = Path(tmd_nb.export_to_gwy(hm, tmp_path / "e.gwy"))
    record = json.loads(record_of(path))
    edit(record)
    with_record(path, json.dumps(record))
    with pytest.raises(FormatError) as caught:
        tmd_nb.load_gwy(path)
    assert str(caught.value) == repr(str(path)) + ": " + (
        "its tmd_nb record does not describe the file's heights "
        "(the record changed after it was written: its seal does not match)"
    )


def test_a_record_without_a_seal_is_checked_against_the_heights_as_before(tmp_path: Path) -> None:
    """Records written before the seal: the map restored is converted back and compared."""
    hm = np.random.default_rng(2).normal(size=(20, 30))
    path = Path(tmd_nb.export_to_gwy(hm, tmp_path / "old.gwy"))
    record = json.loads(record_of(path))
    del record["seal"]
    with_record(path, json.dumps(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tmd_nb.load_gwy(path)["height_map"].tobytes() == hm.tobytes()
    record["height"]["factor"] = 0.002
    with_record(path, json.dumps(record))
    with pytest.raises(FormatError, match=r"in units of 0\.002 m they are other numbers"):
        tmd_nb.load_gwy(path)


def test_a_file_that_shrinks_while_read_on_several_threads_is_a_format_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(1000))
    buf = np.empty(2000, np.uint8)  # as if the file had 2000 bytes when its size was taken
    with (
        open(path, "rb", buffering=0) as fp,
        pytest.raises(FormatError, match=r"^'f' is truncated: it shrank while being read \(1000 of 2000"),
    ):
        _io.pread_parallel(fp.fileno(), buf.data, 0, "'f'")
    with open(path, "rb", buffering=0) as fp:
        whole = np.empty(1000, np.uint8)
        _io.pread_parallel(fp.fileno(), whole.data, 0, "'f'")
    assert whole.tobytes() == path.read_bytes()
    assert os.path.getsize(path) == 1000
