"""NPY files: round trips byte-identical to numpy's, refused dtypes and pickles, damaged files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from archive_helpers import DTYPES, build_zip, npy_bytes, refused, same, sample, save_npz

from tmd_nb.errors import FormatError
from tmd_nb.storage.archive import read_npz
from tmd_nb.storage.npyfile import read_npy, write_npy


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


def test_writers_refuse_object_and_structured_dtypes(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        save_npz(tmp_path / "o.npz", {"a": np.array([1, None], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        write_npy(io.BytesIO(), np.array([{}], dtype=object))
    with pytest.raises(TypeError, match="dtype"):
        save_npz(tmp_path / "s.npz", {"a": np.zeros(2, dtype=[("x", "f4")])})


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
    cases = {
        "trunc.npy": good[:-1],
        "long.npy": good + b"x",
        "magic.npy": b"xNUMPY" + good[6:],
        "header.npy": good[:10] + b"{'descr': '<f4', 'shape': (-3,), " + good[44:],
        "empty.npy": b"",
        "version.npy": good[:6] + b"\x09\x00" + good[8:],
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError) as info:
            read_npy(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(IsADirectoryError):
        read_npy(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_npz(tmp_path / "missing.npz")
