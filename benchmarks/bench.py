"""Time tmd_nb's savers and loaders against numpy's on the same arrays, in one run.

    python benchmarks/bench.py            # the full run (a few minutes on 2 cores)
    python benchmarks/bench.py --quick    # a smoke run of a few seconds
    python benchmarks/bench.py --json benchmarks/results.json   # also keep the numbers (the docs plot them)
    python benchmarks/bench.py --only vendor   # instruments' files against SurfaceTopography, and convert

Every number is the median of several repeats, measured through the public API
(``tmd_nb.export_to_npz``, ``load_from_npz``, ``export_to_npy``, ``load_from_npy``,
``load_tmd``), on files in a temporary directory (warm page cache). Peak memory is the
tracemalloc peak of one extra, separate run of the operation: every numpy array and Python
object allocated during it (the array being saved is allocated before, so a save's peak is
what the save adds on top of it; a load's includes the array it returns). Throughput is
array bytes (MB = 10^6 bytes) per second; ratio is array bytes / file bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tmd_nb  # noqa: E402
from tmd_nb.storage import deflate, libraries  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "data" / "tmd"
MB = 1e6


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------


def smooth_surface(n: int, seed: int = 0) -> np.ndarray:
    """A float64 rough surface in mm: power-law spectrum (self-affine, like machined or worn
    surfaces), 5 um rms, plus 20 nm of white measurement noise. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft2(rng.standard_normal((n, n)))
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.rfftfreq(n)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = 1.0
    spectrum *= k**-1.6
    spectrum[0, 0] = 0.0
    z = np.fft.irfft2(spectrum, s=(n, n))
    z *= 0.005 / z.std()
    z += rng.normal(0.0, 2e-5, z.shape)
    return z


def quantise(z: np.ndarray, bits: int = 15) -> np.ndarray:
    """Heights on a grid of 2**bits steps over their range, as the real TrueMap scans are."""
    step = (z.max() - z.min()) / 2**bits
    return np.round((z - z.min()) / step) * step


@dataclass
class Dataset:
    name: str
    array: np.ndarray
    tmd_path: Path | None = None  # a real scan: time load_tmd on it


def datasets(quick: bool, tmp: Path) -> list[Dataset]:
    sizes = [256, 512] if quick else [1000, 4000]
    out = []
    for n in sizes:
        z = smooth_surface(n)
        q = quantise(z)
        out.append(Dataset(f"synthetic {n}x{n} float32", q.astype(np.float32)))
        if n == sizes[-1]:
            out.append(Dataset(f"synthetic {n}x{n} float32, unquantised", z.astype(np.float32)))
        out.append(Dataset(f"synthetic {n}x{n} float64", q))
        del z, q
    for path in sorted(SAMPLES.glob("v2_*.tmd")) if SAMPLES.is_dir() else []:
        scan = tmd_nb.load_tmd(path)["height_map"]
        out.append(Dataset(f"scan {path.stem} {scan.shape[1]}x{scan.shape[0]}", scan, path))
    for d in out:  # synthetic float32 maps get a .tmd copy, to time the TMD reader at size
        if d.tmd_path is None and d.array.dtype == np.float32 and "unquantised" not in d.name:
            d.tmd_path = Path(
                tmd_nb.export_to_tmd(
                    {"height_map": d.array, "x_length": 1.0, "y_length": 1.0}, tmp / f"{d.array.shape[0]}.tmd"
                )
            )
    return out


# ------------------------------------------------------------------------------------------
# measuring
# ------------------------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    seconds: float
    nbytes: int
    file_bytes: int | None
    peak: int

    @property
    def mbps(self) -> float:
        return self.nbytes / MB / self.seconds

    @property
    def ratio(self) -> str:
        return f"{self.nbytes / self.file_bytes:.3f}" if self.file_bytes else ""


def measure(label: str, fn: Callable[[], object], nbytes: int, repeats: int, file: Path | None = None) -> Timing:
    """Median wall time of ``fn`` over ``repeats`` calls, after one untimed call, then its peak memory (one more call).

    The untimed call first takes what only a first call pays (the allocator growing its heap
    into fresh pages, which the kernel may first compact into huge pages: tens of ms for a 32 MB
    map, after a row that freed other sizes), so that a row times the steady state, whichever
    row ran before it. Before each call the disk cache's dirty pages are written out
    (``os.sync``, not timed): an fsync may otherwise also wait for what earlier rows wrote, which
    made a save's time depend on the rows before it.
    """
    fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        if hasattr(os, "sync"):
            os.sync()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = file.stat().st_size if file is not None else None
    return Timing(label, statistics.median(times), nbytes, size, peak)


def fsynced(save: Callable[[str], None], path: Path) -> Callable[[], None]:
    """numpy's save followed by fsync, the durability every tmd_nb save gives."""

    def run() -> None:
        save(str(path))
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    return run


@dataclass
class Row:
    data: str
    op: str
    ours: Timing
    theirs: Timing

    @property
    def speed(self) -> float:
        """numpy's time / tmd_nb's: above 1, tmd_nb is faster."""
        return self.theirs.seconds / self.ours.seconds

    @property
    def size(self) -> float:
        """tmd_nb's file / numpy's."""
        return self.ours.file_bytes / self.theirs.file_bytes


def bench_dataset(d: Dataset, tmp: Path, repeats: int, levels: list[int | str]) -> list[Row]:
    a = d.array
    n = a.nbytes
    names = ["t.npz", "ts.npz", "t.npy", "n.npz", "ns.npz", "n.npy"] + [f"t{level}.npz" for level in levels]
    p = {k: tmp / k for k in names}
    for f in p.values():
        f.unlink(missing_ok=True)
    rows = []

    def row(op: str, ours: Timing, theirs: Timing) -> None:
        rows.append(Row(d.name, op, ours, theirs))

    np_savez_c = measure(
        "np.savez_compressed", lambda: np.savez_compressed(p["n.npz"], height_map=a), n, repeats, p["n.npz"]
    )
    row(
        "NPZ save, compressed (default)",
        measure("export_to_npz", lambda: tmd_nb.export_to_npz({"height_map": a}, p["t.npz"]), n, repeats, p["t.npz"]),
        np_savez_c,
    )
    for level in levels:
        key = f"t{level}.npz"
        row(
            f"NPZ save, level={level}",
            measure(
                f"export_to_npz level={level}",
                lambda key=key, level=level: tmd_nb.export_to_npz({"height_map": a}, p[key], level=level),
                n,
                repeats,
                p[key],
            ),
            np_savez_c,
        )
    row(
        "NPZ load, tmd_nb's compressed file",
        measure("load_from_npz", lambda: tmd_nb.load_from_npz(p["t.npz"]), n, repeats, p["t.npz"]),
        measure("np.load", lambda: np.load(p["t.npz"])["height_map"], n, repeats, p["t.npz"]),
    )
    row(
        "NPZ load, numpy's compressed file",
        measure("load_from_npz", lambda: tmd_nb.load_from_npz(p["n.npz"]), n, repeats, p["n.npz"]),
        measure("np.load", lambda: np.load(p["n.npz"])["height_map"], n, repeats, p["n.npz"]),
    )
    row(
        "NPZ save, stored (compress=False)",
        measure(
            "export_to_npz(compress=False)",
            lambda: tmd_nb.export_to_npz({"height_map": a}, p["ts.npz"], compress=False),
            n,
            repeats,
            p["ts.npz"],
        ),
        measure("np.savez + fsync", fsynced(lambda f: np.savez(f, height_map=a), p["ns.npz"]), n, repeats, p["ns.npz"]),
    )
    row(
        "NPZ load, stored",
        measure("load_from_npz", lambda: tmd_nb.load_from_npz(p["ts.npz"]), n, repeats, p["ts.npz"]),
        measure("np.load", lambda: np.load(p["ns.npz"])["height_map"], n, repeats, p["ns.npz"]),
    )
    row(
        "NPY save",
        measure("export_to_npy", lambda: tmd_nb.export_to_npy(a, p["t.npy"]), n, repeats, p["t.npy"]),
        measure("np.save + fsync", fsynced(lambda f: np.save(f, a), p["n.npy"]), n, repeats, p["n.npy"]),
    )
    offset = p["n.npy"].stat().st_size - n
    row(
        "NPY load",
        measure("load_from_npy", lambda: tmd_nb.load_from_npy(p["t.npy"]), n, repeats, p["t.npy"]),
        measure("np.load", lambda: np.load(p["n.npy"]), n, repeats, p["n.npy"]),
    )
    row(
        "NPY load vs raw read",
        measure("load_from_npy", lambda: tmd_nb.load_from_npy(p["t.npy"]), n, repeats, p["t.npy"]),
        measure("np.fromfile", lambda: np.fromfile(p["n.npy"], dtype=a.dtype, offset=offset), n, repeats, p["n.npy"]),
    )
    if d.tmd_path is not None:
        t = d.tmd_path
        start = t.stat().st_size - n
        row(
            "TMD load",
            measure("load_tmd", lambda: tmd_nb.load_tmd(t), n, repeats, t),
            measure("np.fromfile", lambda: np.fromfile(t, dtype="<f4", offset=start).reshape(a.shape), n, repeats, t),
        )
    return rows


# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        import isal

        isal_version = isal.__version__
    except ImportError:
        isal_version = "not installed (zlib fallback)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"machine: {cpu}, {os.cpu_count()} cores ({usable} usable), {platform.system()} {platform.release()}\n"
        f"python {platform.python_version()}, numpy {np.__version__}, isal {isal_version}, "
        f"tmd_nb {tmd_nb.__version__}; deflate threads {deflate.thread_count(None)}; load average {load}"
    )


def table(rows: list[Row]) -> str:
    head = (
        f"{'data':<40} {'operation':<35} | {'tmd_nb':<14} {'ms':>8} {'MB/s':>7} {'ratio':>6} {'peak MB':>7} | "
        f"{'numpy baseline':<20} {'ms':>8} {'MB/s':>7} {'ratio':>6} {'peak MB':>7} | {'speed':>6} {'size':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        o, t = r.ours, r.theirs
        size = f"{r.size:.3f}" if o.file_bytes and t.file_bytes and "save" in r.op else ""
        lines.append(
            f"{r.data:<40} {r.op:<35} | {'':<14} "
            f"{o.seconds * 1e3:8.1f} {o.mbps:7.0f} {o.ratio:>6} {o.peak / MB:7.1f} | "
            f"{t.label:<20} {t.seconds * 1e3:8.1f} {t.mbps:7.0f} {t.ratio:>6} {t.peak / MB:7.1f} | "
            f"{r.speed:5.2f}x {size:>6}"
        )
    return "\n".join(lines)


LEGEND = """\
speed = numpy time / tmd_nb time (above 1: tmd_nb is faster); size = tmd_nb file / numpy file.
Baselines: np.savez_compressed and np.load exactly as called (no fsync); "np.savez + fsync" and
"np.save + fsync" add os.fsync of the written file, since every tmd_nb save is fsynced (atomic,
durable). tmd_nb's times include its atomic temp-file write, fsync and rename. np.fromfile reads
the raw array bytes (no header parsing, no checks): the floor for any reader."""


def ladder(rows: list[Row], levels: list[int | str]) -> str:
    """Per data set (and the real scans together), each level's speed and size against numpy's."""
    ops = {lv: "NPZ save, compressed (default)" if lv == "default" else f"NPZ save, level={lv}" for lv in levels}
    labels = {lv: "fastest (default)" if lv == "default" else str(lv) for lv in levels}
    head = f"  {'data':<40} " + " ".join(f"{labels[lv]:>22}" for lv in levels)
    lines = [head, f"  {'':<40} " + " ".join(f"{'speed   size':>22}" for _ in levels), "  " + "-" * (len(head) - 2)]
    data = list(dict.fromkeys(r.data for r in rows if r.op in ops.values()))  # the NPZ data sets
    by = {(r.data, r.op): r for r in rows}
    scans = [d for d in data if d.startswith("scan ")]

    def cell(found: list[Row]) -> str:
        if not found:
            return f"{'':>22}"
        ours = sum(r.ours.seconds for r in found)
        theirs = sum(r.theirs.seconds for r in found)
        size = sum(r.ours.file_bytes or 0 for r in found) / sum(r.theirs.file_bytes or 1 for r in found)
        return f"{theirs / ours:>8.2f}x {(size - 1) * 100:>+7.2f}%"

    for d in data:
        lines.append(f"  {d:<40} " + " ".join(cell([by[d, ops[lv]]] if (d, ops[lv]) in by else []) for lv in levels))
    if scans:
        lines.append(
            f"  {'real scans together':<40} "
            + " ".join(cell([by[d, ops[lv]] for d in scans if (d, ops[lv]) in by]) for lv in levels)
        )
    return "\n".join(lines)


def targets(rows: list[Row], big: str) -> str:
    by = {(r.data, r.op): r for r in rows}
    out = []
    for data in (big, big + ", unquantised"):

        def get(op: str, data: str = data) -> Row | None:
            return by.get((data, op))

        save = get("NPZ save, compressed (default)")
        if save is None:
            continue
        speed, grow = save.speed, save.size
        out.append(f"[{data}]")
        out.append(
            f"  compressed save >= 15x np.savez_compressed, file <= 5% larger: {speed:.1f}x, "
            f"{(grow - 1) * 100:+.1f}% -> {'MET' if speed >= 15 and grow <= 1.05 else 'NOT MET'}"
        )
        balanced = get("NPZ save, level=balanced")
        if balanced is not None:
            gb, sb = balanced.size, balanced.speed
            out.append(
                f"  level='balanced' file <= 1% larger than np.savez_compressed's, >= 6x its speed: "
                f"{(gb - 1) * 100:+.2f}%, {sb:.1f}x -> {'MET' if gb <= 1.01 and sb >= 6 else 'NOT MET'}"
            )
        smallest = get("NPZ save, level=smallest")
        if smallest is not None:
            gs, ss = smallest.size, smallest.speed
            out.append(
                f"  level='smallest' file smaller than np.savez_compressed's: {(gs - 1) * 100:+.2f}%, "
                f"{ss:.1f}x its speed -> {'MET' if gs < 1 else 'NOT MET'}"
            )
        small = get("NPZ save, level=6")
        if small is not None:
            g6 = small.size
            out.append(
                f"  level=6 file no larger than np.savez_compressed's: {(g6 - 1) * 100:+.3f}%, "
                f"{small.speed:.1f}x its speed -> {'MET' if g6 <= 1 else 'NOT MET'}"
            )
        for op, what in (
            ("NPZ load, numpy's compressed file", "numpy's file"),
            ("NPZ load, tmd_nb's compressed file", "tmd_nb's file"),
        ):
            r = get(op)
            s = r.speed
            out.append(f"  compressed load >= 2x np.load ({what}): {s:.2f}x -> {'MET' if s >= 2 else 'NOT MET'}")
        r = get("NPY save")
        s = r.speed
        out.append(f"  NPY save >= 0.8x np.save + fsync: {s:.2f}x -> {'MET' if s >= 0.8 else 'NOT MET'}")
        r = get("NPY load")
        s = r.speed
        out.append(f"  NPY load >= 0.8x np.load: {s:.2f}x -> {'MET' if s >= 0.8 else 'NOT MET'}")
        peaks = [r.ours.peak for r in rows if r.data == data and "save" in r.op]
        out.append(
            f"  a save adds <= 64 MB of peak memory: at most {max(peaks) / MB:.1f} MB "
            f"(array {save.ours.nbytes / MB:.0f} MB) -> {'MET' if max(peaks) <= 64 * 2**20 else 'NOT MET'}"
        )
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# exchange formats (X3P, GWY)
# ------------------------------------------------------------------------------------------

EXCHANGE_SIZE = 2000


def raw_write(nbytes: int, path: Path) -> Callable[[], None]:
    """Write ``nbytes`` to ``path`` and fsync it: the floor for an uncompressed saver of that size."""
    payload = np.zeros(nbytes, dtype=np.uint8)

    def run() -> None:
        with open(path, "wb") as f:
            f.write(payload.data)
            f.flush()
            os.fsync(f.fileno())

    return run


def raw_read(path: Path) -> Callable[[], None]:
    """Read ``path``'s bytes into an array: the floor for a reader of an uncompressed file."""
    return lambda: np.fromfile(path, dtype=np.uint8)


def gwy_floor(path: Path, dtype: np.dtype, points: int) -> Callable[[], None]:
    """Read a ``.gwy`` file's bytes and turn its float64 metres back into millimetres of ``dtype``
    (numpy, one thread): what any loader of that map must do at least, without a check."""
    raw = path.read_bytes()
    at = raw.index(b"data\0D") + len(b"data\0D") + 4  # the data field's float64 array

    def run() -> None:
        data = np.fromfile(path, dtype=np.uint8)
        metres = data[at : at + 8 * points].view("<f8")
        (metres / 1e-3).astype(dtype)

    return run


def bench_exchange(n: int, tmp: Path, repeats: int) -> list[Row]:
    """X3P and GWY against numpy, tmd_nb's NPZ, x3pio's own writer and reader, and raw file I/O.

    The map is the scan-like surface unquantised (full float precision), as the issue measured
    it, in millimetres (the default unit): float32 and float64. A tiny file of each format is
    written and read first, so that no row times an import.
    """
    tiny = {"height_map": np.zeros((4, 4))}
    for fmt in ("x3p", "gwy", "npz"):
        tmd_nb.load(tmd_nb.save(tiny, tmp / f"warm.{fmt}"))
    z = smooth_surface(n)
    rows: list[Row] = []
    for a in (z.astype(np.float32), z):
        rows += _exchange_rows(a, tmp, repeats)
    return rows


def _exchange_rows(a: np.ndarray, tmp: Path, repeats: int) -> list[Row]:
    import x3pio

    n = a.shape[0]
    name = f"scan-like {n}x{n} {a.dtype.name}, mm"
    d = {"height_map": a, "x_length": n * 1e-3, "y_length": n * 1e-3}
    nb = a.nbytes
    p = {k: tmp / f"x.{k}" for k in ("x3p", "x3pio.x3p", "npz", "np.npz", "gwy", "raw")}
    metres = a.astype(np.float64) * 1e-3
    rows: list[Row] = []

    def row(op: str, ours: Timing, theirs: Timing) -> None:
        rows.append(Row(name, op, ours, theirs))

    x3p_save = measure("export_to_x3p", lambda: tmd_nb.export_to_x3p(d, p["x3p"]), nb, repeats, p["x3p"])
    npz_save = measure("export_to_npz", lambda: tmd_nb.export_to_npz(d, p["npz"]), nb, repeats, p["npz"])
    savez = measure(
        "np.savez_compressed", lambda: np.savez_compressed(p["np.npz"], height_map=a), nb, repeats, p["np.npz"]
    )
    row("X3P save", x3p_save, savez)
    row("X3P save vs NPZ save", x3p_save, npz_save)
    x3pio_write = measure(
        "x3pio.write (metres)",
        lambda: x3pio.write(p["x3pio.x3p"], metres, x_scale=1e-6, y_scale=1e-6),
        nb,
        repeats,
        p["x3pio.x3p"],
    )
    row("X3P save vs x3pio.write", x3p_save, x3pio_write)
    x3p_load = measure("load_x3p", lambda: tmd_nb.load_x3p(p["x3p"]), nb, repeats, p["x3p"])
    npz_load = measure("load_from_npz", lambda: tmd_nb.load_from_npz(p["npz"]), nb, repeats, p["npz"])
    row("X3P load vs NPZ load", x3p_load, npz_load)
    x3pio_read = measure("x3pio.read (verify)", lambda: x3pio.read(p["x3p"], verify=True), nb, repeats, p["x3p"])
    row("X3P load vs x3pio.read", x3p_load, x3pio_read)
    gwy_save = measure("export_to_gwy", lambda: tmd_nb.export_to_gwy(d, p["gwy"]), nb, repeats, p["gwy"])
    write = measure("write + fsync", raw_write(p["gwy"].stat().st_size, p["raw"]), nb, repeats, p["raw"])
    row("GWY save vs writing its bytes", gwy_save, write)
    gwy_load = measure("load_gwy", lambda: tmd_nb.load_gwy(p["gwy"]), nb, repeats, p["gwy"])
    row("GWY load vs reading its bytes", gwy_load, measure("np.fromfile", raw_read(p["gwy"]), nb, repeats, p["gwy"]))
    # The least a loader of a map in mm must do: read the metres and convert them back, no checks.
    floor = measure("np.fromfile + convert", gwy_floor(p["gwy"], a.dtype, a.size), nb, repeats, p["gwy"])
    row("GWY load vs reading and converting its bytes", gwy_load, floor)
    for f in p.values():
        f.unlink(missing_ok=True)
    print(f"  measured {name}", file=sys.stderr, flush=True)
    return rows


def exchange_targets(rows: list[Row]) -> str:
    """The exchange-format targets, MET or NOT MET, per data set."""
    by = {(r.data, r.op): r for r in rows}
    out = []
    for data in dict.fromkeys(r.data for r in rows if r.op.startswith(("X3P", "GWY"))):
        out.append(f"  {data}:")

        def get(op: str, data: str = data) -> Row | None:
            return by.get((data, op))

        if (r := get("X3P save")) is not None:
            out.append(
                f"    X3P save >= 5x np.savez_compressed: {r.speed:.2f}x -> {'MET' if r.speed >= 5 else 'NOT MET'}"
            )
        if (r := get("X3P load vs NPZ load")) is not None:
            slow = 1 / r.speed
            out.append(
                f"    X3P load within 2x of NPZ load: {slow:.2f}x its time -> {'MET' if slow <= 2 else 'NOT MET'}"
            )
        if (r := get("X3P save vs NPZ save")) is not None:
            out.append(f"    X3P size <= 1.05x the NPZ's: {r.size:.4f}x -> {'MET' if r.size <= 1.05 else 'NOT MET'}")
        if (r := get("GWY save vs writing its bytes")) is not None and r.ours.file_bytes:
            points = r.ours.nbytes // np.dtype(data.split()[2].rstrip(",")).itemsize
            grow = r.ours.file_bytes / (8 * points)
            out.append(f"    GWY size <= 1.05x 8 bytes a point: {grow:.4f}x -> {'MET' if grow <= 1.05 else 'NOT MET'}")
            slow = 1 / r.speed
            out.append(
                f"    GWY save within 2x of writing its bytes: {slow:.2f}x -> {'MET' if slow <= 2 else 'NOT MET'}"
            )
        if (r := get("GWY load vs reading its bytes")) is not None:
            slow = 1 / r.speed
            out.append(
                f"    GWY load within 2x of reading its bytes: {slow:.2f}x -> {'MET' if slow <= 2 else 'NOT MET'}"
            )
        if (r := get("GWY load vs reading and converting its bytes")) is not None:
            out.append(
                f"    (GWY load against reading its bytes and converting metres to mm, unchecked, one thread: "
                f"{1 / r.speed:.2f}x its time)"
            )
    return "\n".join(out)


# ------------------------------------------------------------------------------------------
# instruments' files (through SurfaceTopography) and convert of a folder of them
# ------------------------------------------------------------------------------------------

INSTRUMENTS = ROOT.parent / "shared" / "data" / "instruments"
#: Copies of each instrument file in the folder ``convert`` is timed on: work for two cores.
CONVERT_COPIES = 24


def instrument_files() -> list[Path]:
    return sorted(p for p in INSTRUMENTS.glob("*") if p.is_file() and p.suffix != ".md") if INSTRUMENTS.is_dir() else []


def _copies(path: Path, tmp: Path, n: int, tag: str) -> list[Path]:
    """``n`` copies of ``path``: every timed load reads a file read for the first time by that name,
    as a user's load does (tmd_nb remembers the format of the last file it recognised)."""
    out = []
    for i in range(n):
        copy = tmp / f"{tag}{i}-{path.name}"
        copy.write_bytes(path.read_bytes())
        out.append(copy)
    return out


def _surfacetopography_read(fmt: str | None, index: int) -> Callable[[Path], object]:
    """SurfaceTopography's own read of one channel's heights: detection (or the format given), the
    channel, its heights; warnings ignored as tmd_nb ignores them."""
    import warnings

    import SurfaceTopography as st

    def read(path: Path) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = st.open_topography(str(path), format=fmt) if fmt else st.open_topography(str(path))
            try:
                return reader.topography(channel_index=index).heights()
            finally:
                reader.close()

    return read


def bench_vendor(tmp: Path, repeats: int) -> list[Row]:
    """``tmd_nb.load`` of each instrument file against SurfaceTopography's own read of the same
    channel: ``open_topography(path)`` (it detects the format, as ``load`` does) and, as the floor,
    ``open_topography(path, format=...)``. Every call reads a fresh copy (no remembered detection);
    one file of each is read first, so that no row times an import."""
    from tmd_nb.formats import instruments

    rows: list[Row] = []
    for path in instrument_files():
        warm = _copies(path, tmp, 1, "warm")[0]
        data = tmd_nb.load(warm)
        names = [c["name"] for c in instruments.channels_of(warm)]
        index = names.index(data["channel"])
        fmt = instruments._detect(instruments._library(), warm, warm.read_bytes()[:512])
        heights = np.ma.asarray(_surfacetopography_read(None, index)(warm))
        # the same heights (SurfaceTopography indexes x, y; tmd_nb rows, columns; missing points NaN)
        ours_map = data["height_map"]
        theirs_map = np.ma.filled(heights.astype(np.float64), np.nan)
        theirs_map = theirs_map.reshape(1, -1) if theirs_map.ndim == 1 else theirs_map.T
        assert np.array_equal(ours_map, theirs_map, equal_nan=True), path.name
        nbytes = ours_map.nbytes
        timed: dict[str, Timing] = {}
        for label, read in (
            ("tmd_nb.load", lambda p: tmd_nb.load(p)),
            ("open_topography", _surfacetopography_read(None, index)),
            ("open_topography(fmt)", _surfacetopography_read(fmt, index)),
        ):
            fresh = iter(_copies(path, tmp, repeats + 2, "t"))  # the untimed call, the timed ones, the peak
            timed[label] = measure(label, lambda read=read, fresh=fresh: read(next(fresh)), nbytes, repeats, path)
            for copy in tmp.glob(f"t*-{path.name}"):
                copy.unlink()
        warm.unlink()
        name = f"{path.name} {ours_map.shape[1]}x{ours_map.shape[0]}"
        ours, detected, given = timed.values()
        rows.append(Row(name, "load vs ST's read", ours, detected))
        rows.append(Row(name, "load vs ST's read, format given", ours, given))
        print(f"  measured {path.name}", file=sys.stderr, flush=True)
    return rows


def vendor_targets(rows: list[Row]) -> str:
    """Each file: tmd_nb.load within 1.2x of SurfaceTopography's own read (which detects the format too)."""
    out = []
    for r in rows:
        if r.op == "load vs ST's read":
            slow = r.ours.seconds / r.theirs.seconds
            out.append(
                f"  {r.data:<40} load within 1.2x of SurfaceTopography's read: {r.ours.seconds * 1e3:6.2f} ms vs "
                f"{r.theirs.seconds * 1e3:6.2f} ms, {slow:.2f}x -> {'MET' if slow <= 1.2 else 'NOT MET'}"
            )
    return "\n".join(out)


@dataclass
class ConvertRun:
    label: str
    workers: int
    files: int
    seconds: float  # median wall time
    cpu: float  # median CPU seconds of this process and every process working for it (user + system)


def _forkserver() -> Any:
    """multiprocessing's fork server (private: the standard library's own tests use it)."""
    import multiprocessing.forkserver as fs

    return getattr(fs, "_forkserver", None)


def _stop_forkserver() -> None:
    """Stop the fork server and wait for it, so that its CPU time (and that of the workers it forked
    and reaped) counts in RUSAGE_CHILDREN; the next pool starts a new one."""
    stop = getattr(_forkserver(), "_stop", None)
    if stop is not None:
        stop()


def _forkserver_cpu() -> float:
    """CPU seconds of the running fork server and the workers it reaped (/proc: user + system of
    both), 0 when none runs or /proc is missing."""
    pid = getattr(_forkserver(), "_forkserver_pid", None)
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def bench_convert(tmp: Path, repeats: int, copies: int = CONVERT_COPIES) -> list[ConvertRun]:
    """``tmd_nb.convert`` of a folder of the instrument files (``copies`` of each) to NPZ: one
    worker (in this process, which has read such files before), and two (a process pool) both as
    a first run (the fork server starts and imports tmd_nb and SurfaceTopography: a run of
    ``tmd-nb convert``) and with the server running (a later run in the same session). Wall time,
    and CPU time of this process and every process working for it. Each run writes into an empty
    folder (nothing skipped)."""
    import shutil

    src = tmp / "mixed"
    src.mkdir()
    for path in instrument_files():
        if path.suffix == ".txt":
            continue  # .txt is not offered for folder conversion (GENERIC)
        _copies(path, src, copies, "c")
    files = len(list(src.iterdir()))
    tmd_nb.load(next(src.iterdir()))  # this process has SurfaceTopography imported, as after any load

    def run(workers: int, first: bool) -> tuple[float, float]:
        out = tmp / "out"
        gc.collect()
        if first:
            _stop_forkserver()
        s0, c0, f0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN), 0.0
        f0 = _forkserver_cpu()
        t0 = time.perf_counter()
        report = tmd_nb.convert(src, out, format="npz", jobs=workers, progress=False)
        t1 = time.perf_counter()
        f1 = _forkserver_cpu()  # the pool's workers have exited and been reaped by now
        if first:
            _stop_forkserver()
        s1, c1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        assert report.ok and len(report.converted) == files, str(report)
        shutil.rmtree(out)
        cpu = sum(b.ru_utime - a.ru_utime + b.ru_stime - a.ru_stime for a, b in ((s0, s1), (c0, c1)))
        return t1 - t0, cpu + (0.0 if first else f1 - f0)

    runs = []
    for label, workers, first in (
        ("1 worker (in this process)", 1, False),
        ("2 workers, first run", 2, True),
        ("2 workers, server running", 2, False),
    ):
        if workers > 1 and not first:
            run(workers, False)  # start the server (it stays)
        wall, cpu = zip(*(run(workers, first) for _ in range(repeats)), strict=True)
        runs.append(ConvertRun(label, workers, files, statistics.median(wall), statistics.median(cpu)))
        print(f"  measured convert, {label}", file=sys.stderr, flush=True)
    # The command line, each run a new interpreter (imports and the pool's start included on both sides):
    # wall time only (the fork server outlives the command, so its CPU time reaches no one's RUSAGE_CHILDREN).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for workers in (1, 2):
        wall = []
        for _ in range(repeats):
            command = [sys.executable, "-m", "tmd_nb", "convert", str(src), "-o", str(tmp / "out"), "--no-progress"]
            t0 = time.perf_counter()
            subprocess.run([*command, "--jobs", str(workers)], check=True, env=env, capture_output=True)
            wall.append(time.perf_counter() - t0)
            shutil.rmtree(tmp / "out")
        label = f"tmd-nb convert --jobs {workers}"
        runs.append(ConvertRun(label, workers, files, statistics.median(wall), float("nan")))
        print(f"  measured {label}", file=sys.stderr, flush=True)
    shutil.rmtree(src)
    return runs


def _busy(n: int) -> float:
    """A pure-Python loop of ``n`` steps; its CPU seconds."""
    t0, x = time.process_time(), 0
    for i in range(n):
        x += i * i
    return time.process_time() - t0


def cores_free(steps: int = 5_000_000) -> float:
    """CPU/wall of two busy loops on a two-process pool: how many cores this machine gives us now
    (2.0 when it is quiet; less while other people's work runs). The ceiling of convert's CPU/wall."""
    import concurrent.futures as cf
    import multiprocessing

    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        list(pool.map(_busy, [1, 1]))
        t0 = time.perf_counter()
        cpu = sum(pool.map(_busy, [steps, steps]))
        return cpu / (time.perf_counter() - t0)


def convert_table(runs: list[ConvertRun]) -> str:
    """Each run's wall and CPU time, and its speed against one worker of the same kind (in this
    process, or the command line with ``--jobs 1``)."""
    lines = [f"  {'':<28} {'files':>5} {'wall s':>7} {'CPU s':>7} {'CPU/wall':>8} {'speedup':>7}"]
    for r in runs:
        one = next(o for o in runs if o.workers == 1 and o.label.startswith("tmd-nb") == r.label.startswith("tmd-nb"))
        cpu = f"{r.cpu:7.2f} {r.cpu / r.seconds:8.2f}" if math.isfinite(r.cpu) else f"{'-':>7} {'-':>8}"
        lines.append(f"  {r.label:<28} {r.files:>5} {r.seconds:7.2f} {cpu} {one.seconds / r.seconds:6.2f}x")
    one = runs[0]
    # Both cores busy is not enough (busy importing is no conversion): both busy, and the work done faster.
    for r in runs[1:3]:
        both, speedup = r.cpu / r.seconds, one.seconds / r.seconds
        met = both >= 1.8 and speedup >= 1.6
        lines.append(
            f"  convert using both cores, {r.label} (CPU/wall >= 1.8, >= 1.6x the speed of 1 worker): "
            f"{both:.2f}, {speedup:.2f}x -> {'MET' if met else 'NOT MET'}"
        )
    cli = [r for r in runs if r.label.startswith("tmd-nb")]
    if len(cli) == 2:
        speedup = cli[0].seconds / cli[1].seconds
        lines.append(
            f"  tmd-nb convert --jobs 2 >= 1.6x the speed of --jobs 1 (a new interpreter each): {speedup:.2f}x "
            f"-> {'MET' if speedup >= 1.6 else 'NOT MET'}"
        )
    return "\n".join(lines)


def cpu_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median CPU seconds of the whole process, every thread, user + system; median wall seconds)."""
    cpu, wall = [], []
    for _ in range(repeats):
        gc.collect()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        wall.append(t1 - t0)
    return statistics.median(cpu), statistics.median(wall)


def bounds(d: Dataset, tmp: Path, repeats: int) -> str:
    """What bounds the default save and the load of numpy's file: their parts, timed alone."""
    from isal import isal_zlib

    a = d.array
    raw = memoryview(a.reshape(-1)).cast("B")
    chunks = [raw[i : i + deflate.DEFLATE_CHUNK] for i in range(0, len(raw), deflate.DEFLATE_CHUNK)]
    out: list[bytes] = []

    def compress() -> None:
        out[:] = [isal_zlib.compressobj(2, isal_zlib.DEFLATED, -15).compress(c) for c in chunks]

    def write() -> None:
        with open(tmp / "w.bin", "wb") as f:
            for piece in out:
                f.write(piece)

    def write_fsync() -> None:
        with open(tmp / "w.bin", "wb") as f:
            for piece in out:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())

    c_cpu, _ = cpu_seconds(compress, repeats)
    crc_cpu, _ = cpu_seconds(lambda: libraries.crc32_of(raw), repeats)
    w_cpu, _ = cpu_seconds(write, repeats)
    _, f_wall = cpu_seconds(write_fsync, repeats)
    s_cpu, s_wall = cpu_seconds(lambda: tmd_nb.export_to_npz({"height_map": a}, tmp / "b.npz"), repeats)
    cores = deflate.thread_count(None)
    lines = [
        f"[{d.name}] default save, CPU seconds of each part alone (all threads, user + system):",
        f"  ISA-L level 2 over the {len(chunks)} chunks {c_cpu * 1e3:.0f} ms, CRC-32 {crc_cpu * 1e3:.0f} ms, "
        f"writing the {sum(map(len, out)) / MB:.0f} MB to the page cache {w_cpu * 1e3:.0f} ms "
        f"(+ fsync: {f_wall * 1e3:.0f} ms wall)",
        f"  the save: {s_cpu * 1e3:.0f} ms CPU, {s_wall * 1e3:.0f} ms wall on {cores} threads; ISA-L alone spread "
        f"over {cores} cores: {c_cpu / cores * 1e3:.0f} ms",
    ]
    np.savez_compressed(tmp / "nb.npz", height_map=a)
    if libraries.whole_inflater is not None:  # the single-stream inflate floor for numpy's file
        import zipfile

        info = zipfile.ZipFile(tmp / "nb.npz").getinfo("height_map.npy")
        with open(tmp / "nb.npz", "rb") as f:
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            f.seek(info.header_offset + 30 + name_len + extra_len)
            data = np.frombuffer(bytearray(f.read(info.compress_size)), np.uint8)
        target = np.empty(info.file_size, np.uint8)
        _, inflate_wall = cpu_seconds(lambda: libraries.whole_inflater(data, target, "x"), repeats)
        _, np_wall = cpu_seconds(lambda: np.load(tmp / "nb.npz")["height_map"], repeats)
        _, ours_wall = cpu_seconds(lambda: tmd_nb.load_from_npz(tmp / "nb.npz"), repeats)
        lines += [
            f"[{d.name}] load of numpy's file (one deflate stream):",
            f"  libdeflate inflating it alone, one call, one core: {inflate_wall * 1e3:.0f} ms; "
            f"load_from_npz {ours_wall * 1e3:.0f} ms; np.load {np_wall * 1e3:.0f} ms "
            f"(ceiling for any single-stream inflater this fast: {np_wall / inflate_wall:.2f}x np.load)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small arrays, one repeat: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 5, quick 1)")
    parser.add_argument(
        "--levels",
        default="balanced,smallest,6",
        help="compression levels to time besides the default (comma-separated names or integers)",
    )
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temporary directory)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the machine and every row as JSON")
    parser.add_argument(
        "--only",
        choices=("all", "exchange", "vendor"),
        default="all",
        help="exchange: only the X3P/GWY rows (at --exchange-size), not the NPZ/NPY/TMD ones; "
        "vendor: only instruments' files against SurfaceTopography, and convert of a folder of them",
    )
    parser.add_argument(
        "--exchange-size", type=int, default=None, help=f"side of the X3P/GWY map (default {EXCHANGE_SIZE}, quick 256)"
    )
    args = parser.parse_args(argv)
    side = args.exchange_size or (256 if args.quick else EXCHANGE_SIZE)
    repeats = args.repeats or (1 if args.quick else 5)
    levels: list[int | str] = [
        int(x) if x.strip().isdigit() else x.strip() for x in args.levels.split(",") if x.strip()
    ]
    started = time.perf_counter()
    print(machine(), flush=True)
    if args.only == "vendor":
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="tmd_nb-bench-") as tmp:
            vendor = bench_vendor(Path(tmp), repeats)
            before = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
            free = [cores_free()]
            runs = bench_convert(Path(tmp), repeats, 2 if args.quick else CONVERT_COPIES)
            free.append(cores_free())
        print(f"median of {repeats} repeat(s); files in a temporary directory on {args.dir or tempfile.gettempdir()}")
        print()
        print(table(vendor))
        print()
        print("Instrument-file targets (every load reads a copy not read before: format detection included):")
        print(vendor_targets(vendor))
        print()
        print(f"convert of a folder of the instrument files to NPZ (median of {repeats}; load average {before}):")
        print(convert_table(runs))
        print(
            f"  cores free (CPU/wall of two busy loops on two processes, before and after): "
            f"{free[0]:.2f}, {free[1]:.2f}: convert's CPU/wall cannot exceed it"
        )
        load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
        print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end {load}")
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tmd_nb-bench-") as tmp:
        exchange = bench_exchange(side, Path(tmp), repeats)
    if args.only == "exchange":
        print(f"median of {repeats} repeat(s); files in a temporary directory on {args.dir or tempfile.gettempdir()}")
        print()
        print(table(exchange))
        print()
        print("Exchange-format targets:")
        print(exchange_targets(exchange))
        load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
        print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end {load}")
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tmd_nb-bench-") as tmp:
        data = datasets(args.quick, Path(tmp))
        rows: list[Row] = []
        for d in data:
            rows += bench_dataset(d, Path(tmp), repeats, levels)
            print(f"  measured {d.name}", file=sys.stderr, flush=True)
    vendor: list[Row] = []
    runs: list[ConvertRun] = []
    if instrument_files():  # the shared sample files, beside the checkout
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="tmd_nb-bench-") as tmp:
            vendor = bench_vendor(Path(tmp), repeats)
            runs = bench_convert(Path(tmp), repeats, 2 if args.quick else CONVERT_COPIES)
    rows += exchange + vendor
    print(f"median of {repeats} repeat(s); files in a temporary directory on {args.dir or tempfile.gettempdir()}")
    print()
    print(table(rows))
    print()
    print(LEGEND)
    big = [d.name for d in data if d.name.startswith("synthetic") and d.name.endswith("float32")][-1]
    print()
    print("Ladder (speed and size against np.savez_compressed in the same run):")
    print(ladder(rows, ["default", *levels]))
    print()
    print("Targets (on " + big + "):")
    print(targets(rows, big))
    print()
    print("Exchange-format targets:")
    print(exchange_targets(exchange))
    if vendor:
        print()
        print("Instrument-file targets (every load reads a copy not read before: format detection included):")
        print(vendor_targets(vendor))
        print()
        print(f"convert of a folder of the instrument files to NPZ (median of {repeats}):")
        print(convert_table(runs))
    print()
    print("What bounds them (each part timed alone, medians):")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="tmd_nb-bench-") as tmp:
        print(bounds(next(d for d in data if d.name == big), Path(tmp), repeats if args.quick else 5))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average at the end {load}")
    if args.json:
        results = {
            "machine": machine().removeprefix("machine: "),
            "repeats": repeats,
            "rows": [dataclasses.asdict(r) for r in rows],
            "convert": [dataclasses.asdict(r) for r in runs],
        }
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
