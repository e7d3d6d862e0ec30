"""Deflate levels, the zlib fallback, parallel deflate into one stream, and the chunk index that
lets members inflate in parallel."""

from __future__ import annotations

import struct
import zipfile
import zlib

import numpy as np
import pytest
from archive_helpers import check_progress, index_of, raw_member_data, same, save_npz, surface, unzip_ok
from conftest import require

from tmd_nb.errors import FormatError
from tmd_nb.formats import deflate
from tmd_nb.formats.archive import read_npz


@pytest.mark.parametrize("level", [None, 0, 1, 2, 3, 4, 6, 9])
@pytest.mark.parametrize("isal", [True, False])
def test_levels_and_zlib_fallback_write_standard_files(tmp_path, monkeypatch, level, isal):
    if isal:
        require(deflate._isal_zlib is not None, "isal (ISA-L) is not installed")
    else:
        monkeypatch.setattr(deflate, "_isal_zlib", None)
    # several chunks, compressed on two threads and joined into one stream
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    a = surface(160, seed=level or 0)
    path = save_npz(tmp_path / "l.npz", {"height_map": a, "small": np.arange(3)}, level=level, threads=2)
    with np.load(path) as z:
        assert same(z["height_map"], a)
    assert same(read_npz(path)["height_map"], a)
    info = zipfile.ZipFile(path).getinfo("height_map.npy")
    if level == 0:  # as in zlib: no compression
        assert info.compress_type == zipfile.ZIP_STORED
    else:
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < info.file_size
    assert zipfile.ZipFile(path).testzip() is None
    unzip_ok(path)


def test_parallel_stream_matches_single_thread_content(tmp_path, monkeypatch):
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 12)
    a = np.asfortranarray(surface(100))
    one = save_npz(tmp_path / "1.npz", {"a": a}, threads=1)
    two = save_npz(tmp_path / "2.npz", {"a": a}, threads=2)
    # same chunking, so the same deflate stream whichever thread compressed which chunk
    assert raw_member_data(one, "a.npy") == raw_member_data(two, "a.npy")
    assert same(read_npz(one)["a"], a) and same(read_npz(two)["a"], a)
    raw = zipfile.ZipFile(two).read("a.npy")  # one deflate stream that plain zlib inflates, CRC checked
    assert zlib.crc32(raw) == zipfile.ZipFile(two).getinfo("a.npy").CRC


def test_level_6_is_no_larger_than_numpy(tmp_path, monkeypatch):
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 20)  # a 4 MB member: four chunks
    a = surface(1000)
    np.savez_compressed(tmp_path / "np.npz", height_map=a)
    ours = save_npz(tmp_path / "6.npz", {"height_map": a}, level=6)
    assert ours.stat().st_size <= (tmp_path / "np.npz").stat().st_size
    assert same(np.load(ours)["height_map"], a)


@pytest.mark.parametrize("bad", [-1, 10, 2.0, True, "6"])
def test_bad_level_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="level"):
        save_npz(tmp_path / "x.npz", {"a": np.arange(3)}, level=bad)


def test_chunk_index_lets_members_inflate_in_parallel(tmp_path, monkeypatch):
    require(deflate._isal_zlib is not None, "isal (ISA-L) is not installed")
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 13)
    monkeypatch.setattr(deflate, "INFLATE_PIECE", 1 << 12)
    a = surface(150)
    path = save_npz(tmp_path / "p.npz", {"a": a, "b": np.arange(10)}, threads=2)
    _, values = index_of(path.read_bytes())
    pairs = list(zip(values[::2], values[1::2], strict=False))
    # every chunk boundary: the header travels with the first chunk of array data
    assert [u for _, u in pairs] == [128 + (i + 1) * (1 << 13) for i in range(-(-a.nbytes // (1 << 13)) - 1)]
    assert pairs == sorted(pairs)
    calls: list[tuple[int, int]] = []
    for threads in (1, 2, 3):
        got = read_npz(path, threads=threads, progress=lambda d, t: calls.append((d, t)))
        assert same(got["a"], a) and same(got["b"], np.arange(10))
        check_progress(calls, sum(i.file_size for i in zipfile.ZipFile(path).infolist()))
        calls.clear()
    # any subset of restart points still works: long members keep at most MAX_INDEX of them
    monkeypatch.setattr(deflate, "MAX_INDEX", 3)
    path = save_npz(tmp_path / "q.npz", {"a": a}, threads=2)
    assert 1 <= len(index_of(path.read_bytes())[1]) // 2 <= 3
    assert same(read_npz(path, threads=2)["a"], a)
    # zlib levels prime each chunk with the previous one's tail: no restart points, no index
    path = save_npz(tmp_path / "z.npz", {"a": a}, level=6, threads=2)
    with pytest.raises(ValueError):
        index_of(path.read_bytes())


def test_lying_chunk_index_is_refused(tmp_path, monkeypatch):
    require(deflate._isal_zlib is not None, "isal (ISA-L) is not installed")
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 13)
    a = surface(120)
    good = save_npz(tmp_path / "g.npz", {"a": a}, threads=2).read_bytes()
    pos, values = index_of(good)
    assert len(values) >= 6

    def patched(new: list[int]) -> bytes:
        return good[:pos] + struct.pack(f"<{len(new)}Q", *new) + good[pos + 8 * len(new) :]

    lies = {
        "compressed offset off by one": [values[0] + 1, *values[1:]],
        "compressed offset inside a chunk": [values[0] // 2, *values[1:]],
        "uncompressed offset shifted": [values[0], values[1] + 4, *values[2:]],
        "uncompressed offset short": [values[0], values[1] - 4, *values[2:]],
        "not increasing": [values[2], values[3], values[0], values[1], *values[4:]],
        "past the end": [*values[:-2], 10**9, values[-1]],
        "header split": [values[0], 5, *values[2:]],
    }
    for what, new in lies.items():
        path = tmp_path / "lie.npz"
        path.write_bytes(patched(new))
        with pytest.raises(FormatError, match="index|corrupt") as info:
            read_npz(path, threads=2)
        assert "'a.npy'" in str(info.value), what
        # other readers do not use the index: the stream itself is intact
        assert same(np.load(path)["a"], a), what
        assert same(read_npz(path, threads=1)["a"], a), what
