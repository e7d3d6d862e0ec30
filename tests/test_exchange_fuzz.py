"""Hostile X3P, Gwyddion and SDF files: every truncation, fuzzed edit, generated Gwyddion structure
and edited X3P ``main.xml`` or record raises one short FormatError naming the file, or loads."""

from __future__ import annotations

import hashlib
import math
import pathlib
import re
import struct
import warnings
import zipfile

import hostile_files as hostile
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tmd_nb import FormatError, export_to_gwy, export_to_sdf, export_to_x3p, load, load_gwy, load_sdf, load_x3p
from tmd_nb.formats import gwy

WRITERS = {"x3p": export_to_x3p, "gwy": export_to_gwy, "sdf": export_to_sdf}
LOADERS = {"x3p": load_x3p, "gwy": load_gwy, "sdf": load_sdf}


def good(tmp_path: pathlib.Path, kind: str) -> bytes:
    hm = np.arange(12, dtype="<f8").reshape(3, 4) / 7
    hm[1, 1] = np.nan
    data = {"height_map": hm, "units": "mm", "t": (1, 2), "mask": np.ones((3, 4), bool)}
    return pathlib.Path(WRITERS[kind](data, tmp_path / f"good.{kind}")).read_bytes()


def loads_or_format_error(path: pathlib.Path, loader) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # checksum mismatches and edited data are warnings by design
        try:
            result = loader(path)
        except FormatError as exc:
            assert str(exc).startswith(f"'{path}'"), str(exc)
            assert len(str(exc)) <= 500 and "\n" not in str(exc), str(exc)
        else:
            assert result["height_map"].ndim == 2


# SDF: a binary file cut in its trailer can still be a valid SDF file (tests/test_sdf.py cuts it).
@pytest.mark.parametrize("kind", ["x3p", "gwy"])
def test_every_truncation_is_a_format_error(tmp_path, kind):
    data = good(tmp_path, kind)
    path = tmp_path / f"cut.{kind}"
    step = max(1, len(data) // 400)
    for n in range(0, len(data), step):
        path.write_bytes(data[:n])
        with pytest.raises(FormatError, match="cut"):
            LOADERS[kind](path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00" * 100,
        np.random.default_rng(1).bytes(4096),
        b"PK\x03\x04" + np.random.default_rng(2).bytes(200),
        b"GWYP" + np.random.default_rng(3).bytes(300),
        b"bISO-1.0" + np.random.default_rng(4).bytes(300),
        b"aISO-2.0\r\n" + np.random.default_rng(5).bytes(300),
        b"bBCR-1.0" + np.random.default_rng(6).bytes(300),
    ],
)
@pytest.mark.parametrize("kind", ["x3p", "gwy", "sdf"])
def test_random_bytes_are_format_errors(tmp_path, kind, content):
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="junk"):
        LOADERS[kind](path)


# Found by the thorough profile: zipfile's NotImplementedError and a seek before the file's start.
@example(kind="x3p", edits=[(4565, 101)], cut=None, insert=None)
@example(kind="x3p", edits=[(128, 200), (106, 161), (106, 161), (493, 226)], cut=None, insert=(12641, b"\x0e!"))
@given(
    kind=st.sampled_from(["x3p", "gwy", "sdf"]),
    edits=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 100_000),
    insert=st.none() | st.tuples(st.integers(0, 100_000), st.binary(max_size=9)),
)
def test_fuzzed_files_raise_only_format_error(tmp_path, kind, edits, cut, insert):
    data = bytearray(good(tmp_path, kind))
    for pos, value in edits:
        data[pos % len(data)] = value
    if insert is not None:
        pos = insert[0] % (len(data) + 1)
        data[pos:pos] = insert[1]
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    target = tmp_path / "fuzz.bin"
    target.write_bytes(bytes(data))
    loads_or_format_error(target, LOADERS[kind])
    loads_or_format_error(target, load)


# --------------------------------------------------------------------------- generated Gwyddion structures

_NAMES = st.sampled_from(
    [
        *("/0/data", "/1/data", "/0/mask", "/0/meta", "/0/data/title", "xres", "yres", "data", "xreal", "yreal"),
        *("xoff", "yoff", "si_unit_xy", "si_unit_z", "unitstr", "/tmd_nb/record.json", "/tmd_nb/height_map"),
        *("/00/data", "/4294967296/data", "/٣/data", ""),
    ]
)
_ITEM_SIZES = {b"C": 1, b"I": 4, b"Q": 8, b"D": 8}


def _packed(code: bytes, fmt: str, values: list) -> st.SearchStrategy:
    return st.tuples(st.just(code), st.sampled_from(values).map(lambda v: struct.pack(fmt, v)))


def _array(code: bytes, count: int, raw: bytes) -> tuple[bytes, bytes]:
    return code, struct.pack("<I", count) + raw[: count * _ITEM_SIZES[code]]


_TYPES = st.sampled_from([b"GwyContainer", b"GwyDataField", b"GwySIUnit", b"Other", b""])
_SCALARS = st.one_of(
    st.tuples(st.sampled_from([b"b", b"c"]), st.binary(min_size=1, max_size=1)),
    st.tuples(
        st.just(b"i"), st.sampled_from([0, 1, -1, 2, 3, 2**31 - 1, -(2**31)]).map(lambda v: struct.pack("<i", v))
    ),
    st.tuples(st.just(b"q"), st.sampled_from([0, 4, -1, 2**63 - 1]).map(lambda v: struct.pack("<q", v))),
    st.tuples(
        st.just(b"d"),
        st.sampled_from([0.0, 1.0, -0.0, 1e-300, -1e308, math.nan, math.inf]).map(lambda v: struct.pack("<d", v)),
    ),
    st.tuples(st.just(b"s"), st.sampled_from([b"m", b"", b"\xff\xfe", "é".encode()]).map(lambda v: v + b"\0")),
    st.tuples(st.sampled_from([b"C", b"I", b"Q", b"D"]), st.tuples(st.integers(0, 9), st.binary(max_size=80))).map(
        lambda t: (t[0], struct.pack("<I", t[1][0]) + t[1][1][: t[1][0] * {b"C": 1, b"I": 4, b"Q": 8, b"D": 8}[t[0]]])
    ),
    st.tuples(st.just(b"S"), st.lists(st.sampled_from([b"a", b"\xff", b""]), max_size=4)).map(
        lambda t: (b"S", struct.pack("<I", len(t[1])) + b"".join(v + b"\0" for v in t[1]))
    ),
)


def _gwy_objects(children):
    components = st.lists(
        st.tuples(
            _NAMES,
            st.one_of(
                _SCALARS,
                children.map(lambda o: (b"o", o)),
                st.lists(children, max_size=3).map(lambda os: (b"O", struct.pack("<I", len(os)) + b"".join(os))),
            ),
        ),
        max_size=5,
    )
    return st.tuples(_TYPES, components).map(
        lambda t: hostile.gwy_object(t[0], *(hostile.gwy_component(n, c, b) for n, (c, b) in t[1]))
    )


_GWY_OBJECT = st.recursive(_TYPES.map(hostile.gwy_object), _gwy_objects, max_leaves=12)


@given(
    top=st.lists(st.tuples(_NAMES, st.one_of(_SCALARS, _GWY_OBJECT.map(lambda o: (b"o", o)))), max_size=5),
    channel=st.booleans(),
    flip=st.none() | st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
)
def test_generated_gwyddion_structures_load_or_raise_format_error(tmp_path, top, channel, flip):
    components = [hostile.gwy_component(n, c, b) for n, (c, b) in top] + ([hostile.gwy_channel()] if channel else [])
    data = bytearray(b"GWYP" + hostile.gwy_object(b"GwyContainer", *components))
    if flip is not None:
        data[4 + flip[0] % (len(data) - 4)] = flip[1]
    path = tmp_path / "generated.gwy"
    path.write_bytes(bytes(data))
    loads_or_format_error(path, load_gwy)


# --------------------------------------------------------------------------- edited X3P files

_TEXTS = [b"NaN", b"inf", b"-inf", b"-1", b"0", b"1e308", b"-1e308", b"1e-320", b"", b"abc", b"4294967296"]
_TEXTS += [b"18446744073709551616", b"1" + b"0" * 40, b"2", b"D", b"F", b"L", b"I", b"Z", b"SUR", b"PRF", b"PCL", b"R"]
_TEXTS += [b"../x", b"/etc/passwd", b"http://127.0.0.1:9/y", b"bindata\\data.bin", b"bindata/valid.bin", b"main.xml"]
_TEXTS += [b"md5checksum.hex", b"\xff\xfe", b"&amp;", b"<![CDATA[1]]>", b"  5  ", b"0x10", b"1_000", "٣".encode()]
_TEXTS += [b"2020-13-45T99:99:99", b"ISO5436 - 2000", b"<a><b/></a>", b"&#0;", b"&#x110000;", b"&unknown;"]


def _record_edits(record: bytes) -> list[bytes]:
    return [
        b"{}",
        b"[]",
        b"null",
        b'{"tmd_nb": 1}',
        b'{"tmd_nb": 99}',
        b'{"tmd_nb": 1.5}',
        record.replace(b'"<f4"', b'"<U0"'),
        record.replace(b'"<f4"', b'"O"'),
        record.replace(b'"<f4"', b'"|V8"'),
        record.replace(b'"<f4"', b'"<M8[s]"'),
        record.replace(b'"factor": 0.001', b'"factor": 0'),
        record.replace(b'"factor": 0.001', b'"factor": "nan"'),
        record.replace(b'"factor": 0.001', b'"factor": 1e309'),
        record.replace(b'"member": "a"', b'"member": "../../main.xml"'),
        record.replace(b'"member": "a"', b'"member": "record.json"'),
        record.replace(b'"member": "a"', b'"member": 5'),
        record.replace(b'"exact": null', b'"exact": "a"'),
        record.replace(b'"exact": null', b'"exact": "height_map"'),
        record[: len(record) // 2],
    ]


@pytest.fixture(scope="module")
def x3p_bases(tmp_path_factory) -> list[dict[str, bytes]]:
    hm = np.arange(6, dtype="<f4").reshape(2, 3)
    hm[0, 0] = np.nan
    path = tmp_path_factory.mktemp("bases") / "base.x3p"
    export_to_x3p({"height_map": hm, "a": np.ones(3), "t": (1, "x"), "d": {"k": np.zeros(2)}}, path)
    with zipfile.ZipFile(path) as zf:
        own = {info.filename: zf.read(info) for info in zf.infolist()}
    return [hostile.x3p_members(), hostile.x3p_members("xml", (2, 3)), own]


_ELEMENT = re.compile(rb"<([A-Za-z_:][\w:.-]*)>([^<]*)</\1>")


@given(
    base=st.integers(0, 2),
    edits=st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 10**6), st.sampled_from(_TEXTS), st.sampled_from([1, 2, 100])),
        min_size=1,
        max_size=4,
    ),
    record=st.none() | st.integers(0, 18),
    checksum=st.booleans(),
)
def test_edited_x3p_files_load_or_raise_format_error(tmp_path, x3p_bases, base, edits, record, checksum):
    members = dict(x3p_bases[base])
    xml = members["main.xml"]
    for kind, where, text, times in edits:
        elements = list(_ELEMENT.finditer(xml))
        if kind <= 3 and elements:  # a value replaced
            m = elements[where % len(elements)]
            xml = xml[: m.start(2)] + text + xml[m.end(2) :]
        elif kind == 4 and elements:  # an element removed
            m = elements[where % len(elements)]
            xml = xml[: m.start()] + xml[m.end() :]
        elif kind == 5 and elements:  # an element repeated
            m = elements[where % len(elements)]
            xml = xml[: m.end()] + m.group(0) * times + xml[m.end() :]
        elif kind == 6:
            xml = xml.replace(b"<Datum>", b"<Datum>" + text + b";", 1)
        else:  # a byte changed
            pos = where % len(xml)
            xml = xml[:pos] + bytes([times]) + xml[pos + 1 :]
    members["main.xml"] = xml
    names = [name for name in members if name.endswith("record.json")]
    if record is not None and names:
        members[names[0]] = _record_edits(members[names[0]])[record]
    if checksum:
        members["md5checksum.hex"] = hashlib.md5(xml).hexdigest().encode() + b" *main.xml\n"
    path = hostile.write_zip(tmp_path / "edited.x3p", members)
    loads_or_format_error(path, load_x3p)


def _same_value(ours, theirs) -> bool:
    """Whether tmd_nb's reading of a Gwyddion value is gwyfile's (arrays by value, objects by type name)."""
    if isinstance(theirs, np.ndarray):
        return isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    if isinstance(theirs, dict):
        return (
            getattr(ours, "name", None) == theirs.name
            and list(ours) == list(theirs)
            and all(_same_value(ours[k], theirs[k]) for k in theirs)
        )
    if isinstance(theirs, list):
        return len(ours) == len(theirs) and all(_same_value(a, b) for a, b in zip(ours, theirs, strict=True))
    return type(ours) is type(theirs) and (ours == theirs or (ours != ours and theirs != theirs))


@given(
    top=st.lists(st.tuples(_NAMES, st.one_of(_SCALARS, _GWY_OBJECT.map(lambda o: (b"o", o)))), max_size=5),
    array=st.lists(_GWY_OBJECT, max_size=10),
)
def test_each_entry_reads_as_gwyfile_reads_it(top, array):
    """tmd_nb's own parser (no copies) against an independent reader, gwyfile, entry by entry: the
    same names, type names, numbers, strings and arrays wherever gwyfile reads the entry at all."""
    from gwyfile import objects

    components = [hostile.gwy_component(n, c, b) for n, (c, b) in top]
    components.append(hostile.gwy_component("/1/o", b"O", struct.pack("<I", len(array)) + b"".join(array)))
    body = hostile.gwy_object(b"GwyContainer", *components)[len(b"GwyContainer\0") + 4 :]
    try:
        spans = gwy.scan(body, "'f.gwy'")
    except FormatError:
        return  # refused before anything is read
    walk = gwy._Walk(body, "'f.gwy'")
    for start, end in spans:
        try:
            name, theirs, _, size = objects.component_from_buffer(bytes(body[start:end]), return_size=True)
        except (UnicodeDecodeError, ValueError, struct.error, NotImplementedError):
            continue  # gwyfile cannot read it ('C' arrays); tmd_nb reads it or names the byte
        ours_name, ours, stop = walk.value(start)
        assert (ours_name, stop - start) == (name, size)
        assert _same_value(ours, theirs), (name, ours, theirs)
