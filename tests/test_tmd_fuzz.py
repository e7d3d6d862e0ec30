"""Fuzz the .tmd reader: mutated real and synthetic files may load or raise FormatError, nothing else.

A file that does load must be self-consistent: its size is exactly the header, the comment,
the dimensions and 4 bytes per height, so no mutation can make the reader invent or drop data.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmd_nb.errors import FormatError
from tmd_nb.formats import tmd

HEADERS = [
    b"Binary TrueMap Data File v2.0\r\n\0",
    b"Binary Truemap Data File v2.0\r\n\0",
    b"Binary TrueMap Data File\r\n\0",
]
SAMPLE_NAMES = ["v2_Surface.tmd", "v1_Dime.tmd"]  # the smallest v2 file, and a v1 file


@st.composite
def synthetic(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from(HEADERS))
    width, height = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    comment = draw(st.sampled_from([b"", b"Created by TrueMap v6\r\n", b"x" * 70]))
    fields = 4 if b"v2.0" in header else 2
    return (
        header
        + comment
        + b"\0"
        + struct.pack("<II", width, height)
        + struct.pack(f"<{fields}f", *draw(st.lists(st.floats(width=32), min_size=fields, max_size=fields)))
        + np.asarray(
            draw(st.lists(st.floats(width=32), min_size=width * height, max_size=width * height)), dtype="<f4"
        ).tobytes()
    )


class Scans(list):
    """The original files; a short repr, so hypothesis never renders megabytes of bytes."""

    def __repr__(self) -> str:
        return f"<{len(self)} sample scans>"


@st.composite
def mutated(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    # An index, not the bytes themselves, so that hypothesis never prints a whole scan.
    index = draw(st.integers(-1, len(originals) - 1))
    data = bytearray(originals[index] if index >= 0 else draw(synthetic()))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        # Most of the structure is in the first ~100 bytes; aim there more often than not.
        limit = len(data) if draw(st.booleans()) else min(len(data), 100)
        pos = draw(st.integers(0, max(limit - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from([0, 0xFF, 0x7F, 0x80, ord("\r"), ord("v")]))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


def test_mutated_files_load_consistently_or_raise_format_error(tmd_samples: Path, tmp_path: Path) -> None:
    originals = Scans((tmd_samples / name).read_bytes() for name in SAMPLE_NAMES)
    path = tmp_path / "fuzz.tmd"
    outcomes = {"loaded": 0, "refused": 0}

    @settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(content=mutated(originals))
    def check(content: bytes) -> None:
        path.write_bytes(content)
        try:
            d = tmd.load_tmd(path)
        except FormatError as exc:
            assert repr(str(path)) in str(exc)
            outcomes["refused"] += 1
            return
        outcomes["loaded"] += 1
        hm = d["height_map"]
        assert hm.dtype == np.float32 and hm.ndim == 2 and hm.size > 0
        assert tmd.looks_like_tmd(content)
        header_end = content.index(b"\0")
        stored = 16 if d["tmd_version"] == 1 else 24
        comment_bytes = d["comment"].encode("latin-1")
        assert content[header_end + 1 : header_end + 1 + len(comment_bytes) + 1] == comment_bytes + b"\0"
        assert len(content) == header_end + 1 + len(comment_bytes) + 1 + stored + 4 * hm.size
        assert hm.tobytes() == content[len(content) - 4 * hm.size :]

    check()
    # Both outcomes must occur, or the mutations are not exercising the reader.
    assert outcomes["loaded"] > 0 and outcomes["refused"] > 0, outcomes
