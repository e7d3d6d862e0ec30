"""Arrays, archives and checks shared by the NPY, NPZ and deflate tests."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from tmd_nb.errors import FormatError
from tmd_nb.storage import archive as npz
from tmd_nb.storage.archive import read_npz, write_npz

DTYPES = [
    "?",
    "i1",
    "u1",
    "<i2",
    ">u2",
    "<i4",
    ">i4",
    "<u8",
    "<f2",
    "<f4",
    ">f4",
    "<f8",
    ">f8",
    "<c8",
    ">c16",
    "<U7",
    "S5",
    "<M8[s]",
    ">m8[ms]",
]


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
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    )


def save_npz(path: Path, members, **kw) -> Path:
    with open(path, "wb") as fp:
        write_npz(fp, members, **kw)
    return path


def unzip_ok(path: Path) -> None:
    """Info-ZIP's own integrity test (skipped where ``unzip`` is missing; a failure in CI, which installs it)."""
    require(shutil.which("unzip") is not None, "Info-ZIP's unzip is not installed (apt-get install unzip)")
    result = subprocess.run(["unzip", "-tq", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def raw_member_data(path: Path, name: str) -> bytes:
    info = zipfile.ZipFile(path).getinfo(name)
    data = path.read_bytes()
    nlen, xlen = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + nlen + xlen
    return data[start : start + info.compress_size]


def check_progress(calls: list[tuple[int, int]], total: int) -> None:
    assert calls, "progress was never called"
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == total and done[0] >= 0


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
        local = dict(
            sig=0x04034B50,
            flags=over.get("flags", 0),
            method=over.get("method", method),
            crc=crc,
            csize=over.get("local_csize", csize),
            usize=over.get("local_usize", usize),
            name=over.get("local_name", raw),
        )
        out += (
            struct.pack(
                "<IHHHHHIIIHH",
                local["sig"],
                20,
                local["flags"],
                local["method"],
                0,
                0x21,
                local["crc"],
                local["csize"],
                local["usize"],
                len(local["name"]),
                0,
            )
            + local["name"]
            + data
        )
        central += (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                20,
                20,
                over.get("flags", 0),
                over.get("method", method),
                0,
                0x21,
                crc,
                over.get("csize", csize),
                usize,
                len(raw),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + raw
        )
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), len(out), 0)
    return bytes(out + central + eocd + trailing)


def refused(tmp_path: Path, data: bytes, match: str = "", name: str = "h.npz") -> FormatError:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(FormatError, match=match or None) as info:
        read_npz(path)
    assert repr(str(path)) in str(info.value)  # the message names the file
    return info.value


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


def index_of(data: bytes) -> tuple[int, list[int]]:
    """Position and values of tmd_nb's chunk index extra field (first member); ValueError if none."""
    extra = zipfile.ZipFile(io.BytesIO(data)).infolist()[0].extra
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        if tag == npz._INDEX_EXTRA:
            at = data.rindex(extra) + pos + 4
            return at, list(struct.unpack_from(f"<{size // 8}Q", data, at))
        pos += 4 + size
    raise ValueError("no chunk index")
