"""Batch conversion: planning, the report, resuming after a kill, the command line, a Dask cluster."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED

import tmd_nb
from tmd_nb import batch
from tmd_nb.__main__ import main


def same_map(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and np.array_equal(a["height_map"], b["height_map"])


@pytest.fixture
def archive(tmp_path, tmd_samples) -> Path:
    """A scan archive: the sample scans in two sub-folders, plus a file of an unknown format to ignore."""
    root = tmp_path / "archive"
    for i, scan in enumerate(sorted(tmd_samples.glob("*.tmd"))):
        folder = root / ("lab-a" if i % 2 else "lab-b")
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(scan, folder / scan.name)
    (root / "notes.txt").write_text("not a scan")
    return root


# ------------------------------------------------------------------------------------------
# planning
# ------------------------------------------------------------------------------------------


def test_a_folder_is_mirrored_and_files_of_unknown_extensions_are_left_out(archive, tmp_path):
    pairs = batch.plan(archive, tmp_path / "out")
    scans = sorted(p.relative_to(archive) for p in archive.rglob("*.tmd"))
    assert [Path(s).relative_to(archive) for s, _ in pairs] == scans
    assert [Path(o).relative_to(tmp_path / "out") for _, o in pairs] == [s.with_suffix(".npz") for s in scans]


def test_globs_and_lists_and_one_output_name_from_two_sources(archive, tmp_path):
    pairs = batch.plan(str(archive / "**" / "v2_*.tmd"), tmp_path / "out", format="npy")
    assert sorted(Path(o).name for _, o in pairs) == sorted(p.with_suffix(".npy").name for p in archive.rglob("v2_*"))
    one = next(archive.rglob("v1_Dime.tmd"))
    clash = tmp_path / "elsewhere" / "v1_Dime.npz"
    tmd_nb.save(tmd_nb.load(one), clash)
    other = next(archive.rglob("v2_Dime.tmd"))
    # The same output name from two sources: the first is converted, the second reported, the run goes on.
    report = tmd_nb.convert([one, clash, other], tmp_path / "out", jobs=1, progress=False)
    out = tmp_path / "out"
    assert report.converted == [(str(one), str(out / "v1_Dime.npz")), (str(other), str(out / "v2_Dime.npz"))]
    assert report.failed == [
        (str(clash), f"its output {str(out / 'v1_Dime.npz')!r} is {str(one)!r}'s too; not converted (rename one)")
    ]
    assert batch.plan([one, one], tmp_path / "out") == [(str(one), str(tmp_path / "out" / "v1_Dime.npz"))]


def test_missing_sources_and_bad_options_are_refused_before_any_work(archive, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^no file matches '.*/\*.x3p'$"):
        tmd_nb.convert(str(archive / "*.x3p"), tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"^no such file or folder: '.*/nope.tmd'$"):
        tmd_nb.convert([archive, archive / "nope.tmd"], tmp_path / "out")
    with pytest.raises(ValueError, match=r"^unknown format 'png'; choose 'npz', 'npy', 'tmd', 'x3p', 'gwy' or 'sdf'$"):
        tmd_nb.convert(archive, tmp_path / "out", format="png")
    with pytest.raises(ValueError, match=r"^jobs must be a positive int or None, not 0$"):
        tmd_nb.convert(archive, tmp_path / "out", jobs=0)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------
# converting
# ------------------------------------------------------------------------------------------


def test_convert_on_local_processes_reports_every_file_and_skips_on_the_second_run(archive, tmp_path):
    (archive / "lab-a" / "broken.tmd").write_bytes(b"Binary TrueMap Data File v2.0\r\n\x00" + b"\x01" * 7)
    out = tmp_path / "out"
    report = tmd_nb.convert(archive, out, jobs=2, progress=False)
    scans = sorted(archive.rglob("v*.tmd"))
    assert sorted(s for s, _ in report.converted) == sorted(str(s) for s in scans)
    assert report.skipped == [] and not report.ok
    [(source, reason)] = report.failed
    assert source == str(archive / "lab-a" / "broken.tmd")
    # The report line names the file once: the reason does not repeat the path.
    assert reason.startswith("FormatError: the file ") and "\n" not in reason and "broken.tmd" not in reason
    assert f"  failed: {source}: {reason}" in str(report).splitlines()
    for scan in scans:
        output = out / scan.relative_to(archive).with_suffix(".npz")
        assert same_map(tmd_nb.load(output), tmd_nb.load(scan))
    assert str(report).splitlines()[0] == "6 converted, 0 skipped (already done), 1 failed"

    again = tmd_nb.convert(archive, out, jobs=2, progress=False)
    assert again.converted == [] and len(again.skipped) == 6 and len(again.failed) == 1
    forced = tmd_nb.convert(archive, out, jobs=1, overwrite=True, progress=False)
    assert len(forced.converted) == 6 and forced.skipped == []


def test_an_output_cut_short_is_converted_again_and_notes_are_kept(archive, tmp_path):
    out = tmp_path / "out"
    scan = next(archive.rglob("v2_Dime.tmd"))
    target = out / "v2_Dime.npy"
    first = tmd_nb.convert(scan, out, format="npy", progress=False)
    assert first.converted == [(str(scan), str(target))]
    whole = target.read_bytes()
    target.write_bytes(whole[: len(whole) // 2])  # a disk trouble, a careless copy: no longer the file written
    report = tmd_nb.convert(scan, out, format="npy", progress=False)
    assert report.converted == [(str(scan), str(target))] and report.skipped == []
    assert target.read_bytes() == whole
    assert np.array_equal(tmd_nb.load(target)["height_map"], tmd_nb.load(scan)["height_map"])
    [(source, note)] = report.notes
    assert source == str(scan) and note.startswith("NPY stores the height map only; metadata not saved to ")


def test_the_progress_bar_counts_the_files(archive, tmp_path, capsys):
    tmd_nb.convert(archive, tmp_path / "out", jobs=1)
    err = capsys.readouterr().err
    assert "convert: 100%" in err and "6/6" in err


def test_convert_works_without_dask_and_tqdm(archive, tmp_path):
    code = (
        "import sys; sys.modules['dask'] = sys.modules['distributed'] = sys.modules['tqdm'] = None\n"
        "import tmd_nb\n"
        f"r = tmd_nb.convert({str(archive)!r}, {str(tmp_path / 'out')!r}, jobs=2)\n"
        "print(r.summary())"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert run.stdout.strip() == "6 converted, 0 skipped (already done), 0 failed"
    assert run.stderr.endswith("convert: 6/6 files\n")


# ------------------------------------------------------------------------------------------
# killed and restarted
# ------------------------------------------------------------------------------------------

COPIES = 100

INTERRUPT_WHILE_HOLDING_A_LOCK = """
import os, signal, sys, threading
from pathlib import Path
from tmd_nb import batch

src, out = Path(sys.argv[1]), Path(sys.argv[2])
tasks = [(str(f), str(out / (f.stem + ".npz")), None) for f in sorted(src.iterdir())]
lock = threading.Lock()  # as a manifest write holds one
results = []

def done(result):
    with lock:
        results.append(result["status"])
        if len(results) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while a result is being handled
            results.append("still handling")

try:
    batch._run_local(tasks, "npz", False, str(out / batch.MANIFEST), 2, lambda started: None, done)
except KeyboardInterrupt:
    print("interrupted", results[:3], lock.locked(), len(results) - 1 < len(tasks))
"""


def test_a_ctrl_c_while_a_result_is_handled_stops_the_pool_cleanly(tmd_samples, tmp_path):
    """A Ctrl-C that arrived inside the handling of a result (which holds the manifest's lock)
    raised there and left the lock taken, and the clean-up then waited for it: convert hung."""
    src = tmp_path / "src"
    src.mkdir()
    scans = sorted(tmd_samples.glob("*.tmd"))
    for i in range(40):
        os.symlink(scans[i % len(scans)], src / f"{i:03d}_{scans[i % len(scans)].name}")
    (tmp_path / "out").mkdir()
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_WHILE_HOLDING_A_LOCK)
    try:
        ran = subprocess.run(
            [sys.executable, str(script), str(src), str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the pool hung after a Ctrl-C that arrived while a result was being handled")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "interrupted ['converted', 'converted', 'still handling'] False True", ran.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "jobs"), [("SIGKILL", "1"), ("Ctrl-C", "2")], ids=["killed", "interrupted-with-process-pool"]
)
def test_a_killed_convert_finishes_the_job_when_run_again(tmd_samples, tmp_path, how, jobs):
    src = tmp_path / "src"
    src.mkdir()
    scans = sorted(tmd_samples.glob("*.tmd"))
    for i in range(COPIES):
        scan = scans[i % len(scans)]
        os.symlink(scan, src / f"{i:03d}_{scan.name}")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tmd_nb", "convert", str(src), "-o", str(out), "--jobs", jobs, "--no-progress"]
    child = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while len(list(out.glob("*.npz"))) < 3:  # wait until some outputs exist, then kill mid-job
            assert child.poll() is None, f"convert ended before it could be killed: {child.stderr.read()}"
            assert time.monotonic() < deadline, "no output appeared within 60 s"
            time.sleep(0.01)
    finally:
        # Ctrl-C in a terminal signals the whole process group: the command and its workers.
        os.killpg(child.pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGINT)
        status = child.wait(timeout=60)
    if how == "Ctrl-C":
        assert status == 130
        assert (
            child.stderr.read()
            .decode()
            .endswith("interrupted: run the same command again to convert what is missing\n")
        )
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.npz")}
    assert 3 <= len(done) < COPIES

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert (
        rerun.stdout.splitlines()[0] == f"{COPIES - len(done)} converted, {len(done)} skipped (already done), 0 failed"
    )
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.npz")}
    assert len(after) == COPIES
    assert {name: after[name] for name in done} == done  # finished outputs were not rewritten
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []  # no temporaries left
    lines = list(csv.DictReader((out / batch.MANIFEST).open(newline="")))
    assert sorted(line["source"] for line in lines) == sorted(str(p) for p in src.iterdir())  # one line each
    assert {line["status"] for line in lines} <= {"converted", "skipped"}
    for source in src.iterdir():
        assert same_map(tmd_nb.load(out / (source.stem + ".npz")), tmd_nb.load(source))


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def test_the_command_line_converts_and_its_exit_status_says_whether_anything_failed(archive, tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "tmd_nb", "convert", str(archive / "lab-a"), "-o", str(out), "--format", "npy"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"3 converted, 0 skipped (already done), 0 failed\nmanifest: {out / batch.MANIFEST}\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [batch.MANIFEST] + [p.with_suffix(".npy").name for p in (archive / "lab-a").iterdir()]
    )
    (archive / "lab-a" / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    assert main(["convert", str(archive / "lab-a"), "-o", str(out), "--no-progress"]) == 1


def test_the_command_line_refuses_mistakes_with_status_2(archive, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(archive / "none.tmd"), "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"tmd-nb convert: error: no such file or folder: {str(archive / 'none.tmd')!r}\n"
    )
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(archive), "-o", str(tmp_path / "out"), "--jobs", "0"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith("error: --jobs must be at least 1, not 0\n")


def test_the_console_script_documents_convert():
    script = shutil.which("tmd-nb", path=os.path.dirname(sys.executable))
    assert script is not None, "the tmd-nb console script is not installed beside this Python"
    run = subprocess.run([script, "convert", "--help"], capture_output=True, text=True, check=True, timeout=60)
    for option in ("SRC", "-o OUT", "--format", "--jobs N", "--scheduler ADDRESS", "--overwrite", "Exit status"):
        assert option in run.stdout


# ------------------------------------------------------------------------------------------
# on a Dask cluster
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    yield cluster
    cluster.close()


@pytest.mark.slow
def test_convert_on_a_local_cluster(archive, tmp_path, cluster):
    from distributed import Client

    (archive / "broken.npz").write_bytes(b"PK\x05\x06" + bytes(18))
    out = tmp_path / "out"
    with Client(cluster) as client:
        report = tmd_nb.convert(archive, out, client=client, progress=False)
        again = tmd_nb.convert(archive, out, client=client, progress=False)  # a second run's own tasks
        workers = set(client.run(os.getpid).values())
    assert again.converted == [] and sorted(again.skipped) == sorted(report.converted)
    assert len(report.converted) == 6 and len(report.failed) == 1
    assert report.failed[0][1].startswith("FormatError: ")
    assert len(workers) == 2 and os.getpid() not in workers
    for source, output in report.converted:
        assert same_map(tmd_nb.load(output), tmd_nb.load(source))


@pytest.mark.slow
def test_the_command_line_runs_on_a_scheduler_address(archive, tmp_path, cluster):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tmd_nb",
            "convert",
            str(archive),
            "-o",
            str(tmp_path / "out"),
            "--scheduler",
            cluster.scheduler_address,
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("6 converted, 0 skipped (already done), 0 failed")


# ------------------------------------------------------------------------------------------
# %tmd_convert
# ------------------------------------------------------------------------------------------


@pytest.fixture
def ip(tmp_path_factory, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipythondir")))
    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    shell = InteractiveShell.instance(config=config)
    shell.run_line_magic("load_ext", "tmd_nb")
    yield shell
    shell.run_line_magic("unload_ext", "tmd_nb")


def test_the_convert_magic_returns_the_report_and_turns_mistakes_into_usage_errors(ip, archive, tmp_path, capsys):
    from IPython.core.error import UsageError

    ip.user_ns["where"] = str(tmp_path / "out")
    result = ip.run_cell(f'report = %tmd_convert "{archive}/lab-b" -o $where --jobs 1 --format npy')
    assert result.success, result.error_in_exec
    report = ip.user_ns.pop("report")
    assert len(report.converted) == 3 and report.ok
    assert all(Path(o).parent == tmp_path / "out" and o.endswith(".npy") for _, o in report.converted)
    assert "convert: 100%" in capsys.readouterr().err
    for line, message in [
        (f"%tmd_convert {archive} -o", "%tmd_convert: argument -o/--out: expected one argument"),
        (f"%tmd_convert {archive}/none -o out", f"%tmd_convert: no such file or folder: '{archive}/none'"),
        (f"%tmd_convert {archive} -o out --jobs 0", "%tmd_convert: --jobs must be at least 1, not 0"),
    ]:
        result = ip.run_cell(line)
        assert isinstance(result.error_in_exec, UsageError)
        assert str(result.error_in_exec).startswith(message)
    ip.user_ns.pop("where")


def test_the_convert_magic_completes_its_sources_as_paths(ip, tmp_path, monkeypatch):
    from IPython.core.completer import provisionalcompleter

    monkeypatch.chdir(tmp_path)
    (tmp_path / "scans here").mkdir()
    with provisionalcompleter():
        found = [c.text for c in ip.Completer.completions("%tmd_convert sca", len("%tmd_convert sca"))]
    assert found == ['"scans here/']  # a folder, quoted and left open for what follows


# ------------------------------------------------------------------------------------------
# channels of instruments' files
# ------------------------------------------------------------------------------------------

DI = SHARED / "data" / "instruments" / "di-3.di"
NO_NOPE = (
    "KeyError: the file has no channel 'Nope'; its channels are "
    "0: 'ZSensor', 1: 'AmplitudeError', 2: 'Phase', 3: 'Height'"
)


@pytest.fixture
def mixed(tmp_path, tmd_samples) -> Path:
    """An instrument's file of four channels beside a TMD file of one height map."""
    src = tmp_path / "mixed"
    src.mkdir()
    shutil.copy(DI, src / "di-3.di")
    shutil.copy(tmd_samples / "v2_Dime.tmd", src / "dime.tmd")
    return src


def channel_lines(out: Path) -> dict[str, str | None]:
    return {Path(r["source"]).name: r["channel"] for r in batch.read_manifest(out / batch.MANIFEST)}


@pytest.mark.parametrize("channel", ["Phase", 2])
def test_convert_reads_the_channel_given_and_the_manifest_records_it(mixed, tmp_path, channel):
    out = tmp_path / "out"
    report = batch.convert(mixed, out, channel=channel, jobs=1, progress=False)
    assert report.ok and len(report.converted) == 2
    heights = tmd_nb.load(out / "di-3.npz")["height_map"]
    np.testing.assert_array_equal(heights, tmd_nb.load(DI, channel="Phase")["height_map"])
    assert not np.array_equal(heights, tmd_nb.load(DI)["height_map"])
    assert same_map(tmd_nb.load(out / "dime.npz"), tmd_nb.load(mixed / "dime.tmd"))  # one map: channel ignored
    assert channel_lines(out) == {"di-3.di": str(channel), "dime.tmd": None}


def test_another_channel_converts_the_instruments_file_again_and_only_it(mixed, tmp_path):
    out = tmp_path / "out"
    batch.convert(mixed, out, channel="Phase", jobs=1, progress=False)
    assert batch.convert(mixed, out, channel="Phase", jobs=1, progress=False).skipped == [
        (str(mixed / "di-3.di"), str(out / "di-3.npz")),
        (str(mixed / "dime.tmd"), str(out / "dime.npz")),
    ]
    report = batch.convert(mixed, out, channel="Height", jobs=1, progress=False)
    assert report.converted == [(str(mixed / "di-3.di"), str(out / "di-3.npz"))]
    assert report.skipped == [(str(mixed / "dime.tmd"), str(out / "dime.npz"))]
    np.testing.assert_array_equal(
        tmd_nb.load(out / "di-3.npz")["height_map"], tmd_nb.load(DI, channel="Height")["height_map"]
    )


def test_a_wrong_channel_fails_that_file_and_the_run_goes_on(mixed, tmp_path):
    out = tmp_path / "out"
    report = batch.convert(mixed, out, channel="Nope", jobs=2, progress=False)
    assert report.failed == [(str(mixed / "di-3.di"), NO_NOPE)]
    assert report.converted == [(str(mixed / "dime.tmd"), str(out / "dime.npz"))]
    assert batch.convert(mixed, out, channel=3, jobs=1, progress=False).converted == [
        (str(mixed / "di-3.di"), str(out / "di-3.npz"))
    ]
    with pytest.raises(TypeError, match=r"^channel must be a channel's name \(str\), its index \(int\) or None"):
        batch.convert(mixed, out, channel=1.5, progress=False)


def test_the_command_line_and_the_magic_take_a_channel(mixed, tmp_path, ip, capsys):
    out = tmp_path / "cli"
    assert main(["convert", str(mixed), "-o", str(out), "--channel", "2", "--no-progress"]) == 0
    np.testing.assert_array_equal(tmd_nb.load(out / "di-3.npz")["height_map"], tmd_nb.load(DI, channel=2)["height_map"])
    assert main(["convert", str(mixed), "-o", str(out), "--channel", "Nope", "--no-progress"]) == 1
    assert f"  failed: {mixed / 'di-3.di'}: {NO_NOPE}" in capsys.readouterr().out.splitlines()
    report = ip.run_line_magic("tmd_convert", f"{mixed} -o {tmp_path / 'magic'} --channel AmplitudeError --jobs 1")
    assert report.ok and channel_lines(tmp_path / "magic")["di-3.di"] == "AmplitudeError"


SCRIPT = """
import concurrent.futures as cf
import multiprocessing
import sys

import tmd_nb


def imported():
    return "SurfaceTopography" in sys.modules


if __name__ == "__main__":
    report = tmd_nb.convert(sys.argv[1], sys.argv[2], jobs=2, progress=False)
    assert report.ok and len(report.converted) == 2, str(report)
    # A worker forked by the same server after the run, which has read no file.
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        print(pool.submit(imported).result())
"""


@pytest.mark.parametrize("instrument", [True, False])
def test_workers_start_with_the_instrument_library_imported_once_by_the_fork_server(tmd_samples, tmp_path, instrument):
    # SurfaceTopography takes seconds of CPU to import: imported by each worker, it cost more than
    # converting a folder of small instrument files; a folder without any need not import it at all.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(tmd_samples / "v2_Dime.tmd", src / "dime.tmd")
    shutil.copy(DI if instrument else tmd_samples / "v2_Surface.tmd", src / ("di-3.di" if instrument else "s.tmd"))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(
        [sys.executable, str(script), str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(instrument)


def test_an_instruments_file_is_opened_once_by_the_reader_that_recognised_it(tmp_path, monkeypatch):
    from SurfaceTopography.IO.DI import DIReader

    opened = []
    init = DIReader.__init__

    def counting(self, *args, **kwargs):
        opened.append(args[0])
        init(self, *args, **kwargs)

    monkeypatch.setattr(DIReader, "__init__", counting)
    source = tmp_path / "once.di"  # a file not detected before (detection is remembered for the last file)
    shutil.copy(DI, source)
    result = batch.convert_file(str(source), str(tmp_path / "once.npz"))
    assert result["status"] == "converted", result["reason"]
    assert len(opened) == 1 and opened[0].closed
    np.testing.assert_array_equal(tmd_nb.load(tmp_path / "once.npz")["height_map"], tmd_nb.load(DI)["height_map"])
