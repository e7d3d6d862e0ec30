"""Hostile X3P, Gwyddion and SDF files: each truncation and fuzzed edit raises FormatError, or loads."""

from __future__ import annotations

import pathlib
import warnings

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tmd_nb import FormatError, export_to_gwy, export_to_sdf, export_to_x3p, load, load_gwy, load_sdf, load_x3p

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
