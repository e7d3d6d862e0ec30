"""Hostile and malformed files: loading never unpickles, and only FormatError or OSError escape."""

from __future__ import annotations

import io
import os
import pathlib
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tmd_nb import FormatError, export_to_npy, export_to_npz, load, load_from_npy, load_from_npz

LOADERS = {"npz": load_from_npz, "npy": load_from_npy, "any": load}


class _Marker:
    """Unpickling this object creates a file: the proof that code ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def good_npz(tmp_path) -> bytes:
    path = export_to_npz(
        {
            "height_map": np.arange(12, dtype="<f4").reshape(3, 4),
            "units": "mm",
            "when": (1, 2),
            "mask": np.ones((3, 4), bool),
        },
        tmp_path / "good.npz",
    )
    return pathlib.Path(path).read_bytes()


def good_npy(tmp_path) -> bytes:
    return pathlib.Path(export_to_npy(np.arange(12.0).reshape(3, 4), tmp_path / "good.npy")).read_bytes()


def test_pickled_objects_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.empty((1, 1), dtype=object)
    payload[0, 0] = _Marker(str(marker))
    np.save(tmp_path / "evil.npy", payload, allow_pickle=True)
    (tmp_path / "evil.npz").write_bytes(
        zip_bytes(
            {
                "height_map.npy": npy_bytes(np.zeros((2, 2))),
                "metadata.npy": npy_bytes(np.array(payload[0, 0], dtype=object), allow_pickle=True),
            }
        )
    )
    (tmp_path / "evil2.npz").write_bytes(zip_bytes({"height_map.npy": npy_bytes(payload, allow_pickle=True)}))
    # sanity: the payload really does run when unpickled by a careless reader
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()
    marker.unlink()
    for name, loader in (
        ("evil.npy", load_from_npy),
        ("evil.npz", load_from_npz),
        ("evil2.npz", load_from_npz),
        ("evil.npy", load),
        ("evil.npz", load),
    ):
        with pytest.raises(FormatError, match=rf"{name}.*(pickle|object)"):
            loader(tmp_path / name)
        assert not marker.exists(), f"loading {name} ran code"


@pytest.mark.parametrize("kind", ["npz", "npy"])
def test_every_truncation_is_a_format_error(tmp_path, kind):
    data = good_npz(tmp_path) if kind == "npz" else good_npy(tmp_path)
    path = tmp_path / f"cut.{kind}"
    for n in range(0, len(data)):
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
        b"\x93NUMPY" + np.random.default_rng(3).bytes(100),
        b"PK\x05\x06" + b"\x00" * 18,
    ],
)
@pytest.mark.parametrize("kind", ["npz", "npy", "any"])
def test_random_bytes_are_format_errors(tmp_path, kind, content):
    path = tmp_path / "junk"
    path.write_bytes(content)
    with pytest.raises(FormatError, match="junk"):
        LOADERS[kind](path)


def test_npz_without_height_map(tmp_path):
    (tmp_path / "a.npz").write_bytes(zip_bytes({"z.npy": npy_bytes(np.zeros((2, 2)))}))
    with pytest.raises(FormatError, match=r"a.npz.*no 'height_map'.*'z'"):
        load_from_npz(tmp_path / "a.npz")


@pytest.mark.parametrize("claimed", [(10**6, 10**6), (3, 5), (3, 3), (2**40, 2**40), (2**62, 4)])
def test_header_size_must_match_stored_bytes(tmp_path, claimed):
    stored = np.zeros((3, 4), "<f8")
    # a well-formed header (numpy's own writer) that lies about the 12 values stored after it
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": claimed})
    forged = buf.getvalue() + stored.tobytes()
    (tmp_path / "f.npy").write_bytes(forged)
    (tmp_path / "f.npz").write_bytes(zip_bytes({"height_map.npy": forged}))
    with pytest.raises(FormatError, match="f.npy.*claims"):
        load_from_npy(tmp_path / "f.npy")
    with pytest.raises(FormatError, match="f.npz.*claims"):
        load_from_npz(tmp_path / "f.npz")


def test_trailing_bytes_are_refused(tmp_path):
    (tmp_path / "t.npy").write_bytes(good_npy(tmp_path) + b"extra")
    with pytest.raises(FormatError, match="t.npy"):
        load_from_npy(tmp_path / "t.npy")


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '"str"',
        "[" * 100_000 + "]" * 100_000,
        '{"a": ' * 50_000 + "1" + "}" * 50_000,
        '{"a": {"__tmd_type__": "nope"}}',
        '{"a": {"__tmd_type__": "ndarray", "member": "x"}}',
        '{"a": {"__tmd_type__": "int", "hex": 5}}',
        '{"a": {"__tmd_type__": "bytes"}}',
        '{"a": {"__tmd_type__": "numpy.scalar", "dtype": "O", "base64": ""}}',
        '{"a": {"__tmd_type__": "numpy.scalar", "dtype": "<f8", "base64": "AAA="}}',
        '{"a": {"__tmd_type__": "datetime", "value": "yesterday", "tz": null}}',
        '{"a": {"__tmd_type__": "datetime", "value": "2020-01-01", "tz": {"zone": "../etc"}}}',
        '{"a": {"__tmd_type__": "path", "class": "os.system", "value": "x"}}',
    ],
)
def test_bad_metadata_json_is_a_format_error(tmp_path, text):
    (tmp_path / "m.npz").write_bytes(
        zip_bytes(
            {
                "height_map.npy": npy_bytes(np.zeros((2, 2))),
                "metadata.npy": npy_bytes(np.array(text)),
                "__tmd_nb_format__.npy": npy_bytes(np.array(1, dtype=np.int64)),
            }
        )
    )
    with pytest.raises(FormatError, match="m.npz"):
        load_from_npz(tmp_path / "m.npz")


def test_newer_format_version_is_refused_with_advice(tmp_path):
    (tmp_path / "v.npz").write_bytes(
        zip_bytes({"height_map.npy": npy_bytes(np.zeros((2, 2))), "__tmd_nb_format__.npy": npy_bytes(np.array(99))})
    )
    with pytest.raises(FormatError, match="version 99.*upgrade"):
        load_from_npz(tmp_path / "v.npz")


@pytest.mark.parametrize(
    "array", [np.zeros((2, 2), dtype="V8"), np.zeros(2, dtype=[("a", "<i4")]), np.zeros((2, 2, 2)), np.array(["x"])]
)
def test_odd_height_maps_in_files_are_format_errors(tmp_path, array):
    (tmp_path / "h.npz").write_bytes(zip_bytes({"height_map.npy": npy_bytes(array)}))
    with pytest.raises(FormatError, match="h.npz"):
        load_from_npz(tmp_path / "h.npz")


def test_os_errors_keep_their_types(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_from_npz(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        load_from_npy(tmp_path)
    with pytest.raises(IsADirectoryError):
        load(tmp_path)
    if os.geteuid() != 0:
        locked = tmp_path / "locked.npz"
        locked.write_bytes(good_npz(tmp_path))
        locked.chmod(0)
        with pytest.raises(PermissionError):
            load_from_npz(locked)


def test_zip_bomb_claim_is_refused_before_allocating(tmp_path):
    raw = bytearray(zip_bytes({"height_map.npy": npy_bytes(np.zeros((64, 64)))}))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)})
    forged = zip_bytes({"height_map.npy": buf.getvalue() + b"\x00" * 1000})
    (tmp_path / "bomb.npz").write_bytes(forged)
    with pytest.raises(FormatError, match="bomb.npz"):
        load_from_npz(tmp_path / "bomb.npz")
    assert raw  # the honest file is fine
    (tmp_path / "honest.npz").write_bytes(bytes(raw))
    assert load_from_npz(tmp_path / "honest.npz")["height_map"].shape == (64, 64)


def _flip(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out)


@given(
    kind=st.sampled_from(["npz", "npz-stored", "npy"]),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.none() | st.integers(0, 10_000),
    insert=st.none() | st.tuples(st.integers(0, 10_000), st.binary(max_size=9)),
)
def test_fuzzed_files_raise_only_format_error(tmp_path, kind, edits, cut, insert):
    if kind == "npy":
        data = good_npy(tmp_path)
    else:
        path = export_to_npz(
            {
                "height_map": np.arange(12, dtype="<f4").reshape(3, 4),
                "units": "mm",
                "t": (1, 2),
                "mask": np.ones((3, 4), bool),
            },
            tmp_path / "good.npz",
            compress=kind == "npz",
        )
        data = pathlib.Path(path).read_bytes()
    data = _flip(data, edits)
    if insert is not None:
        pos = insert[0] % (len(data) + 1)
        data = data[:pos] + insert[1] + data[pos:]
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    target = tmp_path / "fuzz.bin"
    target.write_bytes(data)
    for loader in (load, load_from_npz if kind != "npy" else load_from_npy):
        try:
            result = loader(target)
        except FormatError as exc:
            assert "fuzz.bin" in str(exc)
        else:
            assert result["height_map"].ndim == 2 if isinstance(result, dict) else result.ndim == 2


def test_metadata_member_of_a_foreign_file_that_is_not_text_is_an_array(tmp_path):
    (tmp_path / "f.npz").write_bytes(
        zip_bytes({"height_map.npy": npy_bytes(np.zeros((2, 2))), "metadata.npy": npy_bytes(np.arange(3))})
    )
    back = load_from_npz(tmp_path / "f.npz")
    assert np.array_equal(back["metadata"], np.arange(3))


def test_header_struct_fields_are_checked(tmp_path):
    # NPY version 2 header with an absurd header length: refused without reading gigabytes
    (tmp_path / "h.npy").write_bytes(b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**31) + b"{}")
    with pytest.raises(FormatError, match="h.npy"):
        load_from_npy(tmp_path / "h.npy")
