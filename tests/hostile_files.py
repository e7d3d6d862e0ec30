"""Crafted hostile files, shared by the hostile-input tests and their memory-capped subprocess.

Each maker writes one file into a folder and returns its path. They use the standard library's
``zipfile``, numpy's own NPY writer, x3pio and hand-written bytes, never tmd_nb's writer, so the
files are what an attacker could send: metadata tmd_nb would never write, lengths that lie,
members that inflate hugely, zip entries sharing one stream, structures that cost quadratic work.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
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


# --------------------------------------------------------------------------- X3P

VENDOR = "https://pypi.org/project/tmd-nb"
#: The zip member of a tmd_nb vendor file (x3pio's mapping of the URI to a path, with backslashes).
VENDOR_MEMBER = "pypi\\org\\project\\tmd-nb\\"
STALE_RECORD = json.dumps(
    {"tmd_nb": 1, "height": {"dtype": "<f8", "factor": 1.0, "exact": None}, "fingerprint": "0", "metadata": {}}
).encode()


def x3p_members(storage: str = "binary", shape: tuple[int, int] = (2, 3)) -> dict[str, bytes]:
    """The members of a small X3P surface that x3pio writes (no tmd_nb record)."""
    import x3pio
    from x3pio.model.storage import DataStorage

    file = x3pio.Surface.from_array(np.zeros(shape), x_scale=1e-6, y_scale=1e-6)
    blob = file.dumps(storage=DataStorage.XML if storage == "xml" else DataStorage.BINARY)
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def with_vendor_ids(members: dict[str, bytes], names: list[str]) -> dict[str, bytes]:
    """``members`` with ``main.xml`` registering tmd_nb vendor files ``names`` (its checksum updated)."""
    ids = "".join(f"<VendorSpecificID>{VENDOR}/{n}</VendorSpecificID>" for n in names).encode()
    main = re.sub(rb"(</[\w:]*ISO5436_2>\s*)$", ids + rb"\1", members["main.xml"])
    return {**members, "main.xml": main, "md5checksum.hex": hashlib.md5(main).hexdigest().encode() + b" *main.xml\n"}


def zeros_stream(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``size`` zero bytes, and its CRC-32."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk, parts, crc = bytes(1 << 20), [], 0
    for _ in range(size >> 20):
        parts.append(compressor.compress(chunk))
        crc = zlib.crc32(chunk, crc)
    parts.append(compressor.flush())
    return b"".join(parts), crc


def raw_zip(path: Path, stored: list[tuple[str, bytes, int, int, int]], aliases: dict[str, str]) -> Path:
    """A zip written byte by byte: ``stored`` = (name, raw, method, crc, size) entries, and central
    directory ``aliases`` {name: name of a stored entry}, which point at that entry's local header."""
    out, central, offsets = bytearray(), [], {}

    def entry(name: str, raw: bytes, method: int, crc: int, size: int, offset: int) -> bytes:
        fields = (20, 20, 0, method, 0, 0x21, crc, len(raw), size, len(name.encode()), 0, 0, 0, 0, 0, offset)
        return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", *fields) + name.encode()

    for name, raw, method, crc, size in stored:
        offsets[name] = (len(out), raw, method, crc, size)
        fields = (20, 0, method, 0, 0x21, crc, len(raw), size, len(name.encode()), 0)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", *fields) + name.encode() + raw
        central.append(entry(name, raw, method, crc, size, offsets[name][0]))
    for alias, target in aliases.items():
        offset, raw, method, crc, size = offsets[target]
        central.append(entry(alias, raw, method, crc, size, offset))
    start = len(out)
    out += b"".join(central)
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(out) - start, start, 0)
    path.write_bytes(bytes(out))
    return path


def _stored(members: dict[str, bytes]) -> list[tuple[str, bytes, int, int, int]]:
    return [(name, data, 0, zlib.crc32(data), len(data)) for name, data in members.items()]


def x3p_shared_stream(folder: Path, copies: int = 8, mib: int = 256) -> Path:
    """Eight tmd_nb vendor files whose central directory entries share one stream of ``mib`` MiB
    of zeros: a 0.26 MB file that inflates to 2 GiB if every entry is read."""
    names = [f"x{i}.npy" for i in range(copies)]
    members = with_vendor_ids(x3p_members(), ["record.json", *names])
    members[VENDOR_MEMBER + "record.json"] = STALE_RECORD
    raw, crc = zeros_stream(mib << 20)
    stored = [*_stored(members), (VENDOR_MEMBER + names[0], raw, 8, crc, mib << 20)]
    return raw_zip(folder / "shared.x3p", stored, {VENDOR_MEMBER + n: VENDOR_MEMBER + names[0] for n in names[1:]})


def x3p_unreferenced(folder: Path, count: int = 2, mib: int = 200) -> Path:
    """tmd_nb vendor files, registered in main.xml but referred to by no record: ``mib`` MiB of
    zeros each, in streams of their own."""
    names = [f"x{i}.npy" for i in range(count)]
    members = with_vendor_ids(x3p_members(), ["record.json", *names])
    members[VENDOR_MEMBER + "record.json"] = STALE_RECORD
    raw, crc = zeros_stream(mib << 20)
    stored = _stored(members) + [(VENDOR_MEMBER + n, raw, 8, crc, mib << 20) for n in names]
    return raw_zip(folder / "unreferenced.x3p", stored, {})


def x3p_data_list(folder: Path, points: int = 4_000_000, datum: bytes = b"<Datum>0</Datum>") -> Path:
    """A surface of ``points`` points in a DataList: 64 MB of XML in a file of about 100 KB."""
    members = x3p_members("xml", (1, 1))
    main = members["main.xml"]
    main = re.sub(rb"<SizeX>\d+</SizeX>", b"<SizeX>%d</SizeX>" % points, main)
    main = re.sub(
        rb"<DataList>.*</DataList>",
        b"<DataList>" + datum * points + b"</DataList>",
        main,
        flags=re.S,
    )
    members["main.xml"] = main
    members["md5checksum.hex"] = hashlib.md5(main).hexdigest().encode() + b" *main.xml\n"
    return write_zip(folder / "datalist.x3p", members)


def x3p_zeros(folder: Path, shape: tuple[int, int] = (4096, 2048)) -> Path:
    """An honest surface of 64 MiB of float64 zeros, as x3pio writes it: about 65 KB."""
    import x3pio

    path = folder / "zeros.x3p"
    x3pio.Surface.from_array(np.zeros(shape), x_scale=1e-6, y_scale=1e-6).save(path)
    return path


def x3p_many_ids(folder: Path, ids: int = 400_000, mib: int = 8) -> Path:
    """One vendor file of ``mib`` MiB named by ``ids`` VendorSpecificIDs: x3pio reads the stored
    bytes once per ID, terabytes for a file of 9 MB."""
    members = with_vendor_ids(x3p_members(), ["record.json"] + ["x.npy"] * ids)
    members[VENDOR_MEMBER + "record.json"] = STALE_RECORD
    members[VENDOR_MEMBER + "x.npy"] = np.random.default_rng(5).bytes(mib << 20)
    return write_zip(folder / "ids.x3p", members)


def x3p_attributes(folder: Path, count: int = 2_700_000) -> Path:
    """``count`` attributes on one element: 31 MiB of main.xml (within its size limit), half a
    gigabyte as an element tree, in a file of 6 MB."""
    members = x3p_members()
    attributes = b" ".join(b"a%x='1'" % i for i in range(count))
    members["main.xml"] = members["main.xml"].replace(b"<Record1>", b"<Record1 " + attributes + b">", 1)
    return write_zip(folder / "attributes.x3p", members)


# --------------------------------------------------------------------------- Gwyddion


def gwy_component(name: str, code: bytes, body: bytes) -> bytes:
    return name.encode() + b"\0" + code + body


def gwy_object(type_name: bytes, *components: bytes) -> bytes:
    body = b"".join(components)
    return type_name + b"\0" + struct.pack("<I", len(body)) + body


def gwy_channel(shape: tuple[int, int] = (2, 2)) -> bytes:
    """A minimal ``/0/data`` entry: a GwyDataField of zeros."""
    rows, cols = shape
    field = gwy_object(
        b"GwyDataField",
        gwy_component("xres", b"i", struct.pack("<i", cols)),
        gwy_component("yres", b"i", struct.pack("<i", rows)),
        gwy_component("data", b"D", struct.pack("<I", rows * cols) + bytes(8 * rows * cols)),
    )
    return gwy_component("/0/data", b"o", field)


def gwy_object_array(folder: Path, count: int = 250_000) -> Path:
    """A channel and an array of ``count`` empty objects (17 bytes each, about 4 MB): gwyfile copies
    the rest of the array for each object, quadratic work (hours for 10 MB)."""
    empty = gwy_object(b"GwyContainer")
    array = gwy_component("/1/junk", b"O", struct.pack("<I", count) + empty * count)
    path = folder / "objects.gwy"
    path.write_bytes(b"GWYP" + gwy_object(b"GwyContainer", gwy_channel(), array))
    return path


def gwy_nested(folder: Path, levels: int = 31, mib: int = 8) -> Path:
    """A channel and objects nested ``levels`` deep around ``mib`` MiB of doubles: gwyfile keeps
    copies of each level's rest while it parses the next."""
    inner = gwy_object(b"GwyContainer", gwy_component("d", b"D", struct.pack("<I", mib << 17) + bytes(mib << 20)))
    for _ in range(levels - 1):
        inner = gwy_object(b"GwyContainer", gwy_component("x", b"o", inner))
    path = folder / "nested.gwy"
    path.write_bytes(b"GWYP" + gwy_object(b"GwyContainer", gwy_channel(), gwy_component("/9/junk", b"o", inner)))
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
    "x3p_shared_stream": x3p_shared_stream,
    "x3p_unreferenced": x3p_unreferenced,
    "x3p_data_list": x3p_data_list,
    # Just within the limits: the most elements and nearly the most text main.xml may hold.
    "x3p_data_list_near": lambda folder: x3p_data_list(folder, 499_000, b"<Datum>1.2345678901234567e-06</Datum>\n"),
    "x3p_zeros": x3p_zeros,
    "x3p_attributes": x3p_attributes,
    "x3p_many_ids": x3p_many_ids,
    "gwy_object_array": gwy_object_array,
    "gwy_nested": gwy_nested,
}
