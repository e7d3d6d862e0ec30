"""Hostile instruments' files: truncations and byte flips of the samples load or raise one FormatError.

Each mutated file is loaded by a child whose address space is capped at its size after the imports
+ 256 MB + 50 x the largest sample + the arrays a sample returns (``instrument_probe.py --serve``),
so an allocation driven by a damaged header shows as a MemoryError instead of passing unnoticed.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, require
from hypothesis import example, given
from hypothesis import strategies as st

SAMPLES = ROOT.parent / "shared" / "data" / "instruments"
NAMES = sorted(p.name for p in SAMPLES.glob("*") if p.suffix != ".md") if SAMPLES.is_dir() else []
HERE = Path(__file__).resolve().parent
MB = 1 << 20
#: Seconds one load may take in the child: far above any sample's (< 1 s); a hang fails the test.
LOAD_SECONDS = 120


class Child:
    """The capped child, and one request at a time to it."""

    def __init__(self) -> None:
        self.start()

    def restart(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=60)
        self.start()

    def start(self) -> None:
        largest = max(os.path.getsize(SAMPLES / n) for n in NAMES)
        returned = 8 * 768 * 576 * 2  # the largest sample's float64 map, and one transposed copy
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "instrument_probe.py"),
                "--serve",
                str(256 * MB),
                "50",
                str(largest),
                str(returned),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def load(self, path: Path) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], LOAD_SECONDS)
        assert ready, f"loading {path} took more than {LOAD_SECONDS} s"
        line = self.proc.stdout.readline()
        assert line, f"the capped child died loading {path} (exit {self.proc.wait()})"
        return json.loads(line)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def child() -> Iterator[Child]:
    require(bool(NAMES), f"instrument samples not found at {SAMPLES} (they live in shared/data/instruments)")
    c = Child()
    yield c
    c.close()


def fresh(path: Path) -> dict[str, object]:
    """Load ``path`` in a new capped child: the bound for this one file, with nothing loaded before."""
    result = subprocess.run(
        [sys.executable, str(HERE / "instrument_probe.py"), str(path), str(256 * MB), "50", str(8 * 768 * 576 * 2)],
        capture_output=True,
        text=True,
        timeout=LOAD_SECONDS + 60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def check(child: Child, path: Path) -> None:
    result = child.load(path)
    if result["outcome"] == "MemoryError":
        # The long-lived child's cap is shared by every load it made: what an earlier hostile file
        # left mapped counts against this one (valid samples leave nothing: 445 MB after 135 loads).
        # A MemoryError there is decided again in a fresh child, capped for this file alone.
        child.restart()
        result = fresh(path)
    assert result["outcome"] in ("ok", "FormatError"), result
    if result["outcome"] == "FormatError":
        message = str(result["message"])
        assert message.startswith(repr(str(path))) and "\n" not in message and len(message) <= 500, (
            message
        )  # errors.MAX_MESSAGE


@pytest.mark.slow
@given(name=st.sampled_from(NAMES or ["-"]), fraction=st.floats(0, 1, exclude_max=True))
@example(name="example_ps.tiff", fraction=0.5)  # a TIFF that keeps no channel: was an IndexError
def test_truncated_samples(child: Child, tmp_path_factory: pytest.TempPathFactory, name: str, fraction: float) -> None:
    data = (SAMPLES / name).read_bytes()
    path = tmp_path_factory.getbasetemp() / f"cut{Path(name).suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    check(child, path)


@pytest.mark.slow
@example(name="di-3.di", flips=[(0, 0)])  # tried as a MATLAB file: scipy's header listing asked for GBs
@example(name="10x10-one_channel_without_name.ibw", flips=[(15, 1), (23, 128)])  # igor2: 2 GB for a size field
@example(name="opdx-3.opdx", flips=[(88, 26)])  # a changed OPDx length field: read(length) asked for it all
@given(
    name=st.sampled_from(NAMES or ["-"]),
    # Most flips land in the header, where they steer the reader; some anywhere.
    flips=st.lists(
        st.tuples(st.one_of(st.integers(0, 1023), st.integers(0, 1 << 22)), st.integers(0, 255)), min_size=1, max_size=8
    ),
)
def test_samples_with_bytes_changed(
    child: Child, tmp_path_factory: pytest.TempPathFactory, name: str, flips: list[tuple[int, int]]
) -> None:
    data = bytearray((SAMPLES / name).read_bytes())
    for offset, value in flips:
        data[offset % len(data)] = value
    path = tmp_path_factory.getbasetemp() / f"flipped{Path(name).suffix}"
    path.write_bytes(bytes(data))
    check(child, path)


OTHERS = sorted(
    p
    for p in (ROOT.parent / "shared" / "data").glob("*/*")
    if p.suffix in (".gwy", ".x3p", ".tmd") and p.stat().st_size < 4 * MB
)


@pytest.mark.slow
@given(
    index=st.integers(0, max(len(OTHERS) - 1, 0)),
    flips=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=4),
    suffix=st.sampled_from([".bin", ".dat", ".tiff", ".txt"]),
)
def test_files_no_format_of_tmd_nb_claims_go_through_detection_within_the_bound(
    child: Child, tmp_path_factory: pytest.TempPathFactory, index: int, flips: list[tuple[int, int]], suffix: str
) -> None:
    # The magic of tmd_nb's own formats broken, so every reader of SurfaceTopography is tried on them.
    require(bool(OTHERS), "no samples of tmd_nb's own formats in shared/data")
    data = bytearray(OTHERS[index].read_bytes())
    for offset, value in flips:
        data[offset % len(data)] = value
    path = tmp_path_factory.getbasetemp() / f"other{suffix}"
    path.write_bytes(bytes(data))
    check(child, path)
