"""What every format in the registry must do, written once over ``FORMATS``.

A new format gets these tests by being listed in :data:`tmd_nb.formats.registry.FORMATS`:

* a writable format (``save`` is not None) round-trips every height map it accepts (a lossless
  one, ``keeps is None``, bit for bit with every metadata key; the others as the heights saved,
  in the type the file holds) and refuses the rest before writing;
* every truncation of a file of each format is a ``FormatError`` naming the file, from the
  format's own loader and from ``load()``;
* edited bytes (hypothesis: byte sets, inserts, cuts) give a ``FormatError`` naming the file or a
  height map, and ``load()`` then gives what the recognised format's loader gives;
* a format's first bytes followed by noise are a ``FormatError`` naming the file;
* special files (a directory, a FIFO, a socket, ``/dev/null``, an empty file, a missing file,
  symbolic links to a file and to nothing, an unreadable file) give the ``OSError`` or
  ``FormatError`` SECURITY.md documents, without blocking; saving over a FIFO, a socket, a
  device, a directory or a write-protected file is refused and leaves it as it was;
* a file is recognised by its content, whatever its extension says.

Files to read come from each writable format's own ``save``; a read-only format needs an entry
in :data:`SAMPLE_MAKERS` (a small file of that format), which :func:`test_every_format_has_a_sample`
asks for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from conftest import ROOT, require
from helpers import assert_identical, height_maps, writable_metadata_dicts
from hypothesis import example, given
from hypothesis import strategies as st

from tmd_nb import FormatError, MetadataNotStoredWarning
from tmd_nb.formats import registry
from tmd_nb.formats.base import Format

FORMATS = registry.FORMATS
WRITABLE = [f for f in FORMATS if getattr(f, "save", None) is not None]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


#: name -> maker(folder) -> path of a small file of that format, for formats tmd_nb cannot write.
def _instrument_sample(folder: Path) -> Path:
    """The smallest instrument file among the shared samples (an Igor binary wave, 816 bytes)."""
    source = ROOT.parent / "shared" / "data" / "instruments" / "10x10-one_channel_without_name.ibw"
    require(source.is_file(), f"instrument sample not found at {source} (it lives in shared/data/instruments)")
    return Path(shutil.copyfile(source, folder / "sample.ibw"))


SAMPLE_MAKERS: dict[str, Callable[[Path], Path]] = {"instrument": _instrument_sample}


def names(formats: list[Format] | tuple[Format, ...]) -> list[str]:
    return [f.name for f in formats]


# --------------------------------------------------------------------------- samples


def sample_data(fmt: Format) -> dict[str, Any]:
    """A small map with a missing point; float64 with metadata of several types for a lossless
    format, float32 for the others (a format may store float32 and refuse what it would round)."""
    hm = np.arange(12, dtype="<f8").reshape(3, 4) / 7
    hm[1, 1] = np.nan
    data: dict[str, Any] = {"height_map": hm if fmt.keeps is None else hm.astype(np.float32)}
    if fmt.keeps is None:
        data.update({"units": "mm", "t": (1, 2), "mask": np.ones((3, 4), bool)})
    return data


class Sample(NamedTuple):
    """One kind of file of a format: its bytes are made once per session."""

    id: str
    format: Format
    options: dict[str, Any]


def samples() -> list[Sample]:
    """Every format, and a second layout where ``save`` takes ``compress`` (members stored, not deflated)."""
    found = []
    for f in FORMATS:
        found.append(Sample(f.name, f, {}))
        if f in WRITABLE and "compress" in f.options:
            found.append(Sample(f"{f.name}-stored", f, {"compress": False}))
    return found


SAMPLES = samples()
_BYTES: dict[str, bytes] = {}


def sample_bytes(sample: Sample, folder: Path) -> bytes:
    if sample.id not in _BYTES:
        fmt = sample.format
        if fmt in WRITABLE:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MetadataNotStoredWarning)
                path = Path(fmt.save(sample_data(fmt), folder / f"sample{fmt.extensions[0]}", **sample.options))
        elif fmt.name in SAMPLE_MAKERS:
            path = SAMPLE_MAKERS[fmt.name](folder)
        else:
            pytest.fail(f"{fmt.title} cannot be written: give SAMPLE_MAKERS a maker of a small {fmt.title} file")
        _BYTES[sample.id] = path.read_bytes()
        path.unlink()
    return _BYTES[sample.id]


def loaders(fmt: Format) -> list[tuple[str, Callable[..., dict[str, Any]]]]:
    return [(f"{fmt.name}.load", fmt.load), ("load()", registry.load)]


def quietly(load: Callable[..., dict[str, Any]], path: Path) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # checksum mismatches and edits by other software are warnings by design
        return load(path)


def assert_names_file(exc: BaseException, path: Path) -> None:
    assert str(exc).startswith(repr(str(path))), f"{type(exc).__name__} does not start with the file name: {exc}"


@contextmanager
def must_not_block(seconds: int = 30) -> Iterator[None]:
    """Fail, instead of hanging, if the body blocks (a read of a FIFO nobody writes)."""

    def stop(signum: int, frame: Any) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_every_format_has_a_sample(tmp_path: Path) -> None:
    for sample in SAMPLES:
        data = sample_bytes(sample, tmp_path)
        path = tmp_path / "s"
        path.write_bytes(data)
        assert registry.recognise(path) is sample.format, sample.id
    assert {s.format.name for s in SAMPLES} == set(registry.names())


# --------------------------------------------------------------------------- round trips


def refused_before_writing(fmt: Format, data: Any, path: Path) -> bool:
    """Save ``data``; True if the format refused it, in which case nothing may have been written."""
    try:
        fmt.save(data, path)
    except (TypeError, ValueError):
        assert list(path.parent.iterdir()) == [], f"{fmt.title} refused the data but left files behind"
        return True
    return False


@pytest.mark.parametrize("fmt", WRITABLE, ids=names(WRITABLE))
@given(hm=height_maps)
def test_heights_come_back_as_saved_or_are_refused_before_writing(tmp_path: Path, fmt: Format, hm: np.ndarray) -> None:
    folder = tmp_path / "round"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = folder / f"a{fmt.extensions[0]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cast to the file's type may overflow to inf
        if refused_before_writing(fmt, {"height_map": hm}, path):
            return
    back = fmt.load(path)["height_map"]
    if fmt.keeps is None:
        assert_identical(hm, back)  # a lossless format keeps the type and every bit
    else:
        # The heights in the type the file holds. A format may read a value as its mark of a
        # missing point (TrueMap's fill, float32(-1e10), docs/FORMAT.md), but never invents a
        # height: every missing point saved is missing, every height loaded is the one saved.
        assert back.shape == hm.shape
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = hm.astype(back.dtype)
        missing = np.isnan(back) if back.dtype.kind in "fc" else np.zeros(back.shape, bool)
        if expected.dtype.kind in "fc":
            assert missing[np.isnan(expected)].all(), "a missing point came back as a height"
        assert np.array_equal(back[~missing], expected[~missing]), (hm.dtype, back.dtype)
    assert_identical(fmt.load(path), registry.load(path))


LOSSLESS = [f for f in WRITABLE if f.keeps is None]


@pytest.mark.parametrize("fmt", LOSSLESS, ids=names(LOSSLESS))
@given(meta=writable_metadata_dicts)
def test_a_lossless_format_keeps_every_metadata_key_typed(tmp_path: Path, fmt: Format, meta: dict[str, Any]) -> None:
    data = {"height_map": np.arange(12, dtype=np.float32).reshape(3, 4), **meta}
    assert_identical(data, fmt.load(fmt.save(data, tmp_path / f"m{fmt.extensions[0]}")))


LOSSY = [f for f in WRITABLE if f.keeps is not None]


@pytest.mark.parametrize("fmt", LOSSY, ids=names(LOSSY))
def test_a_format_that_keeps_some_keys_names_the_others_and_loads_no_others(tmp_path: Path, fmt: Format) -> None:
    data = {"height_map": np.arange(12, dtype=np.float32).reshape(3, 4), "operator": "ann", "run": 3}
    assert fmt.lost_keys(list(data)[1:]) == ["operator", "run"]
    with pytest.warns(MetadataNotStoredWarning, match=r"'operator', 'run'"):
        path = fmt.save(data, tmp_path / f"k{fmt.extensions[0]}")
    back = fmt.load(path)
    assert set(back) <= {"height_map"} | fmt.keeps | fmt.derived, set(back)
    np.testing.assert_array_equal(back["height_map"], data["height_map"])


# --------------------------------------------------------------------------- truncation


def cut_points(size: int, seed: int) -> list[int]:
    """Every length of a small file; for a bigger one, every length within 512 bytes of either
    end (where the headers, directories and trailers are) and a seeded sample in between."""
    if size <= 2048:
        return list(range(size))
    middle = np.random.default_rng(seed).integers(512, size - 512, 256)
    return sorted({*range(512), *range(size - 512, size), *map(int, middle)})


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_every_truncation_is_a_format_error_naming_the_file(tmp_path: Path, sample: Sample) -> None:
    data = sample_bytes(sample, tmp_path)
    path = tmp_path / f"cut{sample.format.extensions[0]}"
    for n in cut_points(len(data), seed=len(data)):
        path.write_bytes(data[:n])
        for where, load in loaders(sample.format):
            with pytest.raises(FormatError) as info:
                quietly(load, path)
            assert_names_file(info.value, path)
            assert "\n" not in str(info.value), (where, n)


# --------------------------------------------------------------------------- hostile bytes


def edited(data: bytes, sets: list[tuple[int, int]], insert: tuple[int, bytes] | None, cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in sets:
        out[pos % len(out)] = value
    if insert is not None:
        pos = insert[0] % (len(out) + 1)
        out[pos:pos] = insert[1]
    if cut is not None:
        del out[cut % (len(out) + 1) :]
    return bytes(out)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
# Found by the thorough profile on X3P: zipfile's NotImplementedError and a seek before the file's start.
@example(sets=[(4565, 101)], insert=None, cut=None)
@example(sets=[(128, 200), (106, 161), (106, 161), (493, 226)], insert=(12641, b"\x0e!"), cut=None)
# A NUL as the first byte of the NPZ sample's first central-directory name: zipfile cuts the name
# there, and ZipInfo.is_dir() raised IndexError on the empty name while recognising X3P.
@example(sets=[(759, 0)], insert=None, cut=None)
@given(
    sets=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=6),
    insert=st.none() | st.tuples(st.integers(0, 100_000), st.binary(min_size=1, max_size=9)),
    cut=st.none() | st.integers(0, 100_000),
)
def test_edited_bytes_give_a_format_error_or_a_height_map(
    tmp_path: Path, sample: Sample, sets: list[tuple[int, int]], insert: tuple[int, bytes] | None, cut: int | None
) -> None:
    path = tmp_path / "edited.bin"
    path.write_bytes(edited(sample_bytes(sample, tmp_path), sets, insert, cut))
    results: dict[str, dict[str, Any]] = {}
    for where, load in loaders(sample.format):
        try:
            results[where] = quietly(load, path)
        except FormatError as exc:
            assert_names_file(exc, path)
            assert "\n" not in str(exc), where
        else:
            hm = results[where]["height_map"]
            assert isinstance(hm, np.ndarray) and hm.ndim == 2, where
            assert all(isinstance(k, str) for k in results[where]), where
    if "load()" in results:  # load() is the loader of the format it recognises, nothing else
        assert_identical(results["load()"], quietly(registry.recognise(path).load, path))


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
@given(head=st.integers(0, 16), junk=st.binary(max_size=4096))
def test_a_formats_first_bytes_followed_by_junk_are_a_format_error(
    tmp_path: Path, sample: Sample, head: int, junk: bytes
) -> None:
    path = tmp_path / "junk"
    path.write_bytes(sample_bytes(sample, tmp_path)[:head] + junk)  # the magic bytes pass, the rest is noise
    for _where, load in loaders(sample.format):
        with pytest.raises(FormatError) as info:
            quietly(load, path)
        assert_names_file(info.value, path)


# --------------------------------------------------------------------------- special files


def make_socket(path: Path) -> Path:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


def special_files(folder: Path, sample: bytes) -> dict[str, tuple[Path, type[BaseException] | None]]:
    """name -> (path, what loading it raises; None: it loads as ``sample``)."""
    folder.mkdir()
    (folder / "directory").mkdir()
    os.mkfifo(folder / "fifo")
    (folder / "dev_null").symlink_to("/dev/null")
    (folder / "empty").write_bytes(b"")
    (folder / "file").write_bytes(sample)
    (folder / "link").symlink_to(folder / "file")
    (folder / "dangling").symlink_to(folder / "nothing here")
    make_socket(folder / "socket")
    found: dict[str, tuple[Path, type[BaseException] | None]] = {
        "directory": (folder / "directory", IsADirectoryError),
        "FIFO": (folder / "fifo", FormatError),
        "socket": (folder / "socket", FormatError),
        "/dev/null": (folder / "dev_null", FormatError),
        "empty file": (folder / "empty", FormatError),
        "symlink to a file": (folder / "link", None),
        "dangling symlink": (folder / "dangling", FileNotFoundError),
        "missing file": (folder / "missing", FileNotFoundError),
    }
    if not IS_ROOT:  # root reads any file whatever its mode
        (folder / "unreadable").write_bytes(sample)
        (folder / "unreadable").chmod(0)
        found["unreadable file"] = (folder / "unreadable", PermissionError)
    return found


@pytest.mark.parametrize("fmt", FORMATS, ids=names(FORMATS))
def test_special_files_give_the_documented_error_without_blocking(tmp_path: Path, fmt: Format) -> None:
    sample = sample_bytes(Sample(fmt.name, fmt, {}), tmp_path)
    expected_load = quietly(fmt.load, _write(tmp_path / "plain", sample))
    for kind, (path, error) in special_files(tmp_path / "special", sample).items():
        for where, load in loaders(fmt):
            with must_not_block():
                if error is None:
                    assert_identical(expected_load, quietly(load, path))
                    continue
                with pytest.raises(error) as info:
                    quietly(load, path)
            if error is FormatError:
                assert_names_file(info.value, path)
            else:
                assert type(info.value) is error, (kind, where, info.value)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("fmt", WRITABLE, ids=names(WRITABLE))
def test_saving_over_what_is_not_a_writable_regular_file_is_refused_and_changes_nothing(
    tmp_path: Path, fmt: Format
) -> None:
    data = {"height_map": np.arange(12, dtype=np.float32).reshape(3, 4)}
    (tmp_path / "directory").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dev_null").symlink_to("/dev/null")
    make_socket(tmp_path / "socket")
    protected = _write(tmp_path / "protected", b"precious")
    protected.chmod(0o444)
    cases: list[tuple[Path, type[OSError], str]] = [
        (tmp_path / "directory", IsADirectoryError, "directory"),
        (tmp_path / "fifo", FileExistsError, "not a regular file (a FIFO), so it is not replaced"),
        (tmp_path / "dev_null", FileExistsError, "not a regular file (a character device), so it is not replaced"),
        (tmp_path / "socket", FileExistsError, "not a regular file (a socket), so it is not replaced"),
        (protected, PermissionError, "write-protected (no write permission), so it is not replaced"),
    ]
    before = {p.name: os.lstat(p) for p in tmp_path.iterdir()}
    for path, error, reason in cases:
        with must_not_block(), pytest.raises(error) as info:
            fmt.save(data, path)
        assert reason in str(info.value), (path.name, str(info.value))
    after = {p.name: os.lstat(p) for p in tmp_path.iterdir()}
    assert sorted(after) == sorted(before), "a temporary file was left behind"
    for name, was in before.items():
        now = after[name]
        assert (now.st_mode, now.st_ino, now.st_size, now.st_mtime_ns) == (
            was.st_mode,
            was.st_ino,
            was.st_size,
            was.st_mtime_ns,
        ), name
    assert protected.read_bytes() == b"precious" and stat.S_IMODE(protected.stat().st_mode) == 0o444
    assert list((tmp_path / "directory").iterdir()) == []
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


# --------------------------------------------------------------------------- recognition


@pytest.mark.parametrize("fmt", FORMATS, ids=names(FORMATS))
def test_a_file_is_recognised_by_its_content_whatever_its_extension(tmp_path: Path, fmt: Format) -> None:
    data = sample_bytes(Sample(fmt.name, fmt, {}), tmp_path)
    expected = quietly(fmt.load, _write(tmp_path / f"true{fmt.extensions[0]}", data))
    for other in [*registry.extensions(), ".bin", ""]:
        path = _write(tmp_path / f"named{other}", data)
        assert registry.recognise(path) is fmt, other
        assert_identical(expected, quietly(registry.load, path))


@pytest.mark.parametrize("fmt", FORMATS, ids=names(FORMATS))
def test_each_loader_refuses_the_files_of_the_other_formats(tmp_path: Path, fmt: Format) -> None:
    for other in FORMATS:
        if other is fmt:
            continue
        path = _write(
            tmp_path / f"{other.name}{fmt.extensions[0]}", sample_bytes(Sample(other.name, other, {}), tmp_path)
        )
        if other.within == fmt.name:  # an X3P file is a zip archive, which the NPZ loader may read
            continue
        with pytest.raises(FormatError) as info:
            quietly(fmt.load, path)
        assert_names_file(info.value, path)
