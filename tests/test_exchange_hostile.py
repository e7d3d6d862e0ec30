"""Hostile X3P and Gwyddion files, and files tmd_nb's own writers must not make unreadable.

The memory bound of SECURITY.md (the returned arrays + 256 MB + 50 x the file size) is tested
as for NPY/NPZ/TMD: each crafted file is loaded in a subprocess whose address space is capped
(tests/memory_probe.py). The other tests use files of a few KB and count work, not time.
"""

from __future__ import annotations

import math
import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import hostile_files as hostile
import numpy as np
import pytest
from helpers import memory_probe
from hostile_files import gwy_channel, gwy_component, gwy_object

from tmd_nb import FormatError, export_to_gwy, export_to_x3p, load_gwy, load_x3p
from tmd_nb import load as tmd_nb_load
from tmd_nb.errors import MAX_MESSAGE
from tmd_nb.formats import gwy, x3p
from tmd_nb.storage import embedded

HERE = Path(__file__).resolve().parent
MB = 1 << 20


def one_line_naming(exc: BaseException, path: Path) -> str:
    text = str(exc)
    assert text.startswith(repr(str(path))), text
    assert len(text) <= MAX_MESSAGE and "\n" not in text, text
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)  # no chain shown
    return text


def refused(load, path) -> FormatError:
    with pytest.raises(FormatError) as info:
        load(path)
    return info.value


def hm() -> np.ndarray:
    return np.arange(6, dtype="<f8").reshape(2, 3)


# --------------------------------------------------------------------------- memory, in a capped process


@pytest.mark.slow
@pytest.mark.parametrize(
    ("maker", "outcome", "message", "returned"),
    [
        ("x3p_shared_stream", "FormatError", "x0.npy' and 'pypi\\\\org\\\\project\\\\tmd-nb\\\\x1.npy' overlap", 0),
        ("x3p_unreferenced", "ok", "", 0),
        ("x3p_data_list", "FormatError", "bytes, more than the 33,554,432 allowed", 0),
        ("x3p_data_list_near", "ok", "", 0),
        ("x3p_zeros", "ok", "", 64 * MB),
        ("x3p_attributes", "FormatError", "its main.xml holds about 2,700,", 0),
        ("x3p_many_ids", "ok", "", 0),
        ("gwy_object_array", "ok", "", 0),
        ("gwy_nested", "ok", "", 0),
    ],
)
def test_memory_stays_within_the_returned_arrays_plus_256_mb_plus_50_times_the_file(
    tmp_path: Path, maker: str, outcome: str, message: str, returned: int
) -> None:
    path = hostile.MAKERS[maker](tmp_path)
    result = memory_probe(path, returned)
    assert result["outcome"] == outcome, result
    if outcome == "FormatError":
        assert message in result["message"] and path.name in result["message"], result
        assert len(result["message"]) <= MAX_MESSAGE and not result["context"], result


# --------------------------------------------------------------------------- X3P: zip tricks


def test_zip_entries_sharing_one_stream_are_refused_before_inflating(tmp_path: Path) -> None:
    path = hostile.x3p_shared_stream(tmp_path, copies=3, mib=1)
    assert path.stat().st_size < 10_000
    exc = refused(load_x3p, path)
    member = "pypi\\\\org\\\\project\\\\tmd-nb\\\\"
    assert one_line_naming(exc, path) == f"{str(path)!r}: zip members '{member}x0.npy' and '{member}x1.npy' overlap"


def test_an_entry_running_into_the_central_directory_is_refused(tmp_path: Path) -> None:
    members = hostile.x3p_members()
    stored = [(name, data, 0, 0, len(data)) for name, data in members.items()]
    path = hostile.raw_zip(tmp_path / "long.x3p", stored, {})
    raw = bytearray(path.read_bytes())
    last = raw.rfind(b"PK\x01\x02")  # the last entry claims 100 more stored bytes, into the directory
    name, *_, size = stored[-1]
    raw[last + 20 : last + 28] = struct.pack("<II", size + 100, size + 100)
    path.write_bytes(bytes(raw))
    exc = refused(load_x3p, path)
    assert one_line_naming(exc, path).endswith(f"member {name!r} runs into the zip's central directory")


def test_only_the_record_members_in_use_are_inflated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from x3pio.codec.archive import PackedMember

    read = PackedMember.read
    inflated: list[str] = []

    def spy(self: PackedMember) -> bytes:
        inflated.append(self._name)
        return read(self)

    monkeypatch.setattr(PackedMember, "read", spy)
    path = hostile.x3p_unreferenced(tmp_path, count=2, mib=1)
    with pytest.warns(UserWarning, match="heights changed after tmd_nb wrote it"):
        load_x3p(path)
    assert inflated == [hostile.VENDOR_MEMBER + "record.json"]
    # a file tmd_nb wrote: the arrays its metadata refers to are inflated, each once (x3pio's
    # members for other files, zipfile's for the files tmd_nb reads the heights of itself)
    inflated.clear()
    zip_read = zipfile.ZipFile.read

    def zip_spy(self: zipfile.ZipFile, name: Any, pwd: Any = None) -> bytes:
        inflated.append(name if isinstance(name, str) else name.filename)
        return zip_read(self, name, pwd)

    monkeypatch.setattr(zipfile.ZipFile, "read", zip_spy)
    data = {"height_map": hm(), "a": np.ones(3), "b": {"c": np.zeros(2)}, "d": "text"}
    back = load_x3p(export_to_x3p(data, tmp_path / "mine.x3p"))
    vendor = [name for name in inflated if name.startswith(hostile.VENDOR_MEMBER)]
    assert sorted(vendor) == sorted(hostile.VENDOR_MEMBER + n for n in ("record.json", "a.npy", "__array_0__.npy"))
    np.testing.assert_array_equal(back["b"]["c"], np.zeros(2))


def test_a_vendor_file_named_by_many_ids_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # x3pio reads a vendor file's stored bytes for every ID naming it: K IDs x the file's size
    # is quadratic work in a file of K IDs and one large member.
    from x3pio.codec import archive

    init = archive.PackedMember.__init__
    held: list[bytes] = []

    def spy(self, name, raw, **kwargs):
        held.append(raw)
        init(self, name, raw, **kwargs)

    monkeypatch.setattr(archive.PackedMember, "__init__", spy)
    members = hostile.with_vendor_ids(hostile.x3p_members(), ["record.json"] + ["x.npy"] * 200)
    members[hostile.VENDOR_MEMBER + "record.json"] = hostile.STALE_RECORD
    members[hostile.VENDOR_MEMBER + "x.npy"] = bytes(range(256)) * 1024
    path = hostile.raw_zip(tmp_path / "ids.x3p", hostile._stored(members), {})
    with pytest.warns(UserWarning, match="heights changed after tmd_nb wrote it"):
        load_x3p(path)
    copies = {id(raw): len(raw) for raw in held}
    assert len(held) == 201 and sum(copies.values()) <= path.stat().st_size


def test_a_record_claiming_more_than_the_limit_is_refused_before_inflating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = export_to_x3p({"height_map": hm(), "k": "v" * 100}, tmp_path / "r.x3p")
    monkeypatch.setattr(embedded, "MAX_RECORD", 100)
    exc = refused(load_x3p, path)
    assert re.search(
        r"': its tmd_nb record claims \d{3} bytes, more than the 100 allowed$", one_line_naming(exc, Path(path))
    )


# --------------------------------------------------------------------------- X3P: XML tricks


def x3p_with_main(tmp_path: Path, name: str, main: bytes) -> Path:
    members = hostile.x3p_members()
    members["main.xml"] = main
    return hostile.write_zip(tmp_path / name, members)


def test_a_long_data_list_is_refused_by_its_elements_before_parsing(tmp_path: Path) -> None:
    path = hostile.x3p_data_list(tmp_path, 600_000, b"<Datum/>")
    assert path.stat().st_size < 20_000
    exc = refused(load_x3p, path)
    assert one_line_naming(exc, path) == (
        f"{str(path)!r}: its main.xml holds about 600,043 elements and attributes, more than the 500,000 read "
        "(a long DataList: such data belong in a binary data file)"
    )


@pytest.mark.parametrize("encoding", ["x" * 10_000, "no-such-codec", "utf-8\x00", "é"])
def test_an_unknown_xml_encoding_is_one_line_naming_the_file(tmp_path: Path, encoding: str) -> None:
    main = hostile.x3p_members()["main.xml"].replace(b'encoding="UTF-8"', f'encoding="{encoding}"'.encode(), 1)
    path = x3p_with_main(tmp_path, "enc.x3p", main)
    exc = refused(load_x3p, path)
    text = one_line_naming(exc, path)
    assert text.endswith("which is not known"), text
    assert "its main.xml declares the encoding" in text


@pytest.mark.parametrize(
    "prolog",
    [
        b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>',  # entity expansion
        b'<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]>',  # an external entity
    ],
)
def test_dtds_and_entities_are_refused(tmp_path: Path, prolog: bytes) -> None:
    main = hostile.x3p_members()["main.xml"]
    declaration, body = main.split(b"?>", 1)
    path = x3p_with_main(tmp_path, "dtd.x3p", declaration + b"?>" + prolog + body)
    exc = refused(load_x3p, path)
    assert "main.xml is not valid XML" in one_line_naming(exc, path)
    assert exc.__context__ is None  # raised after x3pio's error was handled: nothing kept alive


def test_an_external_dtd_is_not_fetched(tmp_path: Path) -> None:
    main = hostile.x3p_members()["main.xml"]
    declaration, body = main.split(b"?>", 1)
    prolog = b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/x.dtd">'  # nothing listens there: a fetch would fail
    path = x3p_with_main(tmp_path, "dtd.x3p", declaration + b"?>" + prolog + body)
    with pytest.warns(UserWarning, match="MD5 checksum of main.xml does not match"):
        assert load_x3p(path)["height_map"].shape == (2, 3)


def test_deep_xml_nesting_is_a_format_error(tmp_path: Path) -> None:
    main = hostile.x3p_members()["main.xml"]
    deep = b"<a>" * 100_000 + b"</a>" * 100_000
    path = x3p_with_main(tmp_path, "deep.x3p", main.replace(b"</Record1>", deep + b"</Record1>", 1))
    try:
        load_x3p(path)  # expat does not recurse: unknown elements are ignored
    except FormatError as exc:
        one_line_naming(exc, path)


# --------------------------------------------------------------------------- GWY


@pytest.mark.parametrize("key", ["/٣/data", "/²/data", "/00/data", "/+1/data", "/ 1/data", "/1_0/data", "/１/data"])
def test_channel_keys_that_are_not_plain_numbers_are_not_channels(tmp_path: Path, key: str) -> None:
    channel = gwy_channel()
    path = tmp_path / "keys.gwy"
    path.write_bytes(b"GWYP" + gwy_object(b"GwyContainer", channel.replace(b"/0/data", key.encode(), 1)))
    exc = refused(load_gwy, path)
    assert one_line_naming(exc, path) == f"{str(path)!r} holds no image channel (/N/data)"
    path.write_bytes(b"GWYP" + gwy_object(b"GwyContainer", channel.replace(b"/0/data", key.encode(), 1), channel))
    assert load_gwy(path)["height_map"].shape == (2, 2)


def object_array(count: int) -> bytes:
    empty = gwy_object(b"GwyContainer")
    return gwy_object(
        b"GwyContainer", gwy_channel(), gwy_component("/1/o", b"O", struct.pack("<I", count) + empty * count)
    )


def test_an_entry_a_load_does_not_need_is_checked_but_not_built(tmp_path: Path, monkeypatch) -> None:
    # gwyfile copied the rest of an object array for each object (quadratic); tmd_nb's reader
    # checks every entry's structure and builds only the channel's.
    path = tmp_path / "objects.gwy"
    path.write_bytes(b"GWYP" + object_array(3000))
    built: list[str] = []
    value = gwy._Walk.value

    def counting(self, pos):
        name, found, end = value(self, pos)
        built.append(name)
        return name, found, end

    monkeypatch.setattr(gwy._Walk, "value", counting)
    assert load_gwy(path)["height_map"].shape == (2, 2)
    assert "/1/o" not in built and "/0/data" in built
    path.write_bytes(b"GWYP" + object_array(3000)[:-1])
    assert one_line_naming(refused(load_gwy, path), path)


# --------------------------------------------------------------------------- what tmd_nb writes, it loads


@pytest.mark.parametrize("save, load", [(export_to_gwy, load_gwy), (export_to_x3p, load_x3p)])
def test_a_long_key_and_many_keys_come_back(tmp_path: Path, save, load) -> None:
    data = {"height_map": hm(), "k" * 4096: 1, "é" * 3000: "v", **{f"k{i}": i for i in range(10_000)}}
    back = load(save(data, tmp_path / "keys"))
    assert back == {**data, "height_map": back["height_map"]}
    np.testing.assert_array_equal(back["height_map"], data["height_map"])


def test_gwyddion_shows_at_most_256_short_keys(tmp_path: Path) -> None:
    import gwyfile

    data = {"height_map": hm(), "k" * 4096: 1, **{f"k{i}": i for i in range(1000)}}
    meta = gwyfile.load(export_to_gwy(data, tmp_path / "m.gwy"))["/0/meta"]
    assert list(meta) == [f"k{i}" for i in range(gwy.MAX_META_KEYS)]


def unchanged_after_refusal(tmp_path: Path, save, data: dict) -> Exception:
    """Save ``data`` over an existing file: the refusal must come before anything is written."""
    target = tmp_path / "old"
    target.write_bytes(b"the user's file")
    with pytest.raises((ValueError, TypeError)) as info:
        save(data, target)
    assert target.read_bytes() == b"the user's file" and sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    fmt = gwy.FORMAT if save is export_to_gwy else x3p.FORMAT
    with pytest.raises(type(info.value)) as again:  # check(), which the magics and convert use, agrees
        fmt.check(data)
    assert str(again.value) == str(info.value)
    return info.value


@pytest.mark.parametrize("save", [export_to_gwy, export_to_x3p])
def test_a_record_larger_than_the_reader_takes_is_refused_naming_the_key(tmp_path: Path, save) -> None:
    exc = unchanged_after_refusal(tmp_path, save, {"height_map": hm(), "small": 1, "t": "a" * (65 << 20)})
    fmt = "a Gwyddion file" if save is export_to_gwy else "an X3P file"
    assert str(exc) == (
        "metadata key 't' is too large: the metadata take about 68,157,717 bytes as JSON text, more than "
        f"the 67,108,864 the tmd_nb record in {fmt} may hold; store large values (long text, big lists) "
        "as numpy arrays"
    )
    # just under the limit, with the longest Record2 comment: written and read back whole
    text = "a" * (embedded.MAX_RECORD - 256 - 100_100)
    data = {"height_map": hm(), "t": text, "comment": text[:100_000]}
    back = (load_gwy if save is export_to_gwy else load_x3p)(save(data, tmp_path / "near"))
    assert back["t"] == text and back["comment"] == data["comment"]


def test_more_arrays_than_an_x3p_file_holds_are_refused_naming_one(tmp_path: Path) -> None:
    arrays = {f"a{i}": np.zeros(1) for i in range(x3p.MAX_ARRAYS + 1)}
    exc = unchanged_after_refusal(tmp_path, export_to_x3p, {"height_map": hm(), **arrays})
    assert str(exc) == (
        f"metadata array 'a{x3p.MAX_ARRAYS}' is one of 9,985 arrays; an X3P file holds at most 9,984 "
        "(one member each): gather them into fewer arrays"
    )
    arrays.popitem()  # at the limit: written and read back
    back = load_x3p(export_to_x3p({"height_map": hm(), **arrays}, tmp_path / "many.x3p"))
    assert len(back) == len(arrays) + 1


@pytest.mark.parametrize("save", [export_to_gwy, export_to_x3p])
@pytest.mark.parametrize("key", ["x_length", "y_length", "x_offset", "y_offset"])
def test_lengths_not_finite_in_metres_are_refused(tmp_path: Path, save, key: str) -> None:
    lengths = {"x_length": 1.0, "y_length": 1.0, key: 1e308}  # both lengths: else neither is used
    exc = unchanged_after_refusal(tmp_path, save, {"height_map": hm(), **lengths, "lateral_unit": "km"})
    fmt = "a Gwyddion file" if save is export_to_gwy else "an X3P file"
    assert str(exc) == f"{key} 1e+308 km is not a finite number of metres, which {fmt} cannot hold"


def test_a_long_comment_is_shortened_in_record2_and_kept_whole_in_the_record(tmp_path: Path) -> None:
    import x3pio

    comment = "c" * (x3p.MAX_RECORD2_TEXT + 10)
    path = export_to_x3p({"height_map": hm(), "comment": comment}, tmp_path / "c.x3p")
    assert x3pio.read(path).metadata.comment == comment[: x3p.MAX_RECORD2_TEXT] + "..."
    assert load_x3p(path)["comment"] == comment


# --------------------------------------------------------------------------- hand-made X3P cases


def _main(members: dict[str, bytes], old: bytes, new: bytes) -> dict[str, bytes]:
    return {**members, "main.xml": members["main.xml"].replace(old, new, 1)}


def _patched(members: dict[str, bytes], signature: bytes, offset: int, value: bytes, last: bool = False):
    def make(path: Path) -> Path:
        raw = bytearray(hostile.write_zip(path, members).read_bytes())
        at = raw.rfind(signature) if last else raw.find(signature)
        raw[at + offset : at + offset + len(value)] = value
        path.write_bytes(bytes(raw))
        return path

    return make


def _written(members: dict[str, bytes]):
    return lambda path: hostile.write_zip(path, members)


def _streamed(members: dict[str, bytes]):
    def make(path: Path) -> Path:
        import zipfile

        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:  # sizes in data descriptors
            for name, data in members.items():
                with zf.open(name, "w") as member:
                    member.write(data)
        return path

    return make


def _trailing(members: dict[str, bytes]):
    def make(path: Path) -> Path:
        path.write_bytes(hostile.write_zip(path, members).read_bytes() + b"x" * 80)
        return path

    return make


def _hand_made() -> dict[str, tuple]:
    """name -> (maker, what the load gives: "ok", the end of the FormatError, or None: any FormatError)."""
    base = hostile.x3p_members()
    encoding = b'encoding="UTF-8"'
    return {
        "a second main.xml": (
            # readers differ in which of two members of one name they take: the file is refused
            lambda p: hostile.raw_zip(p, [*hostile._stored(base), *hostile._stored({"main.xml": b"<x/>"})], {}),
            "has duplicate member names ('main.xml')",
        ),
        "main.xml aliased in a folder": (
            lambda p: hostile.raw_zip(p, hostile._stored(base), {"sub/main.xml": "main.xml"}),
            ": zip members 'main.xml' and 'sub/main.xml' overlap",
        ),
        "two folders with main.xml": (
            _written({**{"a/" + k: v for k, v in base.items()}, **{"b/" + k: v for k, v in base.items()}}),
            None,  # no main.xml at the root or in one folder: not X3P (tmd_nb.load reads it as NPZ)
        ),
        "a wrong CRC": (_patched(base, b"PK\x01\x02", 16, b"\0\0\0\0"), "Bad CRC-32 for file 'main.xml'"),
        "a compressed size too small": (
            _patched(base, b"PK\x01\x02", 20, b"\3\0\0\0"),
            "Bad CRC-32 for file 'main.xml'",
        ),
        "an offset beyond the file": (
            _patched(base, b"PK\x01\x02", 42, b"\xff\xff\xff\x7f"),
            "member 'main.xml': no local header where the central directory says it is",
        ),
        "a Zip64 size without its record": (
            _patched(base, b"PK\x01\x02", 24, b"\xff\xff\xff\xff"),
            re.compile(r"member 'main\.xml' claims 4294967295 bytes from \d+ stored bytes$"),  # the date varies
        ),
        "an end record counting 4 billion entries": (_patched(base, b"PK\x05\x06", 8, b"\xff" * 4, True), "ok"),
        "sizes in data descriptors": (_streamed(base), "ok"),
        "trailing bytes": (_trailing(base), "ok"),
        "an empty main.xml": (
            _written({**base, "main.xml": b""}),
            "main.xml is not valid XML: no element found: line 1, column 0",
        ),
        "UTF-16 main.xml": (
            _written({**base, "main.xml": base["main.xml"].decode().replace("UTF-8", "UTF-16").encode("utf-16")}),
            "ok",
        ),
        "a multi-byte encoding": (
            _written(_main(base, encoding, b'encoding="shift_jis"')),
            "main.xml is not valid XML: multi-byte encodings are not supported",
        ),
        "a codec that is not a text encoding": (
            _written(_main(base, encoding, b'encoding="rot13"')),
            "LookupError: 'rot13' is not a text encoding; use codecs.decode() to handle arbitrary codecs",
        ),
        "an XInclude of /etc/passwd": (
            _written(
                _main(
                    base,
                    b"<Record1>",
                    b'<i:include xmlns:i="http://www.w3.org/2001/XInclude" href="/etc/passwd"/><Record1>',
                )
            ),
            "ok",  # ElementTree does not process XInclude
        ),
        "600,000 processing instructions": (
            _written(_main(base, b"<Record1>", b"<?x y?>" * 600_000 + b"<Record1>")),
            "ok",
        ),
        "600,000 comments": (_written(_main(base, b"<Record1>", b"<!--x-->" * 600_000 + b"<Record1>")), "ok"),
        "600,000 attributes": (
            _written(
                _main(base, b"<Record1>", b"<Record1 " + b" ".join(b"a%x='1'" % i for i in range(600_000)) + b">")
            ),
            "its main.xml holds about 600,045 elements and attributes, more than the 500,000 read "
            "(a long DataList: such data belong in a binary data file)",
        ),
        "a 5000-digit SizeX": (
            _written(_main(base, b"<SizeX>3</SizeX>", b"<SizeX>" + b"9" * 5000 + b"</SizeX>")),
            "9999'",
        ),
        "a negative SizeX": (
            _written(_main(base, b"<SizeX>3</SizeX>", b"<SizeX>-3</SizeX>")),
            "SizeX must not be negative: '-3'",
        ),
        "SizeZ 0": (
            _written(_main(base, b"<SizeZ>1</SizeZ>", b"<SizeZ>0</SizeZ>")),
            "holds 48 bytes, but the dimensions and axes need 0",
        ),
        "a NaN increment": (
            _written(_main(base, b"<Increment>1e-06</Increment>", b"<Increment>NaN</Increment>")),
            "CX: Increment is not a finite number: 'NaN'",
        ),
        "an infinite offset": (
            _written(_main(base, b"<Offset>0.0</Offset>", b"<Offset>-inf</Offset>")),
            "CX: Offset is not a finite number: '-inf'",
        ),
    }


HAND_MADE = _hand_made()


@pytest.mark.parametrize("case", list(HAND_MADE))
def test_hand_made_x3p_files(tmp_path: Path, case: str) -> None:
    make, expected = HAND_MADE[case]
    path = make(tmp_path / "hand.x3p")
    for load in (load_x3p, tmd_nb_load):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # checksums that no longer match
            if expected == "ok":
                assert load(path)["height_map"].shape == (2, 3)
            elif isinstance(expected, re.Pattern):
                assert expected.search(one_line_naming(refused(load, path), path))
            else:
                assert one_line_naming(refused(load, path), path).endswith(expected or "")


# --------------------------------------------------------------------------- hand-made Gwyddion cases


def _field(xres: int = 2, yres: int = 2, count: int | None = None, extra: tuple = (), data: bytes | None = None):
    count = xres * yres if count is None else count
    data = data if data is not None else gwy_component("data", b"D", struct.pack("<I", count) + bytes(8 * count))
    xres_yres = (
        gwy_component("xres", b"i", struct.pack("<i", xres)),
        gwy_component("yres", b"i", struct.pack("<i", yres)),
    )
    return gwy_object(b"GwyDataField", *xres_yres, data, *extra)


def _gwy(*components: bytes) -> bytes:
    return b"GWYP" + gwy_object(b"GwyContainer", *components)


def _double(name: str, value: float) -> bytes:
    return gwy_component(name, b"d", struct.pack("<d", value))


_MALFORMED = " is not a well-formed Gwyddion file: "
GWY_CASES = {
    "a NaN xreal": (
        _gwy(gwy_component("/0/data", b"o", _field(extra=(_double("xreal", math.nan),)))),
        ": the data field's xreal is not a finite number (nan)",
    ),
    "an infinite yoff": (
        _gwy(gwy_component("/0/data", b"o", _field(extra=(_double("yoff", -math.inf),)))),
        ": the data field's yoff is not a finite number (-inf)",
    ),
    "xres 0": (_gwy(gwy_component("/0/data", b"o", _field(0, 2, 0))), ": /0/data has no valid xres/yres (0, 2)"),
    "negative sizes": (
        _gwy(gwy_component("/0/data", b"o", _field(-2, -2, 4))),
        ": /0/data has no valid xres/yres (-2, -2)",
    ),
    "xres x yres beyond the data": (
        _gwy(gwy_component("/0/data", b"o", _field(2**31 - 1, 2**31 - 1, 4))),
        ": /0/data holds 4 values, not xres x yres = 2147483647 x 2147483647",
    ),
    "int64 data": (
        _gwy(
            gwy_component("/0/data", b"o", _field(data=gwy_component("data", b"Q", struct.pack("<I", 4) + bytes(32))))
        ),
        ": /0/data holds int64 values as its data, not float64 values",
    ),
    "a data count of 4 billion": (
        _gwy(gwy_component("/0/data", b"o", _field(data=gwy_component("data", b"D", b"\xff" * 4 + bytes(32))))),
        _MALFORMED + "a component runs past the end of its object (at byte 67)",
    ),
    "an object array of 4 billion": (
        _gwy(gwy_channel(), gwy_component("/1/o", b"O", b"\xff" * 4)),
        _MALFORMED + "an array of 4294967295 items in 0 bytes (at byte 109)",
    ),
    "a string array of 4 billion": (
        _gwy(gwy_channel(), gwy_component("/1/s", b"S", b"\xff" * 4 + b"a\0")),
        _MALFORMED + "an array of 4294967295 items in 2 bytes (at byte 109)",
    ),
    "a name without its NUL": (
        _gwy(gwy_channel(), b"x" * 5000),
        _MALFORMED + "a component name runs past the end of its object (at byte 109)",
    ),
    "a 5000-byte name": (
        _gwy(gwy_channel(), gwy_component("k" * 5000, b"i", bytes(4))),
        _MALFORMED + "a component name runs past the end of its object (at byte 109)",
    ),
    "a 5000-byte type name": (
        _gwy(gwy_channel(), gwy_component("/1/o", b"o", gwy_object(b"T" * 5000))),
        _MALFORMED + "an object's type name runs past the end of its object (at byte 115)",
    ),
    "an object larger than its parent": (
        _gwy(gwy_channel(), gwy_component("/1/o", b"o", b"GwyContainer\0" + struct.pack("<I", 10**6))),
        _MALFORMED + "an object declares 1000000 bytes but only 0 remain (at byte 115)",
    ),
    "a mask of another shape": (
        _gwy(gwy_channel(), gwy_component("/0/mask", b"o", _field(3, 1))),
        ": /0/mask has shape (1, 3), the data (2, 2)",
    ),
    "a mask that is a string": (
        _gwy(gwy_channel(), gwy_component("/0/mask", b"s", b"x\0")),
        ": /0/mask is not a GwyDataField",
    ),
    "a channel number of 10 digits": (
        _gwy(gwy_component("/4294967296/data", b"o", _field())),
        " holds no image channel (/N/data)",
    ),
    "a unit that is not UTF-8": (
        _gwy(
            gwy_component(
                "/0/data",
                b"o",
                _field(
                    extra=(
                        gwy_component(
                            "si_unit_z", b"o", gwy_object(b"GwySIUnit", gwy_component("unitstr", b"s", b"\xff\0"))
                        ),
                    )
                ),
            )
        ),
        " is not a well-formed Gwyddion file: a string is not UTF-8 text (at byte 143)",
    ),
    "a record that is not a string": (
        _gwy(gwy_channel(), gwy_component("/tmd_nb/record.json", b"i", bytes(4))),
        ": its tmd_nb entry 'record.json' is not a string",
    ),
    "a record member that is not base64": (
        _gwy(
            gwy_channel(),
            gwy_component("/tmd_nb/record.json", b"s", b"{}\0"),
            gwy_component("/tmd_nb/a", b"s", b"!!!\0"),
        ),
        ": its tmd_nb entry 'a' is not valid base64",
    ),
    "a char array": (
        _gwy(gwy_channel(), gwy_component("/1/c", b"C", struct.pack("<I", 3) + b"abc")),
        "ok",  # well formed; gwyfile could not read it, tmd_nb reads only what it needs
    ),
    "an empty container": (_gwy(), " holds no image channel (/N/data)"),
    "only channel 7": (_gwy(gwy_component("/7/data", b"o", _field())), "ok"),
    "an int xreal and a string unit": (
        _gwy(
            gwy_component(
                "/0/data",
                b"o",
                _field(
                    extra=(
                        gwy_component("xreal", b"i", struct.pack("<i", 5)),
                        gwy_component("si_unit_xy", b"s", b"m\0"),
                    )
                ),
            )
        ),
        "ok",
    ),
    "metadata that is a unit": (
        _gwy(
            gwy_channel(),
            gwy_component("/0/meta", b"o", gwy_object(b"GwySIUnit", gwy_component("unitstr", b"s", b"m\0"))),
        ),
        "ok",
    ),
}


@pytest.mark.parametrize("case", list(GWY_CASES))
def test_hand_made_gwyddion_files(tmp_path: Path, case: str) -> None:
    content, expected = GWY_CASES[case]
    path = tmp_path / "hand.gwy"
    path.write_bytes(content)
    for load in (load_gwy, tmd_nb_load):
        if expected == "ok":
            assert load(path)["height_map"].shape == (2, 2)
        else:
            assert one_line_naming(refused(load, path), path) == repr(str(path)) + expected
