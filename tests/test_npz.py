"""NPZ archives: round trips, numpy interop, progress, Zip64, hostile archives and memory use."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from archive_helpers import (
    DTYPES,
    build_zip,
    check_progress,
    npy_bytes,
    refused,
    same,
    sample,
    save_npz,
    surface,
    unzip_ok,
)
from conftest import require

from tmd_nb.errors import FormatError
from tmd_nb.storage import _io, deflate, inflate, libraries
from tmd_nb.storage import archive as npz
from tmd_nb.storage.archive import read_npz, write_npz
from tmd_nb.storage.npyfile import read_npy, write_npy

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
    members["text"] = np.array('{"é": 1}')
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
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open("height_map.npy", "w") as m:
        np.lib.format.write_array(m, a)
    path = tmp_path / "dd.npz"
    path.write_bytes(bytes(sink.buf))
    assert zipfile.ZipFile(path).infolist()[0].flag_bits & 0x8
    assert same(read_npz(path)["height_map"], a)


# ------------------------------------------------------------------------------------------
# progress and Zip64
# ------------------------------------------------------------------------------------------


def test_progress_is_monotone_and_ends_at_total(tmp_path, monkeypatch):
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    monkeypatch.setattr(_io, "CHUNK", 1 << 13)
    monkeypatch.setattr(inflate, "INFLATE_PIECE", 1 << 12)
    a, b = surface(120), sample("<i8", (40, 30))
    for compress in (True, False):
        calls: list[tuple[int, int]] = []
        path = save_npz(
            tmp_path / f"{compress}.npz",
            {"a": a, "b": b},
            compress=compress,
            progress=lambda d, t, calls=calls: calls.append((d, t)),
        )
        check_progress(calls, a.nbytes + b.nbytes)
        assert len(calls) > 4
        calls = []
        read_npz(path, progress=lambda d, t, calls=calls: calls.append((d, t)))
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
    monkeypatch.setattr(npz, "ZIP64_LIMIT", 1000)
    monkeypatch.setattr(npz, "ZIP64_COUNT_LIMIT", 3)
    members = {
        "big": surface(40),
        "tiny": np.arange(3, dtype="<i2"),
        "mid": sample(">f8", (20, 20)),
        "last": np.array("x"),
    }
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
    require(libraries.isal_zlib is not None, "isal (ISA-L) is not installed")
    isal_zlib = libraries.isal_zlib

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
    with open(path, "rb") as f:
        members, _ = npz._central_directory(f, path.stat().st_size, "x")
    assert next(m.usize for m in members) == info.file_size


# ------------------------------------------------------------------------------------------
# hostile and damaged input
# ------------------------------------------------------------------------------------------


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


def test_random_damage_raises_only_format_error(tmp_path, monkeypatch):
    """Truncations and byte flips anywhere: FormatError or a correct result, never anything else."""
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 10)
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
    import sys, numpy as np, tmd_nb
    from memory_probe import reset_peak, vm  # the child runs in the tests folder
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
    before = reset_peak()  # bytes
    if kind == "npy":
        tmd_nb.export_to_npy(a, out)
    else:
        tmd_nb.export_to_npz({"height_map": a}, out, compress=kind != "stored")
    after = vm("VmHWM")
    print(after - before)
""")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["compressed", "stored", "npy", "strided"])
def test_save_adds_at_most_64_mb_of_peak_memory(tmp_path, kind):
    require(sys.platform.startswith("linux"), "/proc/self/clear_refs and VmHWM are Linux")
    out = tmp_path / ("a.npy" if kind == "npy" else "a.npz")
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, kind, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parent,
    )
    assert result.returncode == 0, result.stderr
    added = int(result.stdout.strip())
    assert added <= 64 * 2**20, f"{kind}: a save of a 256 MB array added {added / 2**20:.0f} MB of peak memory"
    assert out.stat().st_size > 2**20


@pytest.mark.parametrize("compress", [True, False])
def test_an_error_of_the_progress_callback_is_not_reported_as_a_corrupt_file(tmp_path, compress):
    path = tmp_path / "fine.npz"
    with open(path, "wb") as fp:
        write_npz(fp, {"height_map": np.arange(3_000_000, dtype=np.float64).reshape(1000, 3000)}, compress=compress)

    def broken(done, total):
        raise ValueError("bug in the caller's progress bar")

    with pytest.raises(ValueError, match="bug in the caller's progress bar") as info:
        read_npz(path, progress=broken)
    assert not isinstance(info.value, FormatError)
