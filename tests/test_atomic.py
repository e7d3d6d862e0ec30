"""Crash-safe writes: a failed or killed save never damages the file that was there before."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tmd_nb
from tmd_nb import export_to_npy, export_to_npz, load_from_npz
from tmd_nb.storage import atomic

WRITERS = {"npz": export_to_npz, "npy": export_to_npy}


def old_file(tmp_path, kind: str) -> tuple[pathlib.Path, bytes]:
    path = tmp_path / f"scan.{kind}"
    WRITERS[kind]({"height_map": np.arange(20.0).reshape(4, 5)}, path)
    return path, path.read_bytes()


def leftovers(directory: pathlib.Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_exception_during_write_leaves_old_file_and_no_temporary(tmp_path, kind):
    path, before = old_file(tmp_path, kind)

    def fail(done, total):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        WRITERS[kind]({"height_map": np.ones((300, 300))}, path, progress=fail)
    assert path.read_bytes() == before
    assert leftovers(tmp_path, path.name) == []


def _child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_file_size_limit_makes_the_save_fail_cleanly(tmp_path, kind):
    path, before = old_file(tmp_path, kind)
    child = _child(
        """
        import resource, signal, sys
        import numpy as np
        import tmd_nb
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG as an exception, not a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        data = {"height_map": np.random.default_rng(0).random((1000, 1000))}
        writer = tmd_nb.export_to_npz if sys.argv[2] == "npz" else tmd_nb.export_to_npy
        try:
            writer(data, sys.argv[1])
        except OSError as exc:
            print("OSError", exc.errno)
        else:
            print("saved")
        """,
        str(path),
        kind,
    )
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.split()[0] == "OSError", out + err
    assert path.read_bytes() == before
    assert leftovers(tmp_path, path.name) == []


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_killed_writer_leaves_old_file_and_only_a_hidden_temporary(tmp_path, kind):
    path, before = old_file(tmp_path, kind)
    child = _child(
        """
        import sys
        import numpy as np
        import tmd_nb

        def progress(done, total):
            # called while the temporary file is still being written (before fsync and rename):
            # tell the parent, then wait to be killed
            print("writing", flush=True)
            sys.stdin.read()

        writer = tmd_nb.export_to_npz if sys.argv[2] == "npz" else tmd_nb.export_to_npy
        writer({"height_map": np.random.default_rng(0).random((3000, 3000))}, sys.argv[1], progress=progress)
        print("finished", flush=True)
        """,
        str(path),
        kind,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "writing", line + child.stderr.read()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    traces = leftovers(tmp_path, path.name)
    assert len(traces) == 1 and traces[0].startswith(f".{path.name}.") and traces[0].endswith(".tmp"), traces


def test_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    export_to_npz({"height_map": np.zeros((3, 3))}, tmp_path / "a.npz")
    assert events[:2] == ["fsync", "replace"], events


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_get_umask_permissions(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        path = export_to_npz({"height_map": np.zeros((3, 3))}, tmp_path / "a.npz")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == expected


def test_replaced_file_keeps_its_mode(tmp_path):
    path, _ = old_file(tmp_path, "npz")
    path.chmod(0o640)
    export_to_npz({"height_map": np.ones((3, 3)), "v": 2}, path)
    assert path.stat().st_mode & 0o777 == 0o640
    assert load_from_npz(path)["v"] == 2


def test_a_symlink_stays_a_symlink_to_the_new_content(tmp_path):
    real = tmp_path / "real.npz"
    export_to_npz({"height_map": np.zeros((2, 2))}, real)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    export_to_npz({"height_map": np.ones((2, 2))}, link)
    assert link.is_symlink()
    assert np.array_equal(load_from_npz(real)["height_map"], np.ones((2, 2)))


def test_directory_target_is_refused_without_side_effects(tmp_path):
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(IsADirectoryError):
        export_to_npz({"height_map": np.zeros((2, 2))}, tmp_path / "d.npz")
    assert leftovers(tmp_path, "d.npz") == [] and list((tmp_path / "d.npz").iterdir()) == []


def test_parent_directories_are_created_for_a_valid_save(tmp_path):
    path = tmd_nb.export_to_npz({"height_map": np.zeros((2, 2))}, tmp_path / "a" / "b" / "c.npz")
    assert os.path.isfile(path)


def test_a_long_file_name_that_fits_can_be_written(tmp_path):
    name = "é" * 100 + "x" * 46 + ".npz"  # 250 bytes: fits, but not with a temporary suffix added
    assert len(os.fsencode(name)) == 250
    path = export_to_npz({"height_map": np.zeros((2, 2))}, tmp_path / name)
    assert os.listdir(tmp_path) == [name] and load_from_npz(path)["height_map"].shape == (2, 2)
    assert atomic.temporary_name(str(tmp_path / name)).startswith(str(tmp_path / ".éé"))


def test_a_too_long_name_is_reported_with_the_target_path(tmp_path):
    name = "y" * 300 + ".npz"
    with pytest.raises(OSError) as info:
        export_to_npz({"height_map": np.zeros((2, 2))}, tmp_path / name)
    assert info.value.filename == str(tmp_path / name) and info.value.filename2 is None
    assert os.listdir(tmp_path) == []


def test_errors_name_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    real_open = os.open

    def refuse_temporaries(path, *args):
        if os.path.basename(path).startswith("."):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args)

    monkeypatch.setattr(atomic.os, "open", refuse_temporaries)
    with pytest.raises(PermissionError) as info:
        export_to_npz({"height_map": np.zeros((2, 2))}, tmp_path / "a.npz")
    assert info.value.filename == str(tmp_path / "a.npz")
