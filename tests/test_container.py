"""The NPY/NPZ container layer: round trips, numpy interop, parallel deflate, Zip64, progress,
hostile archives and memory use."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from tmd_nb import container
from tmd_nb.container import read_npy, read_npz, write_npy, write_npz
from tmd_nb.errors import FormatError

from conftest import require

DTYPES = ["?", "i1", "u1", "<i2", ">u2", "<i4", ">i4", "<u8", "<f2", "<f4", ">f4", "<f8", ">f8", "<c8", ">c16",
          "<U7", "S5", "<M8[s]", ">m8[ms]"]


def sample(dtype: str, shape=(7, 9), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dt.itemsize, dtype=np.uint8)
    if dt.kind == "?":
        return (raw[: int(np.prod(shape))] & 1).astype(bool).reshape(shape)
    if dt.kind in "US":
        words = np.array(["", "a", "héllo" if dt.kind == "U" else "hello", "xyz", "é" if dt.kind == "U" else "e"])
        return words[rng.integers(0, len(words), size=shape)].astype(dt)
    return raw.view(dt).reshape(shape)  # any bit pattern, NaNs included: comparisons are bitwise


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def save_npz(path: Path, members, **kw) -> Path:
    with open(path, "wb") as fp:
        write_npz(fp, members, **kw)
    return path


def unzip_ok(path: Path) -> None:
    """Info-ZIP's own integrity test, where it is installed."""
    if shutil.which("unzip"):
        result = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------
# round trips and interop
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("compress", [True, False])
def test_npz_round_trip_every_dtype_and_layout(tmp_path, layout, compress):
    members = {}
    for i, dt in enumerate(DTYPES):
        a = sample(dt, (8, 12), seed=i)
        if layout == "F":
            a = np.asfortranarray(a)
            assert not a.flags.c_contiguous
        elif layout == "strided":
            a = a[::2, 1::3]
            assert not a.flags.c_contiguous and not a.flags.f_contiguous
        members[f"m{i}"] = a
    members["scalar"] = np.array(3.5)
    members["text"] = np.array("{\"é\": 1}")
    members["empty"] = np.zeros((0, 4), ">f4")
    members["three_d"] = sample("<i4", (3, 4, 5))
    path = save_npz(tmp_path / "a.npz", members, compress=compress)
    ours = read_npz(path)
    assert list(ours) == list(members)
    with np.load(path, allow_pickle=False) as theirs:
        assert theirs.files == list(members)
        for name, a in members.items():
            assert same(ours[name], a), name
            assert same(theirs[name], a), name
            # the layout numpy itself would have written: Fortran order kept, strided made C
            assert ours[name].flags.f_contiguous == theirs[name].flags.f_contiguous
    assert zipfile.ZipFile(path).testzip() is None
    unzip_ok(path)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_npy_round_trip_every_dtype_and_layout(tmp_path, layout):
    for i, dt in enumerate(DTYPES):
        a = sample(dt, (6, 10), seed=i)
        a = {"C": a, "F": np.asfortranarray(a), "strided": a[::3, ::-2]}[layout]
        path = tmp_path / f"{i}.npy"
        with open(path, "wb") as fp:
            write_npy(fp, a)
        assert same(read_npy(path), a), dt
        assert same(np.load(path, allow_pickle=False), a), dt
        assert same(np.asarray(read_npy(path, mmap=True)), a), dt
        # byte-identical to what numpy writes
        np.save(tmp_path / "ref.npy", a)
        assert path.read_bytes() == (tmp_path / "ref.npy").read_bytes(), dt


def test_reads_files_numpy_wrote(tmp_path):
    a, b = sample("<f4", (50, 40)), sample(">i8", (3,))
    np.savez(tmp_path / "s.npz", height_map=a, other=b)
    np.savez_compressed(tmp_path / "c.npz", height_map=a, other=b)
    for name in ("s.npz", "c.npz"):
        got = read_npz(tmp_path / name)
        assert same(got["height_map"], a) and same(got["other"], b)


def test_reads_archives_with_data_descriptors(tmp_path):
    """zipfile writing to an unseekable stream puts sizes after the data (flag bit 3)."""

    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.buf = bytearray()

        def writable(self):
            return True

        def write(self, b):
            self.buf += b
            return len(b)

    sink = Unseekable()
    a = sample("<f8", (20, 30))
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("height_map.npy", "w") as m:
            np.lib.format.write_array(m, a)
    path = tmp_path / "dd.npz"
    path.write_bytes(bytes(sink.buf))
    assert zipfile.ZipFile(path).infolist()[0].flag_bits & 0x8
    assert same(read_npz(path)["height_map"], a)


@pytest.mark.parametrize("level", [None, 0, 1, 2, 3, 4, 6, 9])
@pytest.mark.parametrize("isal", [True, False])
def test_levels_and_zlib_fallback_write_standard_files(tmp_path, monkeypatch, level, isal):
    if isal:
        require(container._isal_zlib is not None, "isal (ISA-L) is not installed")
    else:
        monkeypatch.setattr(container, "_isal_zlib", None)
    # several chunks, compressed on two threads and joined into one stream
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 14)
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
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 12)
    a = np.asfortranarray(surface(100))
    one = save_npz(tmp_path / "1.npz", {"a": a}, threads=1)
    two = save_npz(tmp_path / "2.npz", {"a": a}, threads=2)
    # same chunking, so the same deflate stream whichever thread compressed which chunk
    assert raw_member_data(one, "a.npy") == raw_member_data(two, "a.npy")
    assert same(read_npz(one)["a"], a) and same(read_npz(two)["a"], a)
    raw = zipfile.ZipFile(two).read("a.npy")  # one deflate stream that plain zlib inflates, CRC checked
    assert zlib.crc32(raw) == zipfile.ZipFile(two).getinfo("a.npy").CRC


def raw_member_data(path: Path, name: str) -> bytes:
    info = zipfile.ZipFile(path).getinfo(name)
    data = path.read_bytes()
    nlen, xlen = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + nlen + xlen
    return data[start:start + info.compress_size]


def test_level_6_is_no_larger_than_numpy(tmp_path, monkeypatch):
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 20)  # a 4 MB member: four chunks
    a = surface(1000)
    np.savez_compressed(tmp_path / "np.npz", height_map=a)
    ours = save_npz(tmp_path / "6.npz", {"height_map": a}, level=6)
    assert ours.stat().st_size <= (tmp_path / "np.npz").stat().st_size
    assert same(np.load(ours)["height_map"], a)


@pytest.mark.parametrize("bad", [-1, 10, 2.0, True, "6"])
def test_bad_level_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="level"):
        save_npz(tmp_path / "x.npz", {"a": np.arange(3)}, level=bad)


def test_writers_refuse_object_and_structured_dtypes(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        save_npz(tmp_path / "o.npz", {"a": np.array([1, None], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        write_npy(io.BytesIO(), np.array([{}], dtype=object))
    with pytest.raises(TypeError, match="dtype"):
        save_npz(tmp_path / "s.npz", {"a": np.zeros(2, dtype=[("x", "f4")])})


# ------------------------------------------------------------------------------------------
# progress and Zip64
# ------------------------------------------------------------------------------------------

def check_progress(calls: list[tuple[int, int]], total: int) -> None:
    assert calls, "progress was never called"
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == total and done[0] >= 0


def test_progress_is_monotone_and_ends_at_total(tmp_path, monkeypatch):
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 14)
    monkeypatch.setattr(container, "CHUNK", 1 << 13)
    monkeypatch.setattr(container, "INFLATE_PIECE", 1 << 12)
    a, b = surface(120), sample("<i8", (40, 30))
    for compress in (True, False):
        calls: list[tuple[int, int]] = []
        path = save_npz(tmp_path / f"{compress}.npz", {"a": a, "b": b}, compress=compress,
                        progress=lambda d, t: calls.append((d, t)))
        check_progress(calls, a.nbytes + b.nbytes)
        assert len(calls) > 4
        calls = []
        read_npz(path, progress=lambda d, t: calls.append((d, t)))
        check_progress(calls, sum(i.file_size for i in zipfile.ZipFile(path).infolist()))
        assert len(calls) > 4
    calls = []
    with open(tmp_path / "a.npy", "wb") as fp:
        write_npy(fp, a, progress=lambda d, t: calls.append((d, t)))
    check_progress(calls, a.nbytes)
    calls = []
    read_npy(tmp_path / "a.npy", progress=lambda d, t: calls.append((d, t)))
    check_progress(calls, a.nbytes)
    assert len(calls) > 4
    calls = []
    save_npz(tmp_path / "e.npz", {"e": np.zeros(0)}, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(0, 0)]


@pytest.mark.parametrize("compress", [True, False])
def test_zip64_structures_with_a_lowered_limit(tmp_path, monkeypatch, compress):
    monkeypatch.setattr(container, "ZIP64_LIMIT", 1000)
    monkeypatch.setattr(container, "ZIP64_COUNT_LIMIT", 3)
    members = {"big": surface(40), "tiny": np.arange(3, dtype="<i2"), "mid": sample(">f8", (20, 20)),
               "last": np.array("x")}
    path = save_npz(tmp_path / "z.npz", members, compress=compress)
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # Zip64 end record and locator
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        big = zf.getinfo("big.npy")
        assert big.extract_version == 45 and struct.pack("<H", 1) in big.extra
        assert zf.infolist()[-1].header_offset > 1000
    with np.load(path) as z:
        for k, v in members.items():
            assert same(z[k], v)
    got = read_npz(path)
    for k, v in members.items():
        assert same(got[k], v)
    unzip_ok(path)


@pytest.mark.slow
def test_real_zip64_member_over_4_gib(tmp_path):
    """One real member larger than 4 GiB (zeros: no memory is touched, the file stays small)."""
    require(container._isal_zlib is not None, "isal (ISA-L) is not installed")
    isal_zlib = container._isal_zlib

    big = np.zeros(2**32 + 100, np.uint8)
    path = save_npz(tmp_path / "big.npz", {"big": big, "after": np.arange(5)}, level=1)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("big.npy")
        assert info.file_size > 2**32 and info.file_size == 128 + big.nbytes
        assert np.array_equal(np.load(path)["after"], np.arange(5))
        # inflate and CRC-check the whole member as a stream, as any unzip would
        raw = path.open("rb")
        raw.seek(info.header_offset)
        local = raw.read(30)
        nlen, xlen = struct.unpack("<HH", local[26:30])
        assert struct.unpack("<II", local[18:26]) == (0xFFFFFFFF, 0xFFFFFFFF)
        extra = raw.read(nlen + xlen)[nlen:]
        assert struct.unpack("<HHQQ", extra[:20]) == (1, 16, info.file_size, info.compress_size)
        d = isal_zlib.decompressobj(-15)
        crc, n, left = 0, 0, info.compress_size
        while left:
            chunk = raw.read(min(left, 1 << 20))
            left -= len(chunk)
            out = d.decompress(chunk)
            crc, n = zlib.crc32(out, crc), n + len(out)
        raw.close()
        assert d.eof and n == info.file_size and crc == info.CRC
    members, _ = container._central_directory(open(path, "rb"), path.stat().st_size, "x")
    assert [m.usize for m in members][0] == info.file_size


# ------------------------------------------------------------------------------------------
# hostile and damaged input
# ------------------------------------------------------------------------------------------

def npy_bytes(a: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, **kw)
    return buf.getvalue()


def build_zip(entries, trailing: bytes = b"") -> bytes:
    """A zip archive from (name, payload, method, overrides) with any header field forced."""
    out = bytearray()
    central = bytearray()
    for name, payload, method, over in entries:
        data = payload if method == 0 else (lambda c: c.compress(payload) + c.flush())(zlib.compressobj(6, 8, -15))
        data = over.get("data", data)
        crc, csize, usize = over.get("crc", zlib.crc32(payload)), len(data), over.get("usize", len(payload))
        raw = name.encode()
        offset = over.get("offset", len(out))
        local = dict(sig=0x04034B50, flags=over.get("flags", 0), method=over.get("method", method), crc=crc,
                     csize=over.get("local_csize", csize), usize=over.get("local_usize", usize),
                     name=over.get("local_name", raw))
        out += struct.pack("<IHHHHHIIIHH", local["sig"], 20, local["flags"], local["method"], 0, 0x21, local["crc"],
                           local["csize"], local["usize"], len(local["name"]), 0) + local["name"] + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, over.get("flags", 0),
                               over.get("method", method), 0, 0x21, crc, over.get("csize", csize), usize, len(raw),
                               0, 0, 0, 0, 0, offset) + raw
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + eocd + trailing)


def refused(tmp_path: Path, data: bytes, match: str = "", name: str = "h.npz") -> FormatError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(FormatError, match=match or None) as info:
        read_npz(path)
    assert repr(str(path)) in str(info.value)  # the message names the file
    return info.value


def test_build_zip_helper_makes_valid_archives(tmp_path):
    a = sample("<f4", (5, 6))
    path = tmp_path / "ok.npz"
    path.write_bytes(build_zip([("a.npy", npy_bytes(a), 8, {}), ("b.npy", npy_bytes(a), 0, {})]))
    assert same(read_npz(path)["a"], a) and same(np.load(path)["b"], a)


def test_hostile_archives_are_refused(tmp_path):
    a = sample("<f8", (30, 20))
    body = npy_bytes(a)
    err = refused(tmp_path, build_zip([("a.npy", body, 8, {"crc": 0x1234})]), "CRC")
    assert "'a.npy'" in str(err)
    refused(tmp_path, build_zip([("a.npy", body, 0, {"crc": 0x1234})]), "CRC")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"local_usize": len(body) + 8})]), "local header")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"local_csize": 5})]), "local header")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"local_name": b"b.npy"})]), "local header")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"flags": 1})]), "encrypted")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"flags": 0x40})]), "encrypted")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"method": 12})]), "bzip2")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"method": 14})]), "lzma")
    refused(tmp_path, build_zip([("readme.txt", b"hello", 0, {})]), "not an NPY")
    refused(tmp_path, build_zip([("a.npy", body, 0, {}), ("a.npy", body, 0, {})]), "duplicate")
    refused(tmp_path, build_zip([("a.npy", body, 8, {})], trailing=b"junk"), "trailing")
    refused(tmp_path, build_zip([("a.npy", body, 8, {})])[:-30], "")
    # sizes that agree with each other but not with the data
    refused(tmp_path, build_zip([("a.npy", body, 0, {"usize": len(body) - 8, "crc": zlib.crc32(body[:-8])})]), "")
    refused(tmp_path, build_zip([("a.npy", body + b"xx", 0, {})]), "header claims")
    # a deflate stream followed by junk inside the member
    stream = (lambda c: c.compress(body) + c.flush())(zlib.compressobj(6, 8, -15))
    refused(tmp_path, build_zip([("a.npy", body, 8, {"data": stream + b"\0\0\0"})]), "after the end of its deflate")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"data": stream[:-40]})]), "")
    # a member whose local header sits inside another member's data (overlapping files)
    inner = build_zip([("b.npy", body, 0, {})])
    inner_local = inner[: 30 + 5 + len(body)]
    outer_payload = inner_local
    data = bytearray(build_zip([("a.npy", outer_payload, 0, {}), ("b.npy", body, 0, {"offset": 30 + 5})]))
    refused(tmp_path, bytes(data), "")


def test_zip_bomb_claim_is_refused_before_allocating(tmp_path):
    huge = np.lib.format.header_data_from_array_1_0(np.zeros(1, "<f8"))
    huge["shape"] = (2**14, 2**14)  # 2 GiB claimed
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, huge)
    payload = head.getvalue() + bytes(1 << 16)
    usize = len(head.getvalue()) + 8 * 2**28
    tracemalloc.start()
    try:
        refused(tmp_path, build_zip([("a.npy", payload, 8, {"usize": usize, "local_usize": usize})]), "claims")
        refused(tmp_path, build_zip([("a.npy", payload, 8, {})]), "header claims")
        # consistent headers claiming 1 GB from a few hundred bytes: more than deflate can expand
        cheat = head.getvalue()
        refused(tmp_path, build_zip([("a.npy", cheat, 8, {"usize": 2**30, "local_usize": 2**30})]), "claims")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


class Evil:
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_and_object_arrays_are_never_loaded(tmp_path):
    marker = tmp_path / "PWNED"
    Evil.marker = str(marker)
    evil = np.array([Evil(), 1], dtype=object)
    body = npy_bytes(evil, allow_pickle=True)
    assert b"PWNED" in body
    for method in (0, 8):
        refused(tmp_path, build_zip([("a.npy", body, method, {})]), "pickle")
    (tmp_path / "evil.npy").write_bytes(body)
    with pytest.raises(FormatError, match="pickle"):
        read_npy(tmp_path / "evil.npy")
    with pytest.raises(FormatError, match="pickle"):
        read_npy(tmp_path / "evil.npy", mmap=True)
    # a pickle where an NPY header should be
    import pickle

    refused(tmp_path, build_zip([("a.npy", pickle.dumps(Evil()), 8, {})]), "not an NPY")
    assert not marker.exists()


def test_npy_damage_is_refused(tmp_path):
    a = sample("<f4", (30, 30))
    good = npy_bytes(a)
    cases = {"trunc.npy": good[:-1], "long.npy": good + b"x", "magic.npy": b"xNUMPY" + good[6:],
             "header.npy": good[:10] + b"{'descr': '<f4', 'shape': (-3,), " + good[44:],
             "empty.npy": b"", "version.npy": good[:6] + b"\x09\x00" + good[8:]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError) as info:
            read_npy(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(IsADirectoryError):
        read_npy(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / "missing.npz")


def test_random_damage_raises_only_format_error(tmp_path, monkeypatch):
    """Truncations and byte flips anywhere: FormatError or a correct result, never anything else."""
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 10)
    members = {"height_map": surface(24), "meta": np.array("{}"), "n": np.arange(4, dtype=">i2")}
    good = {}
    for compress in (True, False):
        good[compress] = save_npz(tmp_path / f"g{compress}.npz", members, compress=compress).read_bytes()
    rng = np.random.default_rng(7)
    path = tmp_path / "bad.npz"
    outcomes = {"error": 0, "ok": 0}
    for i in range(600):
        data = bytearray(good[bool(i % 2)])
        kind = i % 3
        if kind == 0:
            data = data[: rng.integers(0, len(data))]
        else:
            for _ in range(int(rng.integers(1, 4))):
                data[rng.integers(0, len(data))] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(data))
        try:
            got = read_npz(path)
        except FormatError:
            outcomes["error"] += 1
            continue
        outcomes["ok"] += 1  # a flip in a field nobody checks (e.g. a timestamp) is harmless
        for k, v in members.items():
            assert same(got[k], v)
    assert outcomes["error"] > 400


def test_not_a_zip(tmp_path):
    refused(tmp_path, b"", "not a zip")
    refused(tmp_path, b"PK\x03\x04" + bytes(100), "not a zip")
    refused(tmp_path, npy_bytes(np.arange(4)), "not a zip")


# ------------------------------------------------------------------------------------------
# memory: no copy of the array while saving
# ------------------------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, numpy as np, tmd_nb
    kind, out = sys.argv[1], sys.argv[2]
    n = 64 * 2**20  # 256 MB of float32, made in place (no temporaries inflate the baseline)
    a = np.empty(n, np.float32)
    rng = np.random.default_rng(0)
    for s in range(0, n, 2**20):
        rng.standard_normal(2**20, dtype=np.float32, out=a[s:s + 2**20])
    a = a.reshape(8192, 8192)
    a.round(3, out=a)  # compressible, like a quantised scan
    if kind == "strided":
        a = a[:, ::2]  # 128 MB that is not contiguous
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "npy":
        tmd_nb.export_to_npy(a, out)
    else:
        tmd_nb.export_to_npz({"height_map": a}, out, compress=kind != "stored")
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)
""")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["compressed", "stored", "npy", "strided"])
def test_save_adds_at_most_64_mb_of_peak_memory(tmp_path, kind):
    require(sys.platform.startswith("linux"), "ru_maxrss in KiB is Linux behaviour")
    out = tmp_path / ("a.npy" if kind == "npy" else "a.npz")
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, kind, str(out)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    added = int(result.stdout.strip())
    assert added <= 64 * 2**20, f"{kind}: a save of a 256 MB array added {added / 2**20:.0f} MB of peak memory"
    assert out.stat().st_size > 2**20


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------

def surface(n: int, seed: int = 0) -> np.ndarray:
    """A smooth random float32 surface with noise, quantised like a scanner's output."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] / n
    z = np.zeros((n, n))
    for k in range(1, 6):
        z += rng.normal() / k * np.sin(2 * np.pi * (k * x + rng.random())) * np.cos(2 * np.pi * (k * y + rng.random()))
    z += rng.normal(0, 0.01, z.shape)
    step = (z.max() - z.min()) / 2**15
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (np.round(z / step) * step).astype(np.float32)


def test_large_saves_write_back_while_writing(tmp_path, monkeypatch):
    """Disk write-back starts during a large save (fdatasync from a helper), and the file is right."""
    monkeypatch.setattr(container, "WRITE_BEHIND", 1 << 14)
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 14)
    synced: list[int] = []
    real = os.fdatasync

    def counting(fd):
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    a = sample("<f8", (200, 300))
    for compress in (True, False):
        synced.clear()
        path = save_npz(tmp_path / f"{compress}.npz", {"a": a}, compress=compress, threads=2)
        assert synced and same(np.load(path)["a"], a)
    synced.clear()
    with open(tmp_path / "a.npy", "wb") as fp:
        write_npy(fp, a)
    assert synced and same(np.load(tmp_path / "a.npy"), a)
    synced.clear()
    write_npy(io.BytesIO(), a)  # nothing to sync, nothing breaks
    assert not synced


def test_a_fifo_is_refused_without_blocking(tmp_path):
    require(hasattr(os, "mkfifo"), "no FIFOs on this platform")
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        read_npz(fifo)
    with pytest.raises(FormatError, match="not a regular file"):
        read_npy(fifo)


def index_of(data: bytes) -> tuple[int, list[int]]:
    """Position and values of tmd_nb's chunk index extra field (first member); ValueError if none."""
    extra = zipfile.ZipFile(io.BytesIO(data)).infolist()[0].extra
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == container._INDEX_EXTRA:
            at = data.rindex(extra) + pos + 4
            return at, list(struct.unpack_from(f"<{size // 8}Q", data, at))
        pos += 4 + size
    raise ValueError("no chunk index")


def test_chunk_index_lets_members_inflate_in_parallel(tmp_path, monkeypatch):
    require(container._isal_zlib is not None, "isal (ISA-L) is not installed")
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 13)
    monkeypatch.setattr(container, "INFLATE_PIECE", 1 << 12)
    a = surface(150)
    path = save_npz(tmp_path / "p.npz", {"a": a, "b": np.arange(10)}, threads=2)
    _, values = index_of(path.read_bytes())
    pairs = list(zip(values[::2], values[1::2]))
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
    monkeypatch.setattr(container, "MAX_INDEX", 3)
    path = save_npz(tmp_path / "q.npz", {"a": a}, threads=2)
    assert 1 <= len(index_of(path.read_bytes())[1]) // 2 <= 3
    assert same(read_npz(path, threads=2)["a"], a)
    # zlib levels prime each chunk with the previous one's tail: no restart points, no index
    path = save_npz(tmp_path / "z.npz", {"a": a}, level=6, threads=2)
    with pytest.raises(ValueError):
        index_of(path.read_bytes())


def test_lying_chunk_index_is_refused(tmp_path, monkeypatch):
    require(container._isal_zlib is not None, "isal (ISA-L) is not installed")
    monkeypatch.setattr(container, "DEFLATE_CHUNK", 1 << 13)
    a = surface(120)
    good = save_npz(tmp_path / "g.npz", {"a": a}, threads=2).read_bytes()
    pos, values = index_of(good)
    assert len(values) >= 6

    def patched(new: list[int]) -> bytes:
        return good[:pos] + struct.pack(f"<{len(new)}Q", *new) + good[pos + 8 * len(new):]

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
