"""Attacks on the surfaces that read ``.gwy`` files with tmd_nb's own parser, seal records, share
the blockwise thread pool and stream Dask maps into X3P files.

Every load is the saved map exactly, the file's own values with a ModifiedFileWarning, or a
one-line FormatError naming the file; every failed save leaves the old file as it was. Values are
checked against independent readers (gwyfile for ``.gwy``, x3pio for ``.x3p``).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import dask
import dask.array as da
import gwyfile
import hostile_files as hostile
import numpy as np
import pytest
import x3pio
from conftest import require
from helpers import memory_probe
from hypothesis import given, settings
from hypothesis import strategies as st

import tmd_nb
from tmd_nb.errors import FormatError
from tmd_nb.formats import gwy
from tmd_nb.formats.gwy import export_to_gwy, load_gwy
from tmd_nb.formats.x3p import export_to_x3p, load_x3p
from tmd_nb.storage import blockwise, embedded

FAST = settings(max_examples=max(1, settings.default.max_examples // 4))
RECORD = gwy.RECORD_PREFIX + embedded.RECORD


def one_line_naming(exc: BaseException, path: Path) -> bool:
    text = str(exc)
    return "\n" not in text and text.startswith(repr(str(path)))


def load_refused(path: Path) -> FormatError:
    with pytest.raises(FormatError) as info:
        load_gwy(path)
    assert one_line_naming(info.value, path), str(info.value)
    return info.value


def field(rows: int, cols: int, values: np.ndarray | None = None, *extra: bytes) -> bytes:
    data = np.zeros(rows * cols) if values is None else np.asarray(values, "<f8").reshape(-1)
    return hostile.gwy_object(
        b"GwyDataField",
        *extra,
        hostile.gwy_component("xres", b"i", struct.pack("<i", cols)),
        hostile.gwy_component("yres", b"i", struct.pack("<i", rows)),
        hostile.gwy_component("data", b"D", struct.pack("<I", data.size) + data.tobytes()),
    )


def gwy_bytes(*components: bytes) -> bytes:
    return b"GWYP" + hostile.gwy_object(b"GwyContainer", *components)


# --------------------------------------------------------------------------- memory: objects built


def objects_in_meta(count: int) -> bytes:
    """A channel whose ``/0/meta`` holds an array of ``count`` empty objects (5 bytes each)."""
    empty = b"\0" + struct.pack("<I", 0)
    junk = hostile.gwy_component("junk", b"O", struct.pack("<I", count) + empty * count)
    return gwy_bytes(
        hostile.gwy_channel(), hostile.gwy_component("/0/meta", b"o", hostile.gwy_object(b"GwyContainer", junk))
    )


def test_an_object_array_a_load_builds_is_bounded(tmp_path: Path) -> None:
    # /0/meta is built for gwyddion_meta: 5 bytes of file per object became ~430 bytes of memory.
    path = tmp_path / "objects.gwy"
    path.write_bytes(objects_in_meta(gwy.MAX_BUILT + 1))
    message = str(load_refused(path))
    assert f"more than {gwy.MAX_BUILT} components and objects" in message
    path.write_bytes(objects_in_meta(1000))  # a few are read as ever (and dropped from gwyddion_meta)
    assert load_gwy(path)["gwyddion_meta"] == {}
    many = b"".join(hostile.gwy_component(f"k{i}", b"i", struct.pack("<i", i)) for i in range(gwy.MAX_BUILT))
    path.write_bytes(
        gwy_bytes(
            hostile.gwy_channel(), hostile.gwy_component("/0/meta", b"o", hostile.gwy_object(b"GwyContainer", many))
        )
    )
    assert f"more than {gwy.MAX_BUILT} components and objects" in str(load_refused(path))
    few = b"".join(hostile.gwy_component(f"k{i}", b"i", struct.pack("<i", i)) for i in range(10_000))
    path.write_bytes(
        gwy_bytes(
            hostile.gwy_channel(), hostile.gwy_component("/0/meta", b"o", hostile.gwy_object(b"GwyContainer", few))
        )
    )
    assert load_gwy(path)["gwyddion_meta"] == {f"k{i}": i for i in range(10_000)}


@pytest.mark.parametrize("where", ["meta", "field", "meta arrays"])
def test_millions_of_empty_objects_stay_within_the_memory_budget(tmp_path: Path, where: str) -> None:
    # 20 MB of empty objects took over 1.2 GB before the bound (MemoryError in the capped child);
    # 18 MB of empty arrays with 3-letter names, 1 GB (43 times their file).
    count = 4_000_000
    empty = b"\0" + struct.pack("<I", 0)
    junk = hostile.gwy_component("junk", b"O", struct.pack("<I", count) + empty * count)
    if where == "meta":
        meta = hostile.gwy_component("/0/meta", b"o", hostile.gwy_object(b"GwyContainer", junk))
        content = gwy_bytes(hostile.gwy_channel(), meta)
    elif where == "field":
        content = gwy_bytes(hostile.gwy_component("/0/data", b"o", field(2, 2, None, junk)))
    else:
        names = itertools.product(range(1, 128), repeat=3)
        arrays = b"".join(bytes(name) + b"\0D" + bytes(4) for name, _ in zip(names, range(2_000_000), strict=False))
        meta = hostile.gwy_component("/0/meta", b"o", hostile.gwy_object(b"GwyContainer", arrays))
        content = gwy_bytes(hostile.gwy_channel(), meta)
    path = tmp_path / f"{where}.gwy"
    path.write_bytes(content)
    found = memory_probe(path, timeout=120)
    assert found["outcome"] == "FormatError", found
    assert "objects" in found["message"]


# --------------------------------------------------------------------------- hostile structure


@FAST
@given(pad=st.integers(0, 15), rows=st.integers(1, 5), cols=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_data_at_any_alignment_reads_as_gwyfile_reads_it(tmp_path_factory, pad, rows, cols, seed) -> None:
    # The data array is a view of the file's bytes at whatever offset the names leave.
    values = np.random.default_rng(seed).normal(size=rows * cols) * 1e-6
    filler = hostile.gwy_component("p" * (pad + 1), b"c", b"\1")
    path = tmp_path_factory.mktemp("align") / "a.gwy"
    path.write_bytes(gwy_bytes(hostile.gwy_component("/0/data", b"o", field(rows, cols, values, filler))))
    ours = load_gwy(path)["height_map"]
    theirs = gwyfile.load(str(path))["/0/data"].data
    assert ours.dtype == np.float64 and ours.tobytes() == np.asarray(theirs, "<f8").reshape(rows, cols).tobytes()
    assert ours.flags.writeable and ours.flags.aligned  # a copy of its own, not the file's buffer


@pytest.mark.parametrize(
    "content, message",
    [
        # a mask of the same number of points on another grid
        (
            gwy_bytes(
                hostile.gwy_component("/0/data", b"o", field(2, 3)), hostile.gwy_component("/0/mask", b"o", field(3, 2))
            ),
            "/0/mask has shape (3, 2), the data (2, 3)",
        ),
        # xres * yres beyond 32 and 64 bits, data of none
        (
            gwy_bytes(
                hostile.gwy_component(
                    "/0/data",
                    b"o",
                    hostile.gwy_object(
                        b"GwyDataField",
                        hostile.gwy_component("xres", b"i", struct.pack("<i", 65536)),
                        hostile.gwy_component("yres", b"i", struct.pack("<i", 65536)),
                        hostile.gwy_component("data", b"D", struct.pack("<I", 0)),
                    ),
                )
            ),
            "holds 0 values, not xres x yres = 65536 x 65536",
        ),
        (
            gwy_bytes(
                hostile.gwy_component(
                    "/0/data",
                    b"o",
                    hostile.gwy_object(
                        b"GwyDataField",
                        hostile.gwy_component("xres", b"q", struct.pack("<q", 1 << 62)),
                        hostile.gwy_component("yres", b"q", struct.pack("<q", 4)),
                        hostile.gwy_component("data", b"D", struct.pack("<I", 0)),
                    ),
                )
            ),
            f"holds 0 values, not xres x yres = {1 << 62} x 4",
        ),
        # an array count beyond the object, and a string without its NUL
        (
            gwy_bytes(hostile.gwy_component("/0/meta", b"S", struct.pack("<I", 0xFFFFFFFF))),
            "an array of 4294967295 items",
        ),
        (gwy_bytes(hostile.gwy_component("/0/data/title", b"s", b"no NUL")), "a string runs past the end"),
        # a name that is not UTF-8, in the title a load reads
        (gwy_bytes(hostile.gwy_component("/0/data", b"o", field(1, 1)), b"/0/data/title\0s\xff\xfe\0"), "is not UTF-8"),
        (gwy_bytes(b"/0/\xffdata\0s\0"), "a component name is not UTF-8"),
    ],
)
def test_lying_structures_are_one_line_format_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "lie.gwy"
    path.write_bytes(content)
    assert message in str(load_refused(path))


def test_a_file_that_shrinks_between_its_size_and_its_read_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "shrinks.gwy"
    export_to_gwy(np.random.default_rng(1).normal(size=(600, 600)), path)  # read on several threads
    real, size = os.fstat, path.stat().st_size

    def shrinking(fd: int) -> os.stat_result:
        found = real(fd)
        if os.path.samestat(found, os.stat(path)) and found.st_size == size:  # the load's own file
            os.truncate(path, found.st_size // 2)  # another program truncates it meanwhile
        return found

    monkeypatch.setattr(gwy.os, "fstat", shrinking)
    assert "shrank while being read" in str(load_refused(path))


# --------------------------------------------------------------------------- the record and its seal


def entries_of(path: Path) -> dict[str, bytes]:
    """The top-level components of a ``.gwy`` file, as raw bytes by name."""
    body = memoryview(path.read_bytes())[4:]
    walk = gwy._Walk(body, "x")
    return {bytes(body[s : walk.cstring(s, e, "name") - 1]).decode(): bytes(body[s:e]) for s, e in gwy.scan(body, "x")}


def rewritten(path: Path, **strings: bytes) -> None:
    """``path`` with the string entries given (``/`` spelt ``__S__`` in the keyword) replaced or added."""
    given = {k.replace("__S__", "/"): v for k, v in strings.items()}
    old = entries_of(path)
    parts = [hostile.gwy_component(k, b"s", given[k] + b"\0") if k in given else v for k, v in old.items()]
    parts += [hostile.gwy_component(k, b"s", v + b"\0") for k, v in given.items() if k not in old]
    path.write_bytes(gwy_bytes(*parts))


def record_text(path: Path) -> bytes:
    return gwyfile.load(str(path))[RECORD].encode("ascii")


def sealed(text: bytes) -> bytes:
    return text[:-1] + b', "seal": "%08x"}' % zlib.crc32(text)


def unsealed(text: bytes) -> bytes:
    return text[: text.rindex(b', "seal"')] + b"}"


def patched_map() -> np.ndarray:
    # float64 millimetres: float64 metres give back all but a few points, kept as a patch.
    return np.random.default_rng(0).normal(size=(40, 50))


def saved(tmp_path: Path, hm: np.ndarray, **meta) -> Path:
    path = tmp_path / "r.gwy"
    export_to_gwy({"height_map": hm, "units": "mm", **meta}, path)
    return path


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda t: t + b"\n", id="newline after the JSON"),
        pytest.param(lambda t: t + b" ", id="space after the JSON"),
        pytest.param(
            lambda t: re.sub(rb'"seal": "(\w{8})"', lambda m: b'"seal": "' + m[1].upper() + b'"', t), id="upper"
        ),
        pytest.param(lambda t: t.replace(b', "seal": ', b',"seal":'), id="other spacing"),
        pytest.param(lambda t: t.replace(b'"seal"', b'"\\u0073eal"'), id="escaped key"),
        pytest.param(lambda t: b"{" + t[t.rindex(b'"seal"') : -1] + b", " + unsealed(t)[1:], id="seal first"),
        pytest.param(lambda t: t.replace(b'"tmd_nb": 3', b'"tmd_nb":  3'), id="a space added"),
    ],
)
def test_a_record_whose_seal_is_elsewhere_or_spelt_otherwise_is_refused(tmp_path: Path, edit) -> None:
    path = saved(tmp_path, patched_map())
    text = record_text(path)
    assert b'"tmd_nb": 3' in text
    rewritten(path, **{RECORD.replace("/", "__S__"): edit(text)})
    assert "seal does not match" in str(load_refused(path))


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(unsealed, id="unsealed: checked the old way"),
        pytest.param(sealed, id="two seals: the last one seals the first"),
    ],
)
def test_a_record_sealed_otherwise_still_gives_the_map_exactly(tmp_path: Path, edit) -> None:
    hm = patched_map()
    path = saved(tmp_path, hm)
    rewritten(path, **{RECORD.replace("/", "__S__"): edit(record_text(path))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_gwy(path)["height_map"]
    assert back.dtype == hm.dtype and back.tobytes() == hm.tobytes()


def test_an_unsealed_record_with_another_factor_is_refused(tmp_path: Path) -> None:
    path = saved(tmp_path, patched_map())
    record = json.loads(unsealed(record_text(path)))
    record["height"]["factor"] = 0.002
    rewritten(path, **{RECORD.replace("/", "__S__"): json.dumps(record).encode()})
    assert "in units of 0.002 m they are other numbers" in str(load_refused(path))


def with_members(path: Path, **arrays: np.ndarray) -> None:
    """``path`` with record members replaced by these arrays, checksums and seal made anew (as a writer would)."""
    record = json.loads(unsealed(record_text(path)))
    strings = {}
    for name, array in arrays.items():
        raw = embedded.npy_bytes(array)
        record["checksums"][name] = f"{zlib.crc32(raw):08x}"
        strings[(gwy.RECORD_PREFIX + name).replace("/", "__S__")] = base64.b64encode(raw)
    text = sealed(json.dumps(record, ensure_ascii=True).encode())
    rewritten(path, **{RECORD.replace("/", "__S__"): text}, **strings)


def members_of(path: Path) -> tuple[np.ndarray, np.ndarray]:
    container = gwyfile.load(str(path))
    return tuple(  # type: ignore[return-value]
        np.load(io.BytesIO(base64.b64decode(container[gwy.RECORD_PREFIX + n])))
        for n in (embedded.PATCH_AT, embedded.PATCH_VALUES)
    )


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda a, v: (a[::-1].copy(), v[::-1].copy()), id="unsorted"),
        pytest.param(lambda a, v: (np.r_[a, a[-1]].astype(a.dtype), np.r_[v, v[-1]]), id="duplicate"),
        pytest.param(lambda a, v: (np.r_[a, 2000].astype(a.dtype), np.r_[v, 1.0]), id="past the end"),
        pytest.param(lambda a, v: (a.astype(np.int64), v), id="signed"),
        pytest.param(lambda a, v: (a.reshape(1, -1), v.reshape(1, -1)), id="2-D"),
        pytest.param(lambda a, v: (a[:-1].copy(), v), id="fewer indices"),
        pytest.param(lambda a, v: (a, v.astype(np.float32)), id="other dtype"),
        pytest.param(lambda a, v: (a, v.astype(">f8")), id="other byte order"),
    ],
)
def test_a_patch_that_does_not_fit_is_refused(tmp_path: Path, edit) -> None:
    path = saved(tmp_path, patched_map())
    at, values = edit(*members_of(path))
    with_members(path, __patch_at__=at, __patch_values__=values)
    assert "patch does not fit the height map (40, 50) float64" in str(load_refused(path))


@pytest.mark.parametrize("shape", [(40, 49), (50, 40), (2000,)])
def test_gaps_of_another_shape_are_refused(tmp_path: Path, shape) -> None:
    hm = patched_map()
    hm[3, 4] = np.nan
    path = saved(tmp_path, hm)
    assert embedded.MISSING in "".join(gwyfile.load(str(path)))
    with_members(path, __missing__=np.zeros(shape, bool))
    assert "is not a bool array of shape (40, 50)" in str(load_refused(path))


@pytest.mark.parametrize("block_bytes", [8 * 50, 8 * 97, 8 * 104])
def test_patches_on_block_boundaries_restore_every_point(tmp_path: Path, monkeypatch, block_bytes: int) -> None:
    # Points that float64 metres do not give back, at the first and last point of blocks.
    monkeypatch.setattr(blockwise, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(blockwise, "_threads", lambda: 2)
    step = block_bytes // 8
    hm = np.full((40, 50), 0.5)
    odd = 1.9602583164499647  # * 1e-3 / 1e-3 is another float64
    assert odd * 1e-3 / 1e-3 != odd
    spots = sorted({i for k in range(0, hm.size, step) for i in (k, k + step - 1) if i < hm.size} | {hm.size - 1})
    hm.reshape(-1)[spots] = odd
    hm[5, 5] = np.nan
    path = saved(tmp_path, hm)
    at, _ = members_of(path)
    assert set(at.tolist()) == set(spots)
    back = load_gwy(path)["height_map"]
    assert back.tobytes() == hm.tobytes()
    theirs = gwyfile.load(str(path))["/0/data"].data.reshape(hm.shape)  # metres, the gap filled
    finite = np.isfinite(hm)
    np.testing.assert_array_equal(theirs[finite], hm[finite] * 1e-3)


# --------------------------------------------------------------------------- the shared thread pool


def test_blocks_mapped_within_a_block_do_not_wait_for_the_pool(monkeypatch) -> None:
    # Every pool thread waiting for blocks queued behind it waited forever.
    monkeypatch.setattr(blockwise, "BLOCK_BYTES", 1)
    monkeypatch.setattr(blockwise, "_threads", lambda: 2)

    def outer(start: int, stop: int) -> int:
        return sum(blockwise.map_blocks(6, 1, lambda a, b: b - a)) * 10 + start

    found: list[list[int]] = []
    runner = threading.Thread(target=lambda: found.append(blockwise.map_blocks(8, 1, outer)), daemon=True)
    runner.start()
    runner.join(timeout=60)  # a deadlock never ends: the join bounds the test, not its speed
    assert not runner.is_alive(), "nested map_blocks deadlocked"
    assert found == [[60 + i for i in range(8)]]


def test_loads_and_saves_of_one_path_from_several_threads(tmp_path: Path) -> None:
    path = tmp_path / "shared.gwy"
    maps = [np.random.default_rng(i).normal(size=(300, 400)) for i in range(3)]
    export_to_gwy({"height_map": maps[0], "units": "mm"}, path)
    problems: list[str] = []
    barrier = threading.Barrier(6)

    def work(i: int) -> None:
        barrier.wait()
        try:
            for j in range(3):
                if (i + j) % 2:
                    export_to_gwy({"height_map": maps[(i + j) % 3], "units": "mm"}, path)
                else:
                    back = load_gwy(path)["height_map"]
                    if not any(back.tobytes() == m.tobytes() for m in maps):
                        problems.append(f"thread {i} loaded another map")
        except Exception as exc:  # anything at all is a find
            problems.append(repr(exc))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert problems == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_loads_after_the_parent_used_the_pool(tmp_path: Path) -> None:
    path = tmp_path / "f.gwy"
    hm = np.random.default_rng(5).normal(size=(600, 600))
    export_to_gwy({"height_map": hm, "units": "mm"}, path)
    assert load_gwy(path)["height_map"].tobytes() == hm.tobytes()  # the pool's threads exist now
    code = (
        "import os, sys, numpy as np, tmd_nb\n"
        "from tmd_nb.formats.gwy import load_gwy\n"
        "p = sys.argv[1]\n"
        "load_gwy(p)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    back = load_gwy(p)['height_map']\n"
        "    os._exit(0 if back.shape == (600, 600) else 3)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stderr[-2000:]


# --------------------------------------------------------------------------- interrupted saves


@pytest.mark.parametrize("suffix", [".gwy", ".x3p"])
def test_a_save_killed_midway_leaves_the_old_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"old{suffix}"
    old = np.arange(12.0).reshape(3, 4)
    tmd_nb.save(old, path)
    before = path.read_bytes()
    # The child writes a large map and is killed (SIGKILL, no cleanup) once part of it is on disk.
    code = (
        "import os, signal, sys, numpy as np, dask.array as da, tmd_nb\n"
        "from tmd_nb.formats import gwy\n"
        "from tmd_nb.storage import npyfile\n"
        "real = gwy.write_data\n"
        "def killing(fp, piece, progress):\n"
        "    fp.write(memoryview(piece.view(np.uint8))[: piece.nbytes // 2]); fp.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "gwy.write_data = killing\n"
        "def block(b, block_info=None):\n"
        "    if block_info[None]['chunk-location'][0] == 3:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return b\n"
        "hm = np.random.default_rng(0).normal(size=(400, 300))\n"
        "big = da.from_array(hm, chunks=(50, 300)).map_blocks(block, dtype=hm.dtype)\n"
        "tmd_nb.save(big if sys.argv[1].endswith('.x3p') else hm, sys.argv[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=120)
    assert out.returncode == -9, out.stderr[-2000:]
    assert path.read_bytes() == before
    np.testing.assert_array_equal(tmd_nb.load(path)["height_map"], old)
    tmd_nb.save(old * 2, path)  # the temporary file left behind is no obstacle
    np.testing.assert_array_equal(tmd_nb.load(path)["height_map"], old * 2)


# --------------------------------------------------------------------------- Dask X3P streaming


def hm32() -> np.ndarray:
    return np.random.default_rng(2).normal(size=(50, 37)).astype(np.float32)


def _raise(block: np.ndarray) -> np.ndarray:
    raise RuntimeError("a block failed")


@pytest.mark.parametrize(
    "make, error",
    [
        pytest.param(lambda a: a.map_blocks(_raise, dtype=np.float32), "a block failed", id="raises"),
        pytest.param(lambda a: a.map_blocks(lambda b: b[:-1], dtype=np.float32), "computed to shape", id="short"),
        pytest.param(lambda a: a.map_blocks(lambda b: np.c_[b, b], dtype=np.float32), "computed to shape", id="wide"),
    ],
)
def test_a_dask_x3p_save_whose_blocks_fail_leaves_the_old_file(tmp_path: Path, make, error: str) -> None:
    path = tmp_path / "d.x3p"
    export_to_x3p({"height_map": hm32(), "height_unit": "um"}, path)
    before = path.read_bytes()
    with dask.config.set(scheduler="synchronous"), pytest.raises(Exception, match=error):
        export_to_x3p({"height_map": make(da.from_array(hm32(), chunks=(7, 10))), "height_unit": "um"}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.x3p"]


@pytest.mark.parametrize(
    "chunks",
    [((1, 20, 29), (36, 1)), ((50,), (37,)), ((13, 13, 13, 11), (5, 32)), ((49, 1), (1, 1, 35))],
)
@pytest.mark.parametrize("holes", [False, True])
def test_a_dask_x3p_save_of_uneven_chunks_reads_back_in_x3pio(tmp_path: Path, chunks, holes: bool) -> None:
    hm = hm32()
    if holes:
        hm[hm > 1.5] = np.nan
    path = tmp_path / "u.x3p"
    with dask.config.set(scheduler="threads"):
        export_to_x3p({"height_map": da.from_array(hm, chunks=chunks), "height_unit": "um"}, path)
    back = load_x3p(path)["height_map"]
    assert back.dtype == np.float32 and back.tobytes() == hm.tobytes()
    file = x3pio.read(path, verify=True)  # checks the MD5 main.xml states
    np.testing.assert_array_equal(file.layers[0].z, hm.astype(np.float64) * 1e-6)
    whole = tmp_path / "w.x3p"
    export_to_x3p({"height_map": hm, "height_unit": "um"}, whole)
    assert load_x3p(whole)["height_map"].tobytes() == back.tobytes()


def test_a_dask_block_of_another_dtype_than_promised_saves_what_it_computes(tmp_path: Path) -> None:
    hm = hm32()
    lying = da.from_array(hm, chunks=(7, 10)).map_blocks(lambda b: b.astype(np.float64) + 1e-9, dtype=np.float32)
    path = tmp_path / "t.x3p"
    with dask.config.set(scheduler="synchronous"):
        export_to_x3p({"height_map": lying, "height_unit": "um"}, path)
        computed = lying.compute()
    back = load_x3p(path)["height_map"]
    assert back.dtype == computed.dtype and back.tobytes() == computed.tobytes()


def with_filler_in_the_data_field(path: Path, pad: int) -> None:
    """``path`` with a ``pad``-byte-named component first in ``/0/data``: its data moves by as many bytes."""
    body = memoryview(path.read_bytes())[4:]
    head = b"/0/data\0o"
    parts = []
    for start, end in gwy.scan(body, "x"):
        part = bytes(body[start:end])
        if part.startswith(head):
            obj = part[len(head) :]
            name_end = obj.index(b"\0") + 1
            inner = hostile.gwy_component("p" * pad, b"c", b"\1") + obj[name_end + 4 :]
            part = head + obj[:name_end] + struct.pack("<I", len(inner)) + inner
        parts.append(part)
    path.write_bytes(gwy_bytes(*parts))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pad", range(1, 9))
def test_a_record_over_unaligned_data_restores_every_point(tmp_path: Path, monkeypatch, dtype, pad: int) -> None:
    # The sealed record's quick way reads the data in place, wherever the file puts it.
    monkeypatch.setattr(blockwise, "BLOCK_BYTES", 64)
    monkeypatch.setattr(blockwise, "_threads", lambda: 2)
    hm = np.random.default_rng(pad).normal(size=(30, 20)).astype(dtype)
    hm[2, 2] = np.nan
    path = saved(tmp_path, hm)
    with_filler_in_the_data_field(path, pad)
    assert gwy._Entries(path, "x", None)["/0/data"]["data"].ctypes.data % 8 == (pad + 3) % 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fields a reader sees did not change: no warning
        back = load_gwy(path)["height_map"]
    assert back.dtype == hm.dtype and back.tobytes() == hm.tobytes()


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda b: b[:20] + b"\n" + b[20:], id="newline"),
        pytest.param(lambda b: b + b"\n", id="trailing newline"),
        pytest.param(lambda b: b" " + b, id="leading space"),
        pytest.param(lambda b: b + b"==", id="extra padding"),
        pytest.param(lambda b: b.rstrip(b"=") if b.endswith(b"=") else b[:-1], id="padding dropped"),
        pytest.param(lambda b: b[:8] + b"=" + b[8:], id="padding inside"),
        pytest.param(lambda b: b.replace(b"+", b"-").replace(b"/", b"_") + b"-_" * (b.count(b"+") == 0), id="urlsafe"),
        pytest.param(lambda b: b[:4] + "é".encode() + b[4:], id="non-ASCII"),
    ],
)
def test_base64_members_are_read_strictly(tmp_path: Path, spoil) -> None:
    path = saved(tmp_path, patched_map())
    name = gwy.RECORD_PREFIX + embedded.PATCH_VALUES
    text = gwyfile.load(str(path))[name].encode("ascii")
    rewritten(path, **{name.replace("/", "__S__"): spoil(text)})
    assert f"its tmd_nb entry {embedded.PATCH_VALUES!r} is not valid base64" in str(load_refused(path))


@FAST
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 3))
def test_a_damaged_record_is_refused_or_warned_never_a_silently_other_map(tmp_path_factory, seed, flips) -> None:
    # Bytes changed within tmd_nb's entries (record, patch, gaps, metadata array), structure kept.
    rng = np.random.default_rng(seed)
    hm = patched_map()
    hm[1, 1] = np.nan
    path = saved(tmp_path_factory.mktemp("flip"), hm, mask=hm > 1.5)
    raw = bytearray(path.read_bytes())
    body = memoryview(bytes(raw))[4:]
    spots = [
        (start + 4, end + 4)
        for start, end in gwy.scan(body, "x")
        if bytes(body[start : start + len(gwy.RECORD_PREFIX)]) == gwy.RECORD_PREFIX.encode()
    ]
    for _ in range(flips):
        start, end = spots[int(rng.integers(len(spots)))]
        name_end = raw.index(b"\0", start) + 2  # past the name and its type code
        at = int(rng.integers(name_end, end - 1))  # not the string's NUL: the structure stays
        raw[at] = int(rng.choice([c for c in b'0123456789abcdef"{}[],: eE+-.A/=xyz' if c != raw[at]]))
    path.write_bytes(bytes(raw))
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            back = load_gwy(path)
    except FormatError as exc:
        assert one_line_naming(exc, path), str(exc)
        return
    if any(issubclass(w.category, tmd_nb.ModifiedFileWarning) for w in seen):
        theirs = np.asarray(gwyfile.load(str(path))["/0/data"].data).reshape(hm.shape)
        finite = np.isfinite(back["height_map"])
        np.testing.assert_array_equal(back["height_map"][finite], theirs[finite])
        return
    assert back["height_map"].dtype == hm.dtype and back["height_map"].tobytes() == hm.tobytes()


def test_a_dask_x3p_save_keeps_nan_payloads_and_infinities(tmp_path: Path) -> None:
    hm = hm32()
    bits = hm.view(np.uint32)
    bits[0, 0], bits[5, 5], bits[7, 7] = 0x7FC00001, 0xFFC00000, 0x7F800000
    streamed, whole = tmp_path / "s.x3p", tmp_path / "w.x3p"
    with dask.config.set(scheduler="threads"):
        export_to_x3p({"height_map": da.from_array(hm, chunks=(7, 11))}, streamed)
    export_to_x3p({"height_map": hm}, whole)
    assert load_x3p(streamed)["height_map"].tobytes() == hm.tobytes()
    assert streamed.read_bytes() != b"" and x3pio.read(streamed, verify=True).layers[0].z.shape == hm.shape
    assert load_x3p(whole)["height_map"].tobytes() == hm.tobytes()


def test_a_dask_x3p_save_computed_whole_after_all_leaves_no_temporary_file(tmp_path: Path) -> None:
    # 64-bit integers beyond 2**53: float64 cannot give them back, so the stream gives up for a copy.
    big = np.arange(600, dtype=np.int64).reshape(20, 30) + 2**60
    path = tmp_path / "c.x3p"
    with dask.config.set(scheduler="threads"):
        export_to_x3p({"height_map": da.from_array(big, chunks=(7, 11))}, path)
    back = load_x3p(path)["height_map"]
    assert back.dtype == big.dtype and np.array_equal(back, big)
    assert [p.name for p in tmp_path.iterdir()] == ["c.x3p"]


def test_a_file_that_shrinks_while_read_with_progress_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "shrinks.gwy"
    export_to_gwy(np.random.default_rng(1).normal(size=(600, 600)), path)
    real, size = os.fstat, path.stat().st_size

    def shrinking(fd: int) -> os.stat_result:
        found = real(fd)
        if os.path.samestat(found, os.stat(path)) and found.st_size == size:  # the load's own file
            os.truncate(path, found.st_size - 1)
        return found

    monkeypatch.setattr(gwy.os, "fstat", shrinking)
    with pytest.raises(FormatError, match="shrank while being read") as info:
        load_gwy(path, progress=lambda done, total: None)  # read in order, one piece at a time
    assert one_line_naming(info.value, path)


def test_a_file_gwyddion_saved_again_loads_exactly(tmp_path: Path) -> None:
    # The real peer: Gwyddion reads tmd_nb's file (patch, gaps, user mask) and writes its own.
    require(shutil.which("gwyddion") is not None, "Gwyddion is not installed")
    hm = patched_map()
    hm[3, 4] = np.nan
    mask = np.zeros(hm.shape, bool)
    mask[10:12, 10:20] = True
    path = saved(tmp_path, hm, mask=mask, title="t")
    out = tmp_path / "again.gwy"
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    subprocess.run(
        ["gwyddion", f"--convert-to-gwy={out}", str(path)], check=True, capture_output=True, timeout=120, env=env
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_gwy(out)
    assert back["height_map"].tobytes() == hm.tobytes()
    assert back["mask"].dtype == np.bool_ and np.array_equal(back["mask"], mask) and back["title"] == "t"
