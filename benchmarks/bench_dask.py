"""Scale-out benchmarks: Dask-backed exports, window reads from a large NPZ, batch conversion rates.

Three measurements, each against its in-process baseline in the same run:

* export of a Dask-backed float32 map to compressed NPZ (default 4 GiB) vs the export of the same
  array in memory: time and peak RSS, each in its own subprocess; and the same Dask map saved as
  X3P (streamed into ``data.bin`` as NPZ streams it) and as GWY (streamed into ``/0/data``; at
  most 22528 x 22528, as a Gwyddion object holds at most 4 GiB of float64 heights): their peak
  RSS against the NPZ save's;
* 256 x 256 windows read with ``open_dask`` from a compressed NPZ tmd_nb wrote (default 1 GiB):
  median time and RSS growth, in a subprocess (warm page cache);
* converting the sample scans x 100 copies: files per second of a plain loop (``load`` +
  ``export_to_npz``), of ``convert(jobs=2)`` and of ``convert`` on a 2-worker ``LocalCluster``.

``python benchmarks/bench_dask.py`` (full run: a few minutes; needs about 10 GB of free disk and
5 GB of memory for the in-memory baseline), ``--quick`` for a smoke run of seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "tmd"
#: The largest square map of 512-row blocks whose float64 heights a Gwyddion data field holds (4 GiB).
GWY_ROWS = 22528

# The map: a band of a quantised rough surface (like the real scans: heights on a grid of about
# range / 2^15), repeated down the rows with a shift per block row, so that computing a block
# costs a copy and the data compress like a scan. In memory: the same blocks, concatenated.
MAP = textwrap.dedent(
    """
    import numpy as np

    def band(rows, cols):  # in float32 throughout, so that making it costs little memory
        rng = np.random.default_rng(0)
        z = np.cumsum(rng.standard_normal((rows, cols), dtype=np.float32), axis=1, dtype=np.float32)
        z += np.cumsum(rng.standard_normal((rows, 1), dtype=np.float32), axis=0, dtype=np.float32)
        step = (z.max() - z.min()) / np.float32(2**15)
        np.round(z / step, out=z)
        z *= step
        return z

    def block(base, i):
        return base + np.float32(i)
    """
)

EXPORT = textwrap.dedent(
    """
    import resource, sys, time
    import numpy as np
    import tmd_nb
    exec(sys.argv[4])
    mode, rows, path, save = sys.argv[1], int(sys.argv[2]), sys.argv[3], getattr(tmd_nb, sys.argv[5])
    cols, band_rows = rows, 512
    base = band(band_rows, cols)
    if mode.startswith("dask"):
        import dask, dask.array as da
        from dask import delayed
        parts = [
            da.from_delayed(delayed(block)(base, i), (band_rows, cols), np.float32) for i in range(rows // band_rows)
        ]
        data = da.concatenate(parts, axis=0)
    else:
        data = np.concatenate([block(base, i) for i in range(rows // band_rows)], axis=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    save({"height_map": data}, path)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(seconds, before // 1024, peak // 1024)
    """
)

WINDOWS = textwrap.dedent(
    """
    import resource, statistics, sys, time
    import numpy as np
    import tmd_nb
    path, count = sys.argv[1], int(sys.argv[2])
    x = tmd_nb.open_dask(path)
    x[:1, :1].compute(scheduler="synchronous")  # imports and first-call costs out of the way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rng = np.random.default_rng(1)
    times = []
    for _ in range(count):
        r, c = (int(rng.integers(0, n - 256)) for n in x.shape)
        start = time.perf_counter()
        w = x[r : r + 256, c : c + 256].compute(scheduler="synchronous")
        times.append(time.perf_counter() - start)
        assert w.shape == (256, 256)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(statistics.median(times), max(times), (peak - before) / 1024)
    """
)


def run_child(code: str, *args: str) -> list[float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"benchmark child failed:\n{out.stderr}")
    return [float(v) for v in out.stdout.split()]


def bench_export(tmp: Path, rows: int, repeats: int) -> str:
    gib = rows * rows * 4 / 2**30
    results: dict[str, list[list[float]]] = {"memory": [], "dask": [], "dask-x3p": [], "dask-gwy": []}
    saves = {
        "memory": "export_to_npz",
        "dask": "export_to_npz",
        "dask-x3p": "export_to_x3p",
        "dask-gwy": "export_to_gwy",
    }
    sides = {mode: rows for mode in results}
    sides["dask-gwy"] = min(rows, GWY_ROWS)
    sizes = {}
    for _ in range(repeats):
        for mode in results:
            path = tmp / f"{mode}.{saves[mode][len('export_to_') :]}"
            results[mode].append(run_child(EXPORT, mode, str(sides[mode]), str(path), MAP, saves[mode]))
            sizes[mode] = path.stat().st_size
            path.unlink()
    size = sizes["dask"]
    lines = [f"export of a {rows}x{rows} float32 map ({gib:.2f} GiB) to compressed NPZ, {repeats} run(s), median:"]
    medians, growth = {}, {}
    labels = {
        "memory": "in memory (numpy array)",
        "dask": "Dask array (512-row blocks)",
        "dask-x3p": "Dask array, saved as X3P",
        "dask-gwy": "Dask array, saved as GWY",
    }
    for mode, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        peak = max(r[2] for r in runs)
        base = max(r[1] for r in runs)
        medians[mode], growth[mode] = seconds, max(r[2] - r[1] for r in runs)
        label = labels[mode]
        lines.append(
            f"  {label:30s} {seconds:7.2f} s  {sides[mode] ** 2 * 4 / 1e6 / seconds:7.0f} MB/s  "
            f"peak RSS {peak:6.0f} MiB (before the export {base:5.0f} MiB)"
        )
    lines.append(
        f"  Dask speed / in-memory speed: {medians['memory'] / medians['dask']:.2f}x; file {size / 1e6:.0f} MB"
    )
    lines.append(
        f"  Dask save's peak RSS growth, X3P / NPZ: {growth['dask-x3p'] / max(growth['dask'], 1):.2f}x "
        f"({growth['dask-x3p']:.0f} / {growth['dask']:.0f} MiB); X3P file {sizes['dask-x3p'] / 1e6:.0f} MB"
    )
    lines.append(
        f"  Dask save's peak RSS growth, GWY / NPZ: {growth['dask-gwy'] / max(growth['dask'], 1):.2f}x "
        f"({growth['dask-gwy']:.0f} / {growth['dask']:.0f} MiB); GWY file {sizes['dask-gwy'] / 1e6:.0f} MB "
        f"({sides['dask-gwy']}x{sides['dask-gwy']})"
    )
    return "\n".join(lines)


def bench_windows(tmp: Path, rows: int, count: int) -> str:
    path = tmp / "large.npz"
    run_child(EXPORT, "dask", str(rows), str(path), MAP, "export_to_npz")
    median, worst, grown = run_child(WINDOWS, str(path), str(count))
    size = path.stat().st_size
    path.unlink()
    return (
        f"256x256 windows from a {rows}x{rows} float32 compressed NPZ ({size / 2**30:.2f} GiB file), "
        f"{count} random windows, warm cache:\n"
        f"  median {median * 1000:.1f} ms, slowest {worst * 1000:.1f} ms, RSS growth {grown:.1f} MiB"
    )


def bench_convert(tmp: Path, copies: int) -> str:
    import tmd_nb

    scans = sorted(SAMPLES.glob("*.tmd"))
    if not scans:
        return f"conversion: skipped, no sample scans in {SAMPLES}"
    src = tmp / "scans"
    src.mkdir()
    for i in range(copies):
        for scan in scans:
            shutil.copy(scan, src / f"{i:03d}_{scan.name}")
    files = sorted(src.iterdir())
    rates = {}

    out = tmp / "loop"
    start = time.perf_counter()
    for f in files:
        tmd_nb.export_to_npz(tmd_nb.load(f), out / (f.stem + ".npz"))
    rates["plain loop: load + export_to_npz"] = len(files) / (time.perf_counter() - start)

    start = time.perf_counter()
    report = tmd_nb.convert(src, tmp / "jobs2", jobs=2, progress=False)
    rates["convert(jobs=2)"] = len(files) / (time.perf_counter() - start)
    assert len(report.converted) == len(files), report

    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__("tmd_nb"))  # worker start-up and imports are not timed
        start = time.perf_counter()
        report = tmd_nb.convert(src, tmp / "cluster", client=client, progress=False)
        rates["convert(client=LocalCluster of 2 workers)"] = len(files) / (time.perf_counter() - start)
    assert len(report.converted) == len(files), report
    loop = rates["plain loop: load + export_to_npz"]
    lines = [f"conversion of {len(files)} scans ({len(scans)} samples x {copies} copies, .tmd -> .npz):"]
    lines += [f"  {name:45s} {rate:7.1f} files/s  {rate / loop:5.2f}x" for name, rate in rates.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="export runs per mode (default 3, quick 1)")
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temporary directory)")
    parser.add_argument(
        "--only", default="export,windows,convert", help="sections to run, comma-separated (default: all three)"
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    export_rows = 2048 if args.quick else 32768  # 16 MiB / 4 GiB
    window_rows = 2048 if args.quick else 16384  # 16 MiB / 1 GiB
    copies = 2 if args.quick else 100
    repeats = args.repeats or (1 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="tmd_nb_bench_dask_", dir=args.dir))
    try:
        print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} cores", flush=True)
        if "export" in only:
            print(bench_export(tmp, export_rows, repeats), flush=True)
        if "windows" in only:
            print(bench_windows(tmp, window_rows, 5 if args.quick else 25), flush=True)
        if "convert" in only:
            print(bench_convert(tmp, copies), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
