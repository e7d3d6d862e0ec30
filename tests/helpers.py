"""Helpers shared by several test modules: comparison, generation, and driving the IPython shell.

The shell itself comes from the ``shell`` and ``ip`` fixtures in conftest.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import pathlib
import re
import struct
import subprocess
import sys
import zoneinfo
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell


def assert_identical(a: Any, b: Any, path: str = "") -> None:
    """Assert ``b`` is ``a`` again: same types all the way down, same bits for numbers and arrays."""
    assert type(a) is type(b), f"{path}: type {type(a).__name__} came back as {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype.str == b.dtype.str and a.dtype == b.dtype, f"{path}: dtype {a.dtype.str} != {b.dtype.str}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}"
        assert a.tobytes() == b.tobytes(), f"{path}: array bits differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.dtype.str == b.dtype.str, f"{path}: dtype {a.dtype} != {b.dtype}"
        assert a.tobytes() == b.tobytes(), f"{path}: scalar bits differ"
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b), (
            f"{path}: {a!r} != {b!r}"
        )
    elif isinstance(a, complex):
        assert_identical(a.real, b.real, path + ".real")
        assert_identical(a.imag, b.imag, path + ".imag")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            assert_identical(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (dt.datetime, dt.time)):
        assert a == b and a.fold == b.fold, f"{path}: {a!r} != {b!r}"
        assert _tz_id(a.tzinfo) == _tz_id(b.tzinfo), f"{path}: tz {a.tzinfo!r} != {b.tzinfo!r}"
        if isinstance(a, dt.datetime):
            assert a.utcoffset() == b.utcoffset() and a.replace(tzinfo=None) == b.replace(tzinfo=None)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG image, read from its IHDR chunk."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", png[16:24])


def _tz_id(tz: dt.tzinfo | None) -> Any:
    if tz is None:
        return None
    if isinstance(tz, zoneinfo.ZoneInfo):
        return ("zone", tz.key)
    return ("offset", tz.utcoffset(None))


HEIGHT_DTYPES = st.one_of(
    npst.boolean_dtypes(),
    npst.integer_dtypes(endianness="=") | npst.integer_dtypes(endianness="<") | npst.integer_dtypes(endianness=">"),
    npst.unsigned_integer_dtypes(endianness="<") | npst.unsigned_integer_dtypes(endianness=">"),
    npst.floating_dtypes(endianness="<") | npst.floating_dtypes(endianness=">"),
    npst.complex_number_dtypes(endianness="<") | npst.complex_number_dtypes(endianness=">"),
)

height_maps = HEIGHT_DTYPES.flatmap(
    lambda d: npst.arrays(
        d,
        npst.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),
        elements=npst.from_dtype(d, allow_nan=True, allow_infinity=True) if d.kind in "fc" else None,
    )
)

ARRAY_DTYPES = st.one_of(
    HEIGHT_DTYPES,
    npst.unicode_string_dtypes(endianness="<", max_len=6),
    npst.byte_string_dtypes(max_len=6),
    npst.datetime64_dtypes(endianness="<"),
    npst.timedelta64_dtypes(endianness=">"),
)

metadata_arrays = ARRAY_DTYPES.flatmap(lambda d: npst.arrays(d, npst.array_shapes(min_dims=0, max_dims=3, max_side=4)))
numpy_scalars = ARRAY_DTYPES.flatmap(lambda d: npst.arrays(d, ())).map(lambda a: a[()])

fixed_offsets = st.integers(-23 * 3600, 23 * 3600).map(lambda s: dt.timezone(dt.timedelta(seconds=s)))
zones = st.none() | st.just(dt.UTC) | fixed_offsets | st.timezones()
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=20)

metadata_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**53 - 2, max_value=2**70),
    st.integers(max_value=-(2**53) + 2, min_value=-(2**70)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.complex_numbers(allow_nan=True, allow_infinity=True),
    any_text,
    st.binary(max_size=16),
    st.datetimes(timezones=zones),
    st.dates(),
    st.times(timezones=st.none() | fixed_offsets),
    st.timedeltas(),
    st.builds(pathlib.PurePosixPath, any_text),
    st.builds(pathlib.PureWindowsPath, st.text(max_size=8)),
    st.builds(pathlib.Path, st.text(max_size=8)),
    numpy_scalars,
    metadata_arrays,
)

metadata_values = st.recursive(
    metadata_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(any_text | st.just("__tmd_type__"), inner, max_size=4)
    ),
    max_leaves=20,
)

metadata_dicts = st.dictionaries(
    any_text.filter(lambda k: k != "height_map")
    | st.sampled_from(["metadata", "mask", "__tmd_nb_format__", "__array_0__", "units"]),
    metadata_values,
    max_size=6,
)


def _real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _writable(meta: dict) -> dict:
    """``meta`` with the physical keys a writer with units checks made acceptable: a unit key that
    names no known length becomes ``"um"``, a length that is not a positive finite number 2.0, an
    offset that is not a finite number 0.0 (the writers refuse those, naming the key)."""
    out = dict(meta)
    for key in ("units", "lateral_unit", "height_unit"):
        value = out.get(key)
        if key in out and not (isinstance(value, str) and value.strip() in ("m", "mm", "um", "nm")):
            out[key] = "um"
    for key in ("x_length", "y_length"):
        value = out.get(key)
        if key in out and not (_real(value) and math.isfinite(float(value)) and 1e-30 < float(value) < 1e30):
            out[key] = 2.0
    for key in ("x_offset", "y_offset"):
        value = out.get(key)
        if key in out and not (_real(value) and math.isfinite(float(value)) and abs(float(value)) < 1e30):
            out[key] = 0.0
    return out


#: Metadata an X3P, Gwyddion or SDF writer takes: the physical keys, when present, are ones it can write.
writable_metadata_dicts = metadata_dicts.map(_writable)


# --------------------------------------------------------------------------- the IPython shell

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str) -> tuple[Any, str, str]:
    """Run ``cell`` in the shell; return its result and what it printed, colours removed."""
    result = ip.run_cell(cell)
    out, err = capsys.readouterr()
    return result, ANSI.sub("", out), ANSI.sub("", err)


def usage_error(ip: InteractiveShell, capsys: pytest.CaptureFixture[str], cell: str) -> str:
    """Run a cell that must fail with a one-line UsageError and no traceback; return the message."""
    result, out, err = run(ip, capsys, cell)
    assert isinstance(result.error_in_exec, UsageError), (result.error_in_exec, out, err)
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), err
    return lines[0].removeprefix("UsageError: ")


# --------------------------------------------------------------------------- memory, in a capped process

HERE = pathlib.Path(__file__).resolve().parent
MB = 1 << 20


def memory_probe(path: pathlib.Path, returned: int = 0, timeout: int = 600) -> dict:
    """Load ``path`` in a child capped at its baseline + 256 MB + 50 x size + ``returned``
    (tests/memory_probe.py, which also caps its CPU time); its JSON result."""
    out = subprocess.run(
        [sys.executable, str(HERE / "memory_probe.py"), str(path), str(256 * MB), "50", str(returned)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def small_gwy_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """GWY reading at small thresholds: holes from 64 bytes, reads from 16, blocks of 512 bytes, so
    that a file of a few KB takes every path of a large one."""
    from tmd_nb.formats import gwy
    from tmd_nb.storage import blockwise

    monkeypatch.setattr(gwy, "HOLE_MIN", 64)
    monkeypatch.setattr(gwy, "READ_FIRST", 16)
    monkeypatch.setattr(gwy, "READ_MAX", 1024)
    monkeypatch.setattr(blockwise, "BLOCK_BYTES", 512)


def open_descriptors() -> int:
    """How many file descriptors this process holds open (Linux)."""
    return len(os.listdir("/proc/self/fd"))
