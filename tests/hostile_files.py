"""Crafted hostile files, shared by the hostile-input tests and their memory-capped subprocess.

Each maker writes one file into a folder and returns its path. They use the standard library's
``zipfile`` and numpy's own NPY writer, never tmd_nb's writer, so the files are what an attacker
could send: metadata tmd_nb would never write, lengths that lie, members that inflate hugely.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

TAG = "__tmd_type__"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def npz_with_metadata(path: Path, text: str | bytes, version: bool = True) -> Path:
    """An NPZ with a small height map and ``text`` as its metadata member (``<U``, or ``S`` for bytes)."""
    members = {"height_map.npy": npy_bytes(np.zeros((2, 2))), "metadata.npy": npy_bytes(np.array(text))}
    if version:
        members["__tmd_nb_format__.npy"] = npy_bytes(np.array(1, dtype=np.int64))
    return write_zip(path, members)


def nested_error_text(levels: int = 200, key_length: int = 2000) -> str:
    """Tagged objects nested ``levels`` deep under long keys, with an unknown tag at the bottom.

    Built as text, not with ``json.dumps``, whose own recursion would stop at about 500 levels.
    """
    opening = "".join(
        f'{{"{TAG}": "dict", "items": {{{json.dumps(str(i).ljust(key_length, "k"))}: '
        for i in reversed(range(levels - 1))
    )
    return '{"a": ' + opening + json.dumps({TAG: "no such tag"}) + "}}" * (levels - 1) + "}"


def nested_error(folder: Path, levels: int = 200) -> Path:
    return npz_with_metadata(folder / "nested.npz", nested_error_text(levels))


def json_bomb(folder: Path, count: int = 5_000_000) -> Path:
    """``{"x": [{}, {}, ...]}``: a small file whose metadata inflates to tens of megabytes of JSON."""
    return npz_with_metadata(folder / "bomb.npz", '{"x": [' + "{}, " * count + "{}]}")


def json_bomb_bytes(folder: Path, count: int = 5_000_000) -> Path:
    """The same as UTF-8 (an ``S`` member): under the size limit for fewer values, over the value limit."""
    return npz_with_metadata(folder / "bomb_s.npz", ('{"x": [' + "{}," * count + "{}]}").encode())


def many_tagged(folder: Path) -> Path:
    """As many tagged numpy scalars as fit under the limits: the costliest metadata that loads."""
    one = {TAG: "numpy.scalar", "dtype": "<f8", "base64": "AAAAAAAA8D8="}
    n = 160_000
    return npz_with_metadata(folder / "tagged.npz", json.dumps({"x": [one] * n}).encode())


def wide_string(folder: Path) -> Path:
    """One string of nearly 16 MiB of UTF-8, mostly ASCII with one emoji (4 bytes a character in memory)."""
    text = json.dumps({"x": "\U0001f600" + "a" * (16_000_000)}, ensure_ascii=False)
    return npz_with_metadata(folder / "wide.npz", text.encode())


def escaped_quotes(folder: Path) -> Path:
    """An unterminated string of escaped quotes: a string scanner that restarts at every quote is quadratic."""
    return npz_with_metadata(folder / "quotes.npz", ('{"x": "' + '\\"' * 8_000_000).encode())


def npy_long_header(folder: Path) -> Path:
    """A 114-byte NPY file whose version-2 header claims 4 GiB."""
    path = folder / "long_header.npy"
    path.write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{" * 102)
    return path


def npz_long_header(folder: Path) -> Path:
    data = b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{" * 102
    return write_zip(folder / "long_header.npz", {"height_map.npy": data})


def zero_itemsize(folder: Path, descr: str = "|S0") -> Path:
    """A member of zero-size items and a huge shape: no data needed, 9 GiB if numpy allocates it."""
    name = "zero_" + descr.strip("|<>") + ".npz"
    return write_zip(
        folder / name,
        {
            "height_map.npy": npy_bytes(np.zeros((2, 2))),
            "x.npy": npy_header(descr, (3_000_000_000, 3)),
        },
    )


def zip_bomb_array(folder: Path) -> Path:
    """An honest array member of 64 MiB of zeros: the arrays a load returns are not bounded."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((4096, 2048), np.float64))
    return write_zip(folder / "zeros.npz", {"height_map.npy": buf.getvalue()})


def unread_member(folder: Path, key: str, mib: int = 320) -> Path:
    """A member that would be read only to be refused (the version, or a versioned file's metadata
    as numbers): ``mib`` MiB of zeros, streamed into the archive, about 1 KiB per MiB."""
    path = folder / f"unread_{key.strip('_')}.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("height_map.npy", npy_bytes(np.zeros((2, 2))))
        if key != "__tmd_nb_format__":
            zf.writestr("__tmd_nb_format__.npy", npy_bytes(np.array(1, dtype=np.int64)))
        with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
            member.write(npy_header("<f8", (mib * (1 << 17),)))
            zeros = bytes(1 << 20)
            for _ in range(mib):
                member.write(zeros)
    return path


#: name -> maker, for the memory-capped subprocess.
MAKERS: dict[str, Callable[[Path], Path]] = {
    "nested_error": nested_error,
    "json_bomb": json_bomb,
    "json_bomb_bytes": json_bomb_bytes,
    "many_tagged": many_tagged,
    "escaped_quotes": escaped_quotes,
    "wide_string": wide_string,
    "npy_long_header": npy_long_header,
    "npz_long_header": npz_long_header,
    "zero_S0": lambda folder: zero_itemsize(folder, "|S0"),
    "zero_U0": lambda folder: zero_itemsize(folder, "<U0"),
    "zeros": zip_bomb_array,
    "unread_metadata": lambda folder: unread_member(folder, "metadata"),
    "unread_version": lambda folder: unread_member(folder, "__tmd_nb_format__"),
}
