"""The public API's one naming scheme: ``load_from_<format>(file_path, *, ...)`` and
``export_to_<format>(data, output_path, *, ...)`` for every format of the registry, the former
names and keywords kept working, ``load(mmap=True)`` and NPZ's ``compress``/``level``."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, require

import tmd_nb
from tmd_nb.formats import registry

HEIGHTS = np.arange(12, dtype=np.float32).reshape(3, 4)
NAMES = [f.name for f in registry.FORMATS]
#: The TMD toolkit's signatures, a promise: these parameters may be given by position.
TOOLKIT_POSITIONAL = {"load_from_npy": ["file_path", "mmap"], "export_to_npz": ["data", "output_path", "compress"]}
#: The former reader names, each an alias of the scheme's name.
ALIASES = {f"load_{n}": f"load_from_{n}" for n in ("tmd", "x3p", "gwy", "sdf", "instrument")}


def positional(func: object) -> list[str]:
    params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@pytest.mark.parametrize("name", NAMES)
def test_every_format_has_a_reader_and_writer_named_by_the_scheme(name: str) -> None:
    reader, writer = f"load_from_{name}", f"export_to_{name}"
    assert reader in tmd_nb.__all__
    assert positional(getattr(tmd_nb, reader)) == TOOLKIT_POSITIONAL.get(reader, ["file_path"])
    if registry.by_name(name).save is None:  # read only: no writer to name
        assert writer not in tmd_nb.__all__ and not hasattr(tmd_nb, writer)
    else:
        assert writer in tmd_nb.__all__
        assert positional(getattr(tmd_nb, writer)) == TOOLKIT_POSITIONAL.get(writer, ["data", "output_path"])
    assert "progress" in inspect.signature(getattr(tmd_nb, reader)).parameters


def test_load_and_save_name_their_paths_as_the_readers_and_writers_do() -> None:
    assert positional(tmd_nb.load) == ["file_path"]
    assert positional(tmd_nb.save) == ["data", "output_path"]
    assert inspect.signature(tmd_nb.load).parameters["mmap"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(("old", "new"), sorted(ALIASES.items()))
def test_former_reader_names_are_documented_aliases(old: str, new: str) -> None:
    assert getattr(tmd_nb, old) is getattr(tmd_nb, new)
    assert old in tmd_nb.__all__
    assert f"``{old}`` is this function under its former name" in (getattr(tmd_nb, new).__doc__ or "")


def test_an_alias_reads_what_the_scheme_name_reads(tmp_path: Path) -> None:
    path = tmd_nb.export_to_tmd({"height_map": HEIGHTS}, tmp_path / "a.tmd")
    a, b = tmd_nb.load_tmd(path), tmd_nb.load_from_tmd(path)
    assert a.keys() == b.keys() and np.array_equal(a["height_map"], b["height_map"])


@pytest.mark.parametrize(
    ("call", "new"),
    [
        (lambda p: tmd_nb.load(path=p), "file_path"),
        (lambda p: tmd_nb.load_tmd(path=p), "file_path"),
        (lambda p: tmd_nb.load_from_tmd(path=p), "file_path"),
    ],
)
def test_former_path_keyword_of_readers_still_works_and_warns(tmp_path: Path, call, new: str) -> None:
    path = tmd_nb.export_to_tmd({"height_map": HEIGHTS}, tmp_path / "a.tmd")
    with pytest.warns(tmd_nb.TmdNbDeprecationWarning, match=rf"\(path=\.\.\.\) is now \w+\({new}=\.\.\.\)$") as rec:
        back = call(path)
    assert np.array_equal(back["height_map"], HEIGHTS)
    assert [w.filename for w in rec] == [__file__]  # the caller's line, not tmd_nb's


def test_former_path_keyword_of_save_still_works_and_warns(tmp_path: Path) -> None:
    with pytest.warns(tmd_nb.TmdNbDeprecationWarning, match=r"^save\(path=\.\.\.\) is now save\(output_path=\.\.\.\)$"):
        written = tmd_nb.save({"height_map": HEIGHTS}, path=tmp_path / "a.npz")
    assert np.array_equal(tmd_nb.load(written)["height_map"], HEIGHTS)


def test_old_and_new_keyword_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^load\(\) got both path= and file_path=; give file_path= only$"):
        tmd_nb.load(path=tmp_path / "a", file_path=tmp_path / "b")


@pytest.mark.parametrize("fmt", [f for f in registry.FORMATS if f.mmap], ids=lambda f: f.name)
def test_load_maps_the_formats_that_map(tmp_path: Path, fmt) -> None:
    path = tmd_nb.save({"height_map": HEIGHTS}, tmp_path / f"a{fmt.extensions[0]}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = tmd_nb.load(path, mmap=True)
    assert isinstance(back["height_map"], np.memmap)
    assert not back["height_map"].flags.writeable
    assert np.array_equal(back["height_map"], HEIGHTS)
    assert not isinstance(tmd_nb.load(path)["height_map"], np.memmap)


@pytest.mark.parametrize("fmt", [f for f in registry.FORMATS if not f.mmap], ids=lambda f: f.name)
def test_load_refuses_mmap_for_the_others_naming_the_format(tmp_path: Path, fmt) -> None:
    if fmt.save is None:  # read only: one of the shared samples
        path = ROOT.parent / "shared" / "data" / "instruments" / "10x10-one_channel_without_name.ibw"
        require(path.is_file(), f"instrument sample not found at {path} (it lives in shared/data/instruments)")
    else:
        path = Path(tmd_nb.save({"height_map": HEIGHTS}, tmp_path / f"a{fmt.extensions[0]}"))
    with pytest.raises(ValueError, match=r"^mmap=True applies to NPY or TMD files only; '.*' is " + fmt.title + "$"):
        tmd_nb.load(path, mmap=True)


def test_mmap_formats_are_npy_and_tmd() -> None:
    # The two whose heights lie raw in the file; a new one is a deliberate choice.
    assert sorted(f.name for f in registry.FORMATS if f.mmap) == ["npy", "tmd"]


@pytest.mark.parametrize("level", ["fastest", 6, 0])
def test_npz_refuses_a_level_with_compress_false(tmp_path: Path, level: object) -> None:
    out = tmp_path / "a.npz"
    out.write_bytes(b"old")
    message = rf"^level={level!r} and compress=False contradict each other \(a stored member has no level\); give one$"
    with pytest.raises(ValueError, match=message):
        tmd_nb.export_to_npz({"height_map": HEIGHTS}, out, False, level=level)
    with pytest.raises(ValueError, match=message):
        tmd_nb.save({"height_map": HEIGHTS}, out, compress=False, level=level)
    assert out.read_bytes() == b"old"  # refused before anything is written


def test_npz_compress_false_without_level_stores(tmp_path: Path) -> None:
    import zipfile

    path = tmd_nb.export_to_npz({"height_map": HEIGHTS}, tmp_path / "a.npz", compress=False, level=None)
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_the_deprecation_warning_is_shown_by_default() -> None:
    # A FutureWarning is shown to end users by Python's default filters; a DeprecationWarning is not.
    assert issubclass(tmd_nb.TmdNbDeprecationWarning, FutureWarning)
    assert issubclass(tmd_nb.TmdNbDeprecationWarning, tmd_nb.TmdNbWarning)
