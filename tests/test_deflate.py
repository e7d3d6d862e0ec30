"""Deflate levels, the zlib fallback, parallel deflate into one stream, and the chunk index that
lets members inflate in parallel."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
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


# --------------------------------------------------------------------------------------------
# The ladder: named levels
# --------------------------------------------------------------------------------------------


def _libdeflate_or_not(monkeypatch, libdeflate: bool) -> None:
    if libdeflate:
        require(deflate._libdeflate is not None, "deflate (libdeflate) is not installed")
    else:
        monkeypatch.setattr(deflate, "_libdeflate", None)


@pytest.mark.parametrize("level", deflate.LEVEL_NAMES)
@pytest.mark.parametrize("libdeflate", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_named_levels_write_files_numpy_reads_byte_exact(tmp_path, monkeypatch, level, libdeflate, threads):
    _libdeflate_or_not(monkeypatch, libdeflate)
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)  # several chunks: the parallel split
    monkeypatch.setattr(deflate, "SPLIT_MIN", 1 << 12)
    a = surface(160, seed=3)
    small = np.arange(5, dtype="<i2")
    path = save_npz(tmp_path / "l.npz", {"height_map": a, "small": small}, level=level, threads=threads)
    with np.load(path) as z:
        assert same(z["height_map"], a) and same(z["small"], small)
        assert z["height_map"].tobytes() == a.tobytes()
    back = read_npz(path)
    assert same(back["height_map"], a) and same(back["small"], small)
    assert back["height_map"].flags.writeable
    assert zipfile.ZipFile(path).testzip() is None
    unzip_ok(path)
    info = zipfile.ZipFile(path).getinfo("height_map.npy")
    assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < info.file_size
    codec = deflate.Codec(level)
    assert (codec.final is not None) == (libdeflate and level != "fastest")
    if codec.final is not None:  # on one thread libdeflate takes all the data, on two a share of it
        share = codec.final_bytes(a, threads, True)
        assert share == a.nbytes if threads == 1 else 0 < share < a.nbytes
        assert codec.final_bytes(small, threads, True) == small.nbytes  # too small to split
        monkeypatch.setattr(deflate, "FINAL_MAX", 1000)  # libdeflate's share is capped: its output is held whole
        assert codec.final_bytes(a, threads, True) == 1000


def test_fastest_is_the_default_and_level_2(tmp_path):
    a = surface(120)
    files = [save_npz(tmp_path / f"{k}.npz", {"a": a}, level=k) for k in (None, "fastest", 2)]
    assert len({raw_member_data(f, "a.npy") for f in files}) == 1


@pytest.mark.parametrize(("name", "number"), [("balanced", 6), ("smallest", 9)])
def test_without_libdeflate_named_levels_are_zlib_levels(tmp_path, monkeypatch, name, number):
    monkeypatch.setattr(deflate, "_libdeflate", None)
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    a = surface(150)
    named = save_npz(tmp_path / "n.npz", {"a": a}, level=name, threads=2)
    numbered = save_npz(tmp_path / "i.npz", {"a": a}, level=number, threads=2)
    assert raw_member_data(named, "a.npy") == raw_member_data(numbered, "a.npy")


def test_ladder_sizes_against_numpy(tmp_path, monkeypatch):
    require(deflate._libdeflate is not None, "deflate (libdeflate) is not installed")
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 18)  # a 1 MB member split over two threads
    a = surface(512, seed=1)
    np.savez_compressed(tmp_path / "np.npz", height_map=a)
    numpy_size = (tmp_path / "np.npz").stat().st_size
    sizes = {}
    for level in deflate.LEVEL_NAMES:
        for threads in (1, 2):
            path = save_npz(tmp_path / f"{level}{threads}.npz", {"height_map": a}, level=level, threads=threads)
            sizes[level, threads] = path.stat().st_size / numpy_size
            assert np.load(path)["height_map"].tobytes() == a.tobytes()
    for threads in (1, 2):
        assert sizes["balanced", threads] <= 1.01, sizes
        assert sizes["smallest", threads] < 1.0, sizes
        assert sizes["smallest", threads] < sizes["balanced", threads] < sizes["fastest", threads], sizes


def test_split_member_carries_one_restart_point_and_inflates_in_parallel(tmp_path, monkeypatch):
    require(deflate._libdeflate is not None, "deflate (libdeflate) is not installed")
    require(deflate._isal_zlib is not None, "isal (ISA-L) is not installed")
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    monkeypatch.setattr(deflate, "SPLIT_MIN", 1 << 12)
    a = surface(200, seed=5)
    path = save_npz(tmp_path / "b.npz", {"height_map": a}, level="balanced", threads=2)
    _, points = index_of(path.read_bytes())
    share = deflate.Codec("balanced").final_bytes(a, 2, True)
    usize = zipfile.ZipFile(path).getinfo("height_map.npy").file_size
    assert len(points) == 2 and points[1] == usize - share  # one (compressed, uncompressed) pair
    calls = []
    real = deflate._inflate_parallel
    monkeypatch.setattr(deflate, "_inflate_parallel", lambda *args: calls.append(args) or real(*args))
    assert same(read_npz(path, threads=2)["height_map"], a) and len(calls) == 1
    assert same(read_npz(path, threads=1)["height_map"], a) and len(calls) == 1  # on one thread: whole


@pytest.mark.parametrize("bad", ["fast", "Balanced", "", 10, 2.5])
def test_unknown_level_names_the_choices(tmp_path, bad):
    from tmd_nb import export_to_npz, save

    message = f"compression level must be 'fastest', 'balanced', 'smallest', an int from 0 to 9 or None, not {bad!r}"
    target = tmp_path / "x.npz"
    target.write_bytes(b"old")
    for call in (
        lambda: export_to_npz({"height_map": np.zeros((2, 2))}, target, level=bad),
        lambda: save(np.zeros((2, 2)), target, level=bad),
    ):
        with pytest.raises(ValueError) as info:
            call()
        assert str(info.value) == message
    assert target.read_bytes() == b"old"


# --------------------------------------------------------------------------------------------
# Inflating a member other tools wrote: libdeflate, whole
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("whole", [True, False])
def test_numpys_files_inflate_whole_or_streamed_alike(tmp_path, monkeypatch, whole):
    if whole:
        require(deflate.whole_inflater is not None, "libdeflate's decompressor is not reachable")
    else:
        monkeypatch.setattr(deflate, "whole_inflater", None)
    a = surface(300, seed=2)
    f = np.asfortranarray(surface(40, seed=4).astype(">f8"))
    np.savez_compressed(tmp_path / "n.npz", height_map=a, f=f, empty=np.zeros((0, 3)), scalar=np.array(2.5))
    seen = []
    back = read_npz(tmp_path / "n.npz", progress=lambda done, total: seen.append((done, total)))
    assert same(back["height_map"], a) and same(back["f"], f) and back["f"].flags.f_contiguous
    assert back["empty"].shape == (0, 3) and back["scalar"] == 2.5
    assert all(v.flags.writeable for v in back.values())
    check_progress(seen, seen[-1][1])


def test_whole_inflate_memory_is_the_array_and_the_compressed_member(tmp_path):
    require(deflate.whole_inflater is not None, "libdeflate's decompressor is not reachable")
    import tracemalloc

    a = surface(700, seed=6)
    np.savez_compressed(tmp_path / "n.npz", height_map=a)
    csize = zipfile.ZipFile(tmp_path / "n.npz").getinfo("height_map.npy").compress_size
    tracemalloc.start()
    try:
        back = read_npz(tmp_path / "n.npz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert same(back["height_map"], a)
    assert peak <= a.nbytes + csize + (1 << 18), (peak, a.nbytes, csize)  # not a second copy of either


def test_whole_inflate_refuses_damage(tmp_path):
    require(deflate.whole_inflater is not None, "libdeflate's decompressor is not reachable")
    from archive_helpers import build_zip, npy_bytes, refused

    body = npy_bytes(surface(50))
    stream = (lambda c: c.compress(body) + c.flush())(zlib.compressobj(6, 8, -15))
    refused(
        tmp_path, build_zip([("a.npy", body, 8, {"data": stream + b"\0\0"})]), "2 bytes after the end of its deflate"
    )
    refused(tmp_path, build_zip([("a.npy", body, 8, {"data": stream[:-40]})]), "")
    bad = bytearray(stream)
    bad[len(bad) // 2] ^= 0xFF
    refused(tmp_path, build_zip([("a.npy", body, 8, {"data": bytes(bad)})]), "")
    refused(tmp_path, build_zip([("a.npy", body, 8, {"crc": 0x1234})]), "CRC")


@pytest.mark.parametrize("threads", [1, 2])
def test_capped_libdeflate_part_still_makes_one_stream(tmp_path, monkeypatch, threads):
    require(deflate._libdeflate is not None, "deflate (libdeflate) is not installed")
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    monkeypatch.setattr(deflate, "SPLIT_MIN", 1 << 12)
    monkeypatch.setattr(deflate, "FINAL_MAX", 5000)  # most of the member is zlib's, the last 5000 bytes libdeflate's
    a = surface(150, seed=8)
    path = save_npz(tmp_path / "c.npz", {"height_map": a}, level="smallest", threads=threads)
    assert np.load(path)["height_map"].tobytes() == a.tobytes()
    assert same(read_npz(path, threads=threads)["height_map"], a)
    unzip_ok(path)


@pytest.mark.parametrize("level", ["balanced", "smallest"])
def test_dask_array_at_named_levels_gives_the_same_member_as_in_memory(tmp_path, monkeypatch, level):
    da = pytest.importorskip("dask.array")
    require(deflate._libdeflate is not None, "deflate (libdeflate) is not installed")
    monkeypatch.setattr(deflate, "DEFLATE_CHUNK", 1 << 14)
    monkeypatch.setattr(deflate, "SPLIT_MIN", 1 << 12)
    a = surface(160, seed=9)
    lazy = da.from_array(a, chunks=(37, 160))
    for threads in (1, 2):
        ours = save_npz(tmp_path / f"d{threads}.npz", {"height_map": lazy}, level=level, threads=threads)
        plain = save_npz(tmp_path / f"n{threads}.npz", {"height_map": a}, level=level, threads=threads)
        assert raw_member_data(ours, "height_map.npy") == raw_member_data(plain, "height_map.npy")
        assert np.load(ours)["height_map"].tobytes() == a.tobytes()


# --------------------------------------------------------------------------------------------
# libdeflate at import: checked against known vectors, ISA-L and zlib standing in when it fails
# --------------------------------------------------------------------------------------------


def test_installed_libdeflate_passes_its_import_checks():
    require(deflate._package is not None, "deflate (libdeflate) is not installed")
    assert deflate.LIBDEFLATE_PROBLEM is None
    assert deflate._libdeflate is deflate._package and deflate.whole_inflater is not None


class _ZlibWrapped:
    """A release whose deflate_compress made zlib-wrapped streams instead of raw deflate."""

    __version__ = "9.9"

    @staticmethod
    def deflate_compress(data, level):
        return zlib.compress(bytes(data), 6)


def _public_api_inflate(data, out, where):
    """Whole inflate through the package's public deflate_decompress, mapped onto FormatError like ours."""
    lib = deflate._package
    try:
        got = lib.deflate_decompress(data, out.nbytes)
    except lib.DeflateError:
        raise FormatError(f"{where} is corrupt or truncated: its deflate stream does not inflate") from None
    out[: len(got)] = np.frombuffer(got, dtype=np.uint8)
    if len(got) != out.nbytes:
        raise FormatError(f"{where}: its deflate stream ends after {len(got)} of {out.nbytes} bytes")


def test_a_compressor_failing_the_known_vector_is_not_used():
    lib, inflater, problem = deflate._checked_libdeflate(_ZlibWrapped)
    assert lib is None and inflater is None
    assert problem is not None and problem.startswith("its deflate_compress at level 2 fails the known vector")


def test_an_inflater_failing_a_known_vector_is_not_used():
    require(deflate._package is not None, "deflate (libdeflate) is not installed")

    def writes_nothing(data, out, where):  # as if the output pointer went astray
        pass

    def argument_error(data, out, where):  # as if the signature had changed
        raise deflate.ctypes.ArgumentError("argument 4: wrong type")

    assert deflate._inflater_problem(writes_nothing) == "its decompressor gets a stream zlib made wrong"
    assert deflate._inflater_problem(argument_error).startswith("its decompressor fails on a stream zlib made")
    # The package's public inflate does not say where the stream ended: bytes after it would pass.
    assert deflate._inflater_problem(_public_api_inflate) == (
        "its decompressor gets a stream with a byte after its end wrong"
    )
    assert deflate._inflater_problem(deflate.whole_inflater) is None


def test_when_the_checks_fail_zlib_and_isal_stand_in(tmp_path, monkeypatch):
    lib, inflater, _ = deflate._checked_libdeflate(_ZlibWrapped)
    monkeypatch.setattr(deflate, "_libdeflate", lib)
    monkeypatch.setattr(deflate, "whole_inflater", inflater)
    a = surface(120, seed=5)
    for name, number in [("balanced", 6), ("smallest", 9)]:  # the named levels become zlib's
        named = save_npz(tmp_path / f"{name}.npz", {"height_map": a}, level=name)
        plain = save_npz(tmp_path / f"{number}.npz", {"height_map": a}, level=number)
        assert raw_member_data(named, "height_map.npy") == raw_member_data(plain, "height_map.npy")
        assert np.load(named)["height_map"].tobytes() == a.tobytes()
    np.savez_compressed(tmp_path / "n.npz", height_map=a)  # one stream, inflated piece by piece now
    assert same(read_npz(tmp_path / "n.npz")["height_map"], a)


def test_a_deflate_release_failing_the_checks_is_named_in_a_warning_at_import(tmp_path):
    require(deflate._package is not None, "deflate (libdeflate) is not installed")
    script = textwrap.dedent(
        f"""
        import zlib, deflate
        deflate.deflate_compress = lambda data, level=-1: zlib.compress(bytes(data))
        import numpy as np, tmd_nb
        from tmd_nb.formats import deflate as ours
        assert ours._libdeflate is None and ours.whole_inflater is None
        a = np.arange(5000.0).reshape(50, 100)
        path = tmd_nb.export_to_npz({{"height_map": a}}, {str(tmp_path / "w.npz")!r}, level="smallest")
        assert (np.load(path)["height_map"] == a).all()
        """
    )
    done = subprocess.run([sys.executable, "-W", "always", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        f"RuntimeWarning: tmd_nb does not use the installed deflate package {deflate._package.__version__} "
        "(libdeflate) as it is: "
        "its deflate_compress at level 2 fails the known vector"
    ) in done.stderr.replace("\n", " ")
