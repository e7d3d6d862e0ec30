"""An outsider's attacks on the exchange formats' records: files tmd_nb wrote, with the tmd_nb
record edited (X3P's ``record.json`` member, Gwyddion's ``/tmd_nb/record.json`` entry).

An edit either gives one-line ``FormatError`` naming the file, or a load of the file's own
values (with a ``ModifiedFileWarning`` when they are not what tmd_nb wrote); never a raw
exception, and never other heights without a word.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import gwyfile
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tmd_nb import FormatError, ModifiedFileWarning, export_to_gwy, export_to_x3p, load_from_gwy, load_from_x3p
from tmd_nb.errors import MAX_MESSAGE

X3P_RECORD = "pypi\\org\\project\\tmd-nb\\record.json"
GWY_RECORD = "/tmd_nb/record.json"

MAPS = {
    "float16": np.array([[1, np.nan], [np.inf, -2]], np.float16),
    "float64": np.array([[np.nan, 1e-300, 3.0]]),
    "int8": np.arange(-3, 3, dtype=np.int8).reshape(2, 3),
    "uint64": np.array([[2**64 - 1, 0]], np.uint64),
    "int64": np.array([[-(2**63), 2**63 - 1]], np.int64),
    "bool": np.array([[True, False]]),
    "complex": np.array([[1 + 2j, 3]]),
}


def one_line_naming(exc: BaseException, path: Path) -> None:
    text = str(exc)
    assert text.startswith(repr(str(path))), text
    assert len(text) <= MAX_MESSAGE and "\n" not in text, text


def x3p_with_record(src: Path, dst: Path, text: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for info in zin.infolist():
            out.writestr(info.filename, text if info.filename == X3P_RECORD else zin.read(info))


def gwy_with_record(src: Path, dst: Path, text: bytes) -> None:
    obj = gwyfile.load(str(src))
    obj[GWY_RECORD] = text.decode("utf-8")
    obj.tofile(str(dst))


FORMATS = {
    "x3p": (export_to_x3p, load_from_x3p, lambda p: zipfile.ZipFile(p).read(X3P_RECORD), x3p_with_record),
    "gwy": (export_to_gwy, load_from_gwy, lambda p: gwyfile.load(str(p))[GWY_RECORD].encode(), gwy_with_record),
}

HOSTILE_VALUES = st.sampled_from(
    [None, -1, 0, 1, 2**64, 10**400, "x", "<f8", "|b1", [], {}, True, 1.5, -0.001, 1e-300, [-1], [[0, 0]]]
)


def edited_record(record: dict[str, Any], key: str, value: Any) -> bytes:
    edited = json.loads(json.dumps(record))
    edited["height"][key] = value
    return json.dumps(edited).encode()


def load_checked(load, path: Path, original: np.ndarray) -> None:
    """FormatError naming ``path``, the map tmd_nb wrote, or other values with a warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = load(path)["height_map"]
        except FormatError as exc:
            one_line_naming(exc, path)
            return
    if not any(issubclass(w.category, ModifiedFileWarning) for w in caught):
        # A record naming another dtype that holds the same numbers (bool as <f8) cannot be told
        # from the file's data; other numbers can.
        assert np.array_equal(got, original, equal_nan=True), (got, got.dtype)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", sorted(MAPS))
# 1e400 as a JSON integer: float() raised OverflowError out of the load.
@example(key="factor", value=10**400)
# Gwyddion: a factor of 1 or a record without its exact map restored other heights, silently.
@example(key="factor", value=1)
@example(key="exact", value=None)
@example(key="dtype", value="|b1")
@given(key=st.sampled_from(["dtype", "factor", "exact", "missing", "stored", "patch"]), value=HOSTILE_VALUES)
def test_an_edited_height_description_is_refused_or_warned_never_other_heights(
    tmp_path: Path, fmt: str, name: str, key: str, value: Any
) -> None:
    # Known and left alone: the data cannot tell a record that drops the exact map of a map whose
    # standard heights lose only what a missing point or an imaginary part held (inf, 1+2j), or
    # drops the list of missing points, from the record tmd_nb wrote for such a map.
    assume(not (key == "exact" and name in {"float16", "complex"}))
    assume(not (key == "missing" and value is None))
    save, load, record_of, rewrite = FORMATS[fmt]
    original = MAPS[name]
    src = Path(save(original, tmp_path / f"map.{fmt}"))
    record = json.loads(record_of(src))
    dst = tmp_path / f"edited.{fmt}"
    rewrite(src, dst, edited_record(record, key, value))
    load_checked(load, dst, original)


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def x3p_with_patch(src: Path, dst: Path, at: np.ndarray | None, values: np.ndarray | None) -> None:
    """``src`` with its patch members replaced, their checksums in the record made to match."""
    import zlib

    with zipfile.ZipFile(src) as zin:
        members = {info.filename: zin.read(info) for info in zin.infolist()}
    prefix = X3P_RECORD[: -len("record.json")]
    record = json.loads(members[X3P_RECORD])
    for name, array in (("__patch_at__", at), ("__patch_values__", values)):
        if array is not None:
            members[prefix + name + ".npy"] = npy_bytes(array)
            record["checksums"][name] = f"{zlib.crc32(members[prefix + name + '.npy']):08x}"
    members[X3P_RECORD] = json.dumps(record).encode()
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for name, content in members.items():
            out.writestr(name, content)


@pytest.mark.parametrize(
    ("at", "values"),
    [
        (np.array([34, 34], np.uint32), None),  # each point once: this one was loaded, point 0 left rounded
        (np.array([34, 0], np.uint32), None),  # not in order
        (np.array([100, 0], np.uint32), None),  # beyond the map
        (np.array([-1, 0], np.int32), None),
        (np.array([2**63, 0], np.uint64), None),
        (np.array([[0, 34]], np.uint32), None),
        (np.array([34], np.uint32), None),
        (None, np.array([1.0, 2.0])),
        (None, np.array([1, 2, 3], np.uint64)),
        (np.array([], np.uint32), np.array([], np.uint64)),  # the rounded numbers left
    ],
)
def test_an_edited_patch_is_refused(tmp_path: Path, at: np.ndarray | None, values: np.ndarray | None) -> None:
    original = np.zeros((10, 10), np.uint64)
    original.flat[[0, 34]] = [2**63 + 1, 2**64 - 1]  # float64 rounds both: the record patches them
    src = Path(export_to_x3p(original, tmp_path / "map.x3p"))
    with zipfile.ZipFile(src) as zf:
        assert json.loads(zf.read(X3P_RECORD))["height"]["patch"] == ["__patch_at__", "__patch_values__"]
    dst = tmp_path / "edited.x3p"
    x3p_with_patch(src, dst, at, values)
    with pytest.raises(FormatError) as info:
        load_from_x3p(dst)
    one_line_naming(info.value, dst)
