"""An outsider's attacks on the exchange formats: files tmd_nb wrote, with the tmd_nb record
edited (X3P's ``record.json`` member, Gwyddion's ``/tmd_nb/record.json`` entry, SDF's trailer
field), an X3P patch edited, saves killed or racing each other.

An edit either gives one-line ``FormatError`` naming the file, or a load of the file's own
values (with a ``ModifiedFileWarning`` when they are not what tmd_nb wrote); never a raw
exception, and never other heights without a word.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import gwyfile
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tmd_nb import (
    FormatError,
    ModifiedFileWarning,
    export_to_gwy,
    export_to_sdf,
    export_to_x3p,
    load_from_gwy,
    load_from_sdf,
    load_from_x3p,
)
from tmd_nb.errors import MAX_MESSAGE

X3P_RECORD = "pypi\\org\\project\\tmd-nb\\record.json"
GWY_RECORD = "/tmd_nb/record.json"

MAPS = {
    "float16": np.array([[1, np.nan], [np.inf, -2]], np.float16),
    "float64": np.array([[np.nan, 1e-300, 3.0]]),
    "int8": np.arange(-3, 3, dtype=np.int8).reshape(2, 3),
    "uint64": np.array([[2**64 - 1, 0]], np.uint64),
    "int64": np.array([[-(2**63), 2**63 - 1]], np.int64),
    "bool": np.array([[True, False]]),
    "complex": np.array([[1 + 2j, 3]]),
}


def one_line_naming(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert text.startswith(repr(str(path))), text
    assert len(text) <= MAX_MESSAGE and "\n" not in text, text


def x3p_with_record(src: Path, dst: Path, text: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for info in zin.infolist():
            out.writestr(info.filename, text if info.filename == X3P_RECORD else zin.read(info))


def gwy_with_record(src: Path, dst: Path, text: bytes) -> None:
    obj = gwyfile.load(str(src))
    obj[GWY_RECORD] = text.decode("utf-8")
    obj.tofile(str(dst))


SDF_RECORD = re.compile(rb"TmdNbRecord *= *(\{.*?\})\r?\n")


def sdf_record(path: Path) -> bytes:
    found = SDF_RECORD.search(path.read_bytes())
    assert found is not None
    return found.group(1)


def sdf_with_record(src: Path, dst: Path, text: bytes) -> None:
    data = src.read_bytes()
    found = SDF_RECORD.search(data)
    assert found is not None
    dst.write_bytes(data[: found.start(1)] + text + data[found.end(1) :])


FORMATS = {
    "x3p": (export_to_x3p, load_from_x3p, lambda p: zipfile.ZipFile(p).read(X3P_RECORD), x3p_with_record),
    "gwy": (export_to_gwy, load_from_gwy, lambda p: gwyfile.load(str(p))[GWY_RECORD].encode(), gwy_with_record),
    "sdf": (export_to_sdf, load_from_sdf, sdf_record, sdf_with_record),
}

HOSTILE_VALUES = st.sampled_from(
    [None, -1, 0, 1, 2**64, 10**400, "x", "<f8", "|b1", [], {}, True, 1.5, -0.001, 1e-300, [-1], [[0, 0]]]
)


def edited_record(record: dict[str, Any], key: str, value: Any) -> bytes:
    edited = json.loads(json.dumps(record))
    edited["height"][key] = value
    return json.dumps(edited).encode()


def load_checked(load, path: Path, original: np.ndarray) -> None:
    """FormatError naming ``path``, the map tmd_nb wrote, or other values with a warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = load(path)["height_map"]
        except FormatError as exc:
            one_line_naming(exc, path)
            return
    if not any(issubclass(w.category, ModifiedFileWarning) for w in caught):
        # A record naming another dtype that holds the same numbers (bool as <f8) cannot be told
        # from the file's data; other numbers can.
        assert np.array_equal(got, original, equal_nan=True), (got, got.dtype)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", sorted(MAPS))
# 1e400 as a JSON integer: float() raised OverflowError out of the load.
@example(key="factor", value=10**400)
# Gwyddion and SDF: a factor of 1 or a record without its exact map restored other heights,
# silently; X3P and SDF: a float map read as bool.
@example(key="factor", value=1)
@example(key="exact", value=None)
@example(key="dtype", value="|b1")
@given(key=st.sampled_from(["dtype", "factor", "exact", "missing", "stored", "patch"]), value=HOSTILE_VALUES)
def test_an_edited_height_description_is_refused_or_warned_never_other_heights(
    tmp_path: Path, fmt: str, name: str, key: str, value: Any
) -> None:
    # Known and left alone: the data cannot tell a record that drops the exact map of a map whose
    # standard heights lose only what a missing point or an imaginary part held (inf, 1+2j), or
    # drops the list of missing points, from the record tmd_nb wrote for such a map.
    assume(not (key == "exact" and name in {"float16", "complex"}))
    assume(not (key == "missing" and value is None))
    save, load, record_of, rewrite = FORMATS[fmt]
    original = MAPS[name]
    src = Path(save(original, tmp_path / f"map.{fmt}"))
    record = json.loads(record_of(src))
    dst = tmp_path / f"edited.{fmt}"
    rewrite(src, dst, edited_record(record, key, value))
    load_checked(load, dst, original)


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def x3p_with_patch(src: Path, dst: Path, at: np.ndarray | None, values: np.ndarray | None) -> None:
    """``src`` with its patch members replaced, their checksums in the record made to match."""
    import zlib

    with zipfile.ZipFile(src) as zin:
        members = {info.filename: zin.read(info) for info in zin.infolist()}
    prefix = X3P_RECORD[: -len("record.json")]
    record = json.loads(members[X3P_RECORD])
    for name, array in (("__patch_at__", at), ("__patch_values__", values)):
        if array is not None:
            members[prefix + name + ".npy"] = npy_bytes(array)
            record["checksums"][name] = f"{zlib.crc32(members[prefix + name + '.npy']):08x}"
    members[X3P_RECORD] = json.dumps(record).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for name, content in members.items():
            out.writestr(name, content)


@pytest.mark.parametrize(
    ("at", "values"),
    [
        (np.array([34, 34], np.uint32), None),  # each point once: this one was loaded, point 0 left rounded
        (np.array([34, 0], np.uint32), None),  # not in order
        (np.array([100, 0], np.uint32), None),  # beyond the map
        (np.array([-1, 0], np.int32), None),
        (np.array([2**63, 0], np.uint64), None),
        (np.array([[0, 34]], np.uint32), None),
        (np.array([34], np.uint32), None),
        (None, np.array([1.0, 2.0])),
        (None, np.array([1, 2, 3], np.uint64)),
        (np.array([], np.uint32), np.array([], np.uint64)),  # the rounded numbers left
    ],
)
def test_an_edited_patch_is_refused(tmp_path: Path, at: np.ndarray | None, values: np.ndarray | None) -> None:
    original = np.zeros((10, 10), np.uint64)
    original.flat[[0, 34]] = [2**63 + 1, 2**64 - 1]  # float64 rounds both: the record patches them
    src = Path(export_to_x3p(original, tmp_path / "map.x3p"))
    with zipfile.ZipFile(src) as zf:
        assert json.loads(zf.read(X3P_RECORD))["height"]["patch"] == ["__patch_at__", "__patch_values__"]
    dst = tmp_path / "edited.x3p"
    x3p_with_patch(src, dst, at, values)
    with pytest.raises(FormatError) as info:
        load_from_x3p(dst)
    one_line_naming(info.value, dst)


# --------------------------------------------------------------------------- saves


def _child(code: str, *args: str):
    import subprocess
    import sys
    import textwrap

    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("fmt", ["gwy", "x3p"])
def test_a_killed_save_leaves_the_old_file_and_the_next_save_removes_its_temporary(tmp_path: Path, fmt: str) -> None:
    import signal

    save, load, _, _ = FORMATS[fmt]
    path = tmp_path / f"scan.{fmt}"
    old = np.arange(20.0).reshape(4, 5)
    save(old, path)
    before = path.read_bytes()
    child = _child(
        """
        import sys
        import numpy as np
        import tmd_nb

        def progress(done, total):  # the temporary file is being written: wait to be killed
            print("writing", flush=True)
            sys.stdin.read()

        if sys.argv[2] == "x3p":
            tmd_nb.export_to_x3p(np.random.default_rng(0).random((1500, 1500)), sys.argv[1], progress=progress)
        else:  # the Gwyddion writer reports progress once the file is in place: stop at its first write
            import contextlib
            from tmd_nb.formats import gwy

            real = gwy.atomic_write

            @contextlib.contextmanager
            def stopping(path):
                with real(path) as fp:
                    class Stop:
                        def write(self, data):
                            fp.write(data)
                            fp.flush()
                            progress(0, 0)
                    yield Stop()

            gwy.atomic_write = stopping
            tmd_nb.export_to_gwy(np.random.default_rng(0).random((1500, 1500)), sys.argv[1])
        print("finished", flush=True)
        """,
        str(path),
        fmt,
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "writing", line + child.stderr.read()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert np.array_equal(load(path)["height_map"], old)
    traces = sorted(p.name for p in tmp_path.iterdir() if p.name != path.name)
    assert len(traces) == 1 and traces[0].startswith(f".{path.name}.") and traces[0].endswith(".tmp"), traces
    save(old + 1, path)  # the next save of that file removes what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert np.array_equal(load(path)["height_map"], old + 1)


@pytest.mark.parametrize("fmt", ["gwy", "x3p"])
def test_two_processes_saving_one_path_leave_one_whole_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"scan.{fmt}"
    code = """
        import sys
        import numpy as np
        import tmd_nb

        save = tmd_nb.export_to_x3p if sys.argv[2] == "x3p" else tmd_nb.export_to_gwy
        value = float(sys.argv[3])
        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(20):
            save(np.full((64, 64), value), sys.argv[1])
        print("done", flush=True)
        """
    children = [_child(code, str(path), fmt, str(v)) for v in (1.0, 2.0)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:  # both start together, released by one line each
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=300)
            assert child.returncode == 0 and out.strip() == "done", err
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    _, load, _, _ = FORMATS[fmt]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole file as tmd_nb wrote it: no ModifiedFileWarning
        got = load(path)["height_map"]
    assert got.shape == (64, 64) and np.unique(got).tolist() in ([1.0], [2.0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize("first", [True, False])
def test_an_x3p_file_with_two_members_of_one_name_is_refused(tmp_path: Path, first: bool) -> None:
    # zipfile (and so x3pio) takes the last of two, other readers the first: the file would show
    # other heights to each. The first one was loaded without a word when the last was tmd_nb's.
    src = Path(export_to_x3p(np.arange(6, dtype=np.float32).reshape(2, 3), tmp_path / "map.x3p"))
    with zipfile.ZipFile(src) as zf:
        members = [(info.filename, zf.read(info)) for info in zf.infolist()]
    other = ("bindata/data.bin", np.full((2, 3), 9, np.float32).tobytes())
    dst = tmp_path / "twice.x3p"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
            for name, content in [other, *members] if first else [*members, other]:
                out.writestr(name, content)
    with pytest.raises(FormatError) as info:
        load_from_x3p(dst)
    one_line_naming(info.value, dst)
    assert str(info.value) == f"{str(dst)!r} has duplicate member names ('bindata/data.bin')"
