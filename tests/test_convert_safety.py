"""convert keeps its promise: it replaces only what it wrote, keeps a manifest, never eats its own outputs,
survives dead workers, unguarded scripts, concurrent runs and unreachable schedulers."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

import tmd_nb
from tmd_nb import batch
from tmd_nb.__main__ import main
from tmd_nb.formats import atomic

NOT_OURS = "a file convert did not write is there at the output name; not replaced (overwrite=True replaces it)"
EDITED = "the file at the output name changed since convert wrote it; not replaced (overwrite=True replaces it)"


@pytest.fixture
def scans(tmp_path, tmd_samples) -> Path:
    """Four small TMD scans in a folder (copies, so that tests may touch them)."""
    src = tmp_path / "scans"
    src.mkdir()
    for scan in sorted(tmd_samples.glob("v2_*.tmd"))[:4]:
        (src / scan.name).write_bytes(scan.read_bytes())
    return src


def manifest_lines(out: Path) -> list[dict[str, str]]:
    with (out / batch.MANIFEST).open(newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


# ------------------------------------------------------------------------------------------
# whose files are replaced
# ------------------------------------------------------------------------------------------


def users_savez(path: Path) -> None:
    np.savez(path, results=np.arange(5.0), height_map=np.ones((4, 4)))


def three_d_npy(path: Path) -> None:
    np.save(path, np.zeros((2, 3, 4)))


def newer_tmd_nb_npz(path: Path) -> None:
    np.savez(path, height_map=np.ones((4, 4)), __tmd_nb_format__=np.array(2))


def tmd_nb_npz_of_the_user(path: Path) -> None:  # a whole, loadable file of the target format, not from convert
    tmd_nb.save({"height_map": np.full((3, 3), 7.0)}, path)


@pytest.mark.parametrize(
    ("make", "format"),
    [(users_savez, "npz"), (three_d_npy, "npy"), (newer_tmd_nb_npz, "npz"), (tmd_nb_npz_of_the_user, "npz")],
    ids=["np.savez", "3-D npy", "newer tmd_nb NPZ", "loadable NPZ"],
)
def test_a_file_convert_did_not_write_is_never_replaced_without_overwrite(scans, tmp_path, make, format):
    out = tmp_path / "out"
    out.mkdir()
    first = sorted(scans.iterdir())[0]
    theirs = out / (first.stem + "." + format)
    make(theirs)
    before = snapshot(theirs)
    report = tmd_nb.convert(scans, out, format=format, jobs=1, progress=False)
    assert report.failed == [(str(first), NOT_OURS)]  # reported, one line ...
    assert len(report.converted) == 3  # ... and the run goes on
    assert snapshot(theirs) == before
    assert f"  failed: {first}: {NOT_OURS}" in str(report).splitlines()
    [line] = [line for line in manifest_lines(out) if line["source"] == str(first)]
    assert (line["status"], line["reason"], line["output_sha256"]) == ("failed", NOT_OURS, "")

    again = tmd_nb.convert(scans, out, format=format, jobs=1, progress=False)  # still not ours on a rerun
    assert again.failed == [(str(first), NOT_OURS)] and len(again.skipped) == 3
    assert snapshot(theirs) == before

    forced = tmd_nb.convert(scans, out, format=format, jobs=1, overwrite=True, progress=False)
    assert len(forced.converted) == 4 and forced.ok
    assert np.array_equal(tmd_nb.load(theirs)["height_map"], tmd_nb.load(first)["height_map"])


def test_an_output_edited_since_convert_wrote_it_is_not_replaced(scans, tmp_path):
    out = tmp_path / "out"
    tmd_nb.convert(scans, out, jobs=1, progress=False)
    first = sorted(scans.iterdir())[0]
    mine = out / (first.stem + ".npz")
    tmd_nb.save({"height_map": np.zeros((2, 2)), "note": "my edit"}, mine)
    before = snapshot(mine)
    report = tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert report.failed == [(str(first), EDITED)] and len(report.skipped) == 3
    assert snapshot(mine) == before


@pytest.mark.parametrize(
    ("format", "damage"),
    [
        ("tmd", lambda data: data[: len(data) - 100]),  # cut short: still recognised as TMD
        ("gwy", lambda data: b"GWYP"),  # a 4-byte Gwyddion "file"
        ("npz", lambda data: data[:-1] + bytes([data[-1] ^ 1])),  # one flipped bit in the zip directory
    ],
    ids=["truncated tmd", "4-byte GWYP", "one bit"],
)
def test_a_damaged_output_of_convert_is_converted_again(scans, tmp_path, format, damage):
    out = tmp_path / "out"
    first = sorted(scans.iterdir())[0]
    tmd_nb.convert(first, out, format=format, jobs=1, progress=False)
    target = out / (first.stem + "." + format)
    whole = target.read_bytes()
    target.write_bytes(damage(whole))
    report = tmd_nb.convert(first, out, format=format, jobs=1, progress=False)
    assert report.converted == [(str(first), str(target))], report
    assert target.read_bytes() == whole


def test_an_output_whose_source_changed_is_converted_again(scans, tmp_path):
    out = tmp_path / "out"
    tmd_nb.convert(scans, out, jobs=1, progress=False)
    first, second = sorted(scans.iterdir())[:2]
    first.write_bytes(second.read_bytes())  # the scan was measured again
    report = tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert report.converted == [(str(first), str(out / (first.stem + ".npz")))] and len(report.skipped) == 3
    assert np.array_equal(tmd_nb.load(out / (first.stem + ".npz"))["height_map"], tmd_nb.load(second)["height_map"])
    stamp = os.stat(first)
    os.utime(first, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))  # touched: same bytes, new time
    assert len(tmd_nb.convert(scans, out, jobs=1, progress=False).converted) == 1


# ------------------------------------------------------------------------------------------
# the manifest
# ------------------------------------------------------------------------------------------


def test_the_manifest_has_one_line_per_source_readable_with_the_csv_module(scans, tmp_path):
    (scans / "broken.tmd").write_bytes(b"Binary TrueMap Data File v2.0\r\n\x00" + b"\x01" * 7)
    out = tmp_path / "out"
    report = tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert report.manifest == str(out / batch.MANIFEST)
    assert str(report).splitlines()[-1] == f"manifest: {out / batch.MANIFEST}"
    lines = manifest_lines(out)
    assert list(lines[0]) == list(batch.FIELDS)
    assert sorted(line["source"] for line in lines) == sorted(str(p) for p in scans.iterdir())
    for line in lines:
        source = Path(line["source"])
        assert (int(line["size"]), int(line["mtime_ns"])) == (source.stat().st_size, source.stat().st_mtime_ns)
        assert line["channel"] == ""
        assert line["output"] == str(out / (source.stem + ".npz"))
        if source.name == "broken.tmd":
            assert (line["status"], line["format"], line["output_sha256"]) == ("failed", "tmd", "")
            assert line["reason"].startswith("FormatError: the file ")
        else:
            assert (line["status"], line["format"], line["reason"]) == ("converted", "tmd", "")
            assert line["output_sha256"] == batch._sha256(line["output"])
    tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert sorted(line["status"] for line in manifest_lines(out)) == ["failed"] + ["skipped"] * 4
    assert batch.read_manifest(out / batch.MANIFEST)[0]["size"] == int(manifest_lines(out)[0]["size"])


def test_a_file_at_the_manifest_name_that_is_not_a_manifest_stops_the_run_before_any_work(scans, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / batch.MANIFEST).write_text("my,own,table\n1,2,3\n")
    with pytest.raises(
        ValueError, match=r"^'.*/out/tmd_nb-convert.csv' is not a tmd_nb convert manifest; move it away$"
    ):
        tmd_nb.convert(scans, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [batch.MANIFEST]


def test_hostile_names_survive_the_manifest(scans, tmp_path):
    odd = ['a,"quoted"\nnew line.tmd', "tab\there ; é.tmd", os.fsdecode(b"not-utf8-\xff.tmd")]
    first = sorted(scans.iterdir())[0]
    for name in odd:
        (scans / name).write_bytes(first.read_bytes())
    out = tmp_path / "out"
    report = tmd_nb.convert(scans, out, jobs=2, progress=False)
    assert report.ok and len(report.converted) == 7
    recorded = {line["source"] for line in manifest_lines(out)}
    assert {str(scans / name) for name in odd} <= recorded
    again = tmd_nb.convert(scans, out, jobs=2, progress=False)
    assert len(again.skipped) == 7 and again.ok


def test_a_line_cut_short_by_a_power_failure_is_left_out_and_the_next_line_is_whole(scans, tmp_path):
    out = tmp_path / "out"
    tmd_nb.convert(scans, out, jobs=1, progress=False)
    with (out / batch.MANIFEST).open("a") as f:
        f.write("/x/y.tmd,12,3,tmd,,/out/y.npz,conv")  # no newline: the write never finished
    assert len(batch.read_manifest(out / batch.MANIFEST)) == 4
    (scans / "new.tmd").write_bytes(sorted(scans.iterdir())[0].read_bytes())
    report = tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert report.converted == [(str(scans / "new.tmd"), str(out / "new.npz"))] and len(report.skipped) == 4
    assert len(manifest_lines(out)) == 5


def test_the_docs_point_pandas_users_to_the_manifest():
    readme = (ROOT / "README.md").read_text()
    assert "tmd_nb-convert.csv" in readme and "pandas.read_csv" in readme
    assert "pandas.read_csv" in (batch.__doc__ or "")


# ------------------------------------------------------------------------------------------
# never its own outputs
# ------------------------------------------------------------------------------------------


def test_an_output_folder_inside_the_source_folder_is_never_converted_again(scans, tmp_path):
    out = scans / "npz"
    for run in range(3):
        report = tmd_nb.convert(scans, out, jobs=1, progress=False)
        assert report.ok and len(report.converted if run == 0 else report.skipped) == 4, (run, report)
    assert not (out / "npz").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [batch.MANIFEST] + [p.stem + ".npz" for p in scans.glob("*.tmd")]
    )


def test_outputs_written_beside_their_sources_are_not_sources_on_the_next_run(scans, tmp_path):
    for _ in range(2):
        report = tmd_nb.convert(scans, scans, format="npz", jobs=1, progress=False)
        assert report.ok
    assert sorted(s for s, _ in report.skipped) == sorted(str(p) for p in scans.glob("*.tmd"))
    patterned = tmd_nb.convert(str(scans / "*"), scans, format="npz", jobs=1, progress=False)
    assert len(patterned.skipped) == 4 and patterned.converted == [] and patterned.ok


# ------------------------------------------------------------------------------------------
# processes: plain scripts, dead workers, concurrent runs, temporaries
# ------------------------------------------------------------------------------------------


def test_the_readme_example_runs_as_a_plain_script_without_a_main_guard(scans, tmp_path):
    script = tmp_path / "convert_scans.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import tmd_nb
            print("script body runs")
            report = tmd_nb.convert({str(scans)!r}, {str(tmp_path / "converted")!r}, format="npz", jobs=2)
            print(report)
            """
        )
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:2] == ["script body runs", "4 converted, 0 skipped (already done), 0 failed"], run.stdout
    assert run.stdout.count("script body runs") == 1  # no worker ran the script again
    assert "Traceback" not in run.stderr


def test_a_guarded_script_is_seen_as_guarded_and_an_unguarded_one_is_not(tmp_path):
    script = tmp_path / "which.py"
    script.write_text(
        textwrap.dedent(
            """\
            import sys
            from tmd_nb import batch
            def ask():
                return batch._guarded(sys.modules["__main__"])
            print("top", ask())
            if __name__ == "__main__":
                print("guarded", ask())
            """
        )
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True)
    assert run.stdout.split() == ["top", "False", "guarded", "True"]


def test_a_file_that_kills_its_worker_costs_only_itself(scans, tmp_path):
    for i in range(12):
        (scans / f"copy{i:02d}.tmd").write_bytes(sorted(scans.iterdir())[i % 4].read_bytes())
    killer = scans / "killer.tmd"
    killer.write_bytes(sorted(scans.iterdir())[0].read_bytes())
    out = tmp_path / "out"
    run = subprocess.run(  # a fresh process: the hook is read from the environment its workers start with
        [sys.executable, "-m", "tmd_nb", "convert", str(scans), "-o", str(out), "--jobs", "2", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TMD_NB_TEST_KILL_WORKER=killer.name),
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stdout.splitlines()[:2] == [
        "16 converted, 0 skipped (already done), 1 failed",  # every other file was tried, and converted
        f"  failed: {killer}: {batch._DIED}",
    ]
    assert not (out / "killer.npz").exists()


def test_two_converts_into_one_folder_at_once_both_finish(scans, tmp_path):
    for i in range(20):
        (scans / f"copy{i:02d}.tmd").write_bytes(sorted(scans.iterdir())[i % 4].read_bytes())
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tmd_nb", "convert", str(scans), "-o", str(out), "--jobs", "2", "--no-progress"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    for run, (stdout, stderr) in zip(runs, results, strict=True):
        assert run.returncode == 0, stdout + stderr
        assert stdout.splitlines()[0].endswith(" 0 failed"), stdout
    assert sorted(line["source"] for line in manifest_lines(out)) == sorted(str(p) for p in scans.iterdir())
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    for source in scans.iterdir():
        assert np.array_equal(
            tmd_nb.load(out / (source.stem + ".npz"))["height_map"], tmd_nb.load(source)["height_map"]
        )


def test_only_temporaries_of_dead_processes_are_removed_even_for_the_longest_names(scans, tmp_path):
    first = sorted(scans.iterdir())[0]
    long = scans / ("é" * 100 + "x" * 46 + ".tmd")  # 250 bytes: its temporary name must be cut to fit
    long.write_bytes(first.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    target = str(out / (long.stem + ".npz"))
    # A save killed half-way, as a separate process would leave it.
    killed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys\n"
            "from tmd_nb.formats.atomic import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n"
            "    f.write(b'half')\n"
            "    f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n",
            target,
        ]
    )
    assert killed.wait(timeout=60) == -signal.SIGKILL
    [stale] = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(os.fsencode(stale.name)) <= 255
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        running = Path(atomic.temporary_name(target, pid=alive.pid))
        running.write_bytes(b"another program is writing this")
        report = tmd_nb.convert(long, out, jobs=1, progress=False)
        assert report.ok and len(report.converted) == 1
        assert not stale.exists()  # left by a dead process: removed
        assert running.read_bytes() == b"another program is writing this"  # its writer runs: kept
    finally:
        alive.communicate(b"")
    assert atomic.stale_temporaries(target) == [str(running)]


# ------------------------------------------------------------------------------------------
# odd sources
# ------------------------------------------------------------------------------------------


def test_fifos_dangling_links_and_folders_named_like_scans_are_reported_not_hung_on(scans, tmp_path):
    os.mkfifo(scans / "pipe.tmd")
    (scans / "dangling.tmd").symlink_to(tmp_path / "nowhere.tmd")
    (scans / "folder.tmd").mkdir()
    (scans / "folder.tmd" / "inner.tmd").write_bytes(sorted(scans.glob("v2_*"))[0].read_bytes())
    (scans / "loop.tmd").symlink_to(scans / "loop.tmd")
    run = subprocess.run(
        [sys.executable, "-m", "tmd_nb", "convert", str(scans), "-o", str(tmp_path / "out"), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines()[0] == "5 converted, 0 skipped (already done), 3 failed", run.stdout
    assert f"  failed: {scans / 'pipe.tmd'}: FormatError: the file is not a regular file" in run.stdout
    assert f"  failed: {scans / 'dangling.tmd'}: FileNotFoundError: No such file or directory" in run.stdout
    assert f"  failed: {scans / 'loop.tmd'}: OSError: Too many levels of symbolic links" in run.stdout
    assert (tmp_path / "out" / "folder.tmd" / "inner.npz").exists()


# ------------------------------------------------------------------------------------------
# Dask: the client given, an unreachable scheduler
# ------------------------------------------------------------------------------------------


def test_an_unreachable_scheduler_is_one_line_with_its_own_exit_status(scans, tmp_path):
    pytest.importorskip("distributed")
    env = dict(os.environ, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="1s")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "tmd_nb",
            "convert",
            str(scans),
            "-o",
            str(tmp_path / "out"),
            "--scheduler",
            "tcp://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 3
    assert run.stderr.startswith("tmd-nb convert: could not reach the scheduler at tcp://127.0.0.1:9: ")
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stdout == ""
    assert "3 when the --scheduler could not be reached" in " ".join(
        subprocess.run(
            [sys.executable, "-m", "tmd_nb", "convert", "--help"], capture_output=True, text=True
        ).stdout.split()
    )


def test_the_convert_magic_says_the_same_line_about_an_unreachable_scheduler(scans, tmp_path):
    pytest.importorskip("distributed")
    import dask
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "tmd_nb")
    try:
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            result = shell.run_cell(f"%tmd_convert {scans} -o {tmp_path / 'out'} --scheduler tcp://127.0.0.1:9")
    finally:
        shell.run_line_magic("unload_ext", "tmd_nb")
    assert isinstance(result.error_in_exec, UsageError)
    assert str(result.error_in_exec).startswith("%tmd_convert: could not reach the scheduler at tcp://127.0.0.1:9: ")
    assert "\n" not in str(result.error_in_exec)


@pytest.mark.slow
def test_convert_uses_the_client_it_is_given_even_when_it_is_not_the_default(scans, tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        with pytest.raises(ValueError, match="No clients found"):
            distributed.default_client()  # the one given is not the default
        report = tmd_nb.convert(scans, tmp_path / "out", client=client, progress=False)
    assert len(report.converted) == 4 and report.ok
    assert main(["convert", str(scans), "-o", str(tmp_path / "out"), "--no-progress"]) == 0


# ------------------------------------------------------------------------------------------
# more attacks: what is at the output name, sources that change, Dask workers that die
# ------------------------------------------------------------------------------------------


def test_links_folders_and_fifos_at_output_names_are_left_alone(scans, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    first, second, third = sorted(scans.iterdir())[:3]
    precious = tmp_path / "precious.npz"
    users_savez(precious)
    before = snapshot(precious)
    (out / (first.stem + ".npz")).symlink_to(precious)  # writing through it would replace the user's file
    (out / (second.stem + ".npz")).mkdir()
    os.mkfifo(out / (third.stem + ".npz"))
    report = tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert report.failed == [
        (str(first), NOT_OURS),
        (str(second), "a folder is there at the output name; not replaced"),
        (str(third), "a special file (not a regular file) is there at the output name; not replaced"),
    ]
    assert len(report.converted) == 1
    assert snapshot(precious) == before and (out / (first.stem + ".npz")).is_symlink()


def test_a_source_that_changes_while_it_is_read_is_not_converted_from_half_of_each(scans, tmp_path, monkeypatch):
    first = sorted(scans.iterdir())[0]
    other = sorted(scans.iterdir())[1].read_bytes()
    real_load = batch.registry.load

    def load_while_replaced(path, **kwargs):
        data = real_load(path, **kwargs)
        if os.path.basename(path) == first.name:
            Path(path).write_bytes(other)  # the instrument writes the scan again meanwhile
        return data

    monkeypatch.setattr(batch.registry, "load", load_while_replaced)
    out = tmp_path / "out"
    report = tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert report.failed == [(str(first), "FormatError: the file changed while it was being read; run again")]
    assert not (out / (first.stem + ".npz")).exists() and len(report.converted) == 3
    monkeypatch.setattr(batch.registry, "load", real_load)
    again = tmd_nb.convert(scans, out, jobs=1, progress=False)
    assert again.converted == [(str(first), str(out / (first.stem + ".npz")))]
    assert np.array_equal(tmd_nb.load(out / (first.stem + ".npz"))["height_map"], tmd_nb.load(first)["height_map"])


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(scans, tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(ValueError, match=r"^the output folder '.*/out' is a file; choose a folder$"):
        tmd_nb.convert(scans, tmp_path / "out", progress=False)
    with pytest.raises(SystemExit) as exit_:
        main(["convert", str(scans), "-o", str(tmp_path / "out"), "--no-progress"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_on_dask_a_file_that_kills_its_worker_costs_only_itself(scans, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    import dask

    for i in range(6):
        (scans / f"copy{i}.tmd").write_bytes(sorted(scans.iterdir())[i % 4].read_bytes())
    killer = scans / "killer.tmd"
    killer.write_bytes(sorted(scans.iterdir())[0].read_bytes())
    monkeypatch.setenv("TMD_NB_TEST_KILL_WORKER", killer.name)  # before the worker processes start
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        report = tmd_nb.convert(scans, tmp_path / "out", client=client, progress=False)
    assert report.failed == [(str(killer), batch._DIED)]
    assert len(report.converted) == 10


def test_an_unguarded_script_with_threads_converts_in_its_own_process_and_says_what_to_add(scans, tmp_path):
    script = tmp_path / "threads_then_convert.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import threading
            import tmd_nb
            stop = threading.Event()
            threading.Thread(target=stop.wait, daemon=True).start()  # forking now would be unsafe
            print(tmd_nb.convert({str(scans)!r}, {str(tmp_path / "converted")!r}, jobs=2, progress=False).summary())
            stop.set()
            """
        )
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "4 converted, 0 skipped (already done), 0 failed\n"
    assert run.stderr == (
        "convert: converting in this process only; to use several processes, "
        'call it under `if __name__ == "__main__":`\n'
    )


def test_an_output_folder_that_cannot_be_written_is_one_line_from_the_command_line(scans, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / batch.MANIFEST).mkdir()  # even root cannot append to a folder
    assert main(["convert", str(scans), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tmd-nb convert: error: [Errno 21] Is a directory: ") and err.count("\n") == 1


@pytest.mark.slow
def test_killed_again_and_again_then_run_to_the_end_every_output_is_right(tmd_samples, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    samples = sorted(tmd_samples.glob("*.tmd"))
    for i in range(60):
        os.symlink(samples[i % len(samples)], src / f"{i:03d}_{samples[i % len(samples)].name}")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tmd_nb", "convert", str(src), "-o", str(out), "--jobs", "2", "--no-progress"]
    for wanted in (3, 15, 30, 45):  # each run is killed (process group: workers too) once it passed that many
        child = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while len(list(out.glob("*.npz"))) < wanted and child.poll() is None:
                time.sleep(0.01)  # polling the folder, as a person watching it would
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=60)
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    assert final.stdout.splitlines()[0].endswith(" 0 failed")
    lines = manifest_lines(out)
    assert sorted(line["source"] for line in lines) == sorted(str(p) for p in src.iterdir())
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    for source in src.iterdir():
        assert np.array_equal(
            tmd_nb.load(out / (source.stem + ".npz"))["height_map"], tmd_nb.load(source)["height_map"]
        )


def test_a_killed_writer_not_yet_reaped_is_not_running_and_a_killed_manifest_rewrite_is_cleaned(scans, tmp_path):
    out = tmp_path / "out"
    tmd_nb.convert(scans, out, jobs=1, progress=False)
    zombie = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    while Path(f"/proc/{zombie.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
        time.sleep(0.01)  # until it has died; it is not waited for, so it stays a zombie
    try:
        left = Path(atomic.temporary_name(str(out / batch.MANIFEST), pid=zombie.pid))
        left.write_bytes(b"half a manifest")  # a run killed while it tidied its manifest
        assert atomic.stale_temporaries(str(out / batch.MANIFEST)) == [str(left)]
        report = tmd_nb.convert(scans, out, jobs=1, progress=False)
        assert len(report.skipped) == 4 and not left.exists()
    finally:
        zombie.wait()
