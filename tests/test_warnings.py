"""Every warning of tmd_nb is a :class:`tmd_nb.TmdNbWarning`, filterable by its class, and points at
the caller's line (this file), not at tmd_nb's internals, however deep in tmd_nb it is raised."""

from __future__ import annotations

import hashlib
import inspect
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import gwyfile
import numpy as np
import pytest
import sdfio
import x3pio
from test_sdf import binary_header
from test_x3p import members_of, old_layout, write_zip

import tmd_nb
from tmd_nb import errors
from tmd_nb.formats import sdf

HEIGHTS = np.arange(12, dtype=np.float32).reshape(3, 4) / np.float32(8)
WARNINGS = [
    obj
    for name in tmd_nb.__all__
    if inspect.isclass(obj := getattr(tmd_nb, name)) and issubclass(obj, Warning) and obj is not tmd_nb.TmdNbWarning
]


def npy_metadata(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    return lambda: tmd_nb.save({"height_map": HEIGHTS, "operator": "me"}, tmp_path / "a.npy")


def tmd_metadata(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    return lambda: tmd_nb.export_to_tmd({"height_map": HEIGHTS, "operator": "me"}, tmp_path / "a.tmd")


def npz_python_text(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    path = tmp_path / "toolkit.npz"
    np.savez(path, height_map=HEIGHTS, metadata=np.array(str({("a", 1): 2})))
    return lambda: tmd_nb.load(path)


def x3p_modified(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    out = tmd_nb.export_to_x3p({"height_map": HEIGHTS, "operator": "me"}, tmp_path / "e.x3p")
    file = x3pio.read(out)
    file.layers[0].z[0, 0] += 1e-6
    file.save(out)
    return lambda: tmd_nb.load(out)


def x3p_checksum(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    members = members_of(x3p_samples["pyramid"])
    members["main.xml"] = members["main.xml"].replace(b"<Comment>comment</Comment>", b"<Comment>edited</Comment>")
    path = write_zip(tmp_path / "edited.x3p", members)
    return lambda: tmd_nb.load(path)


def x3p_legacy(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    members = members_of(x3p_samples["testing"])
    members["main.xml"] = old_layout(members["main.xml"])
    members["md5checksum.hex"] = hashlib.md5(members["main.xml"]).hexdigest().encode() + b" *main.xml\n"
    path = write_zip(tmp_path / "old.x3p", members)
    return lambda: tmd_nb.load_from_x3p(path)


def gwy_modified(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    out = tmd_nb.export_to_gwy({"height_map": HEIGHTS, "operator": "me"}, tmp_path / "e.gwy")
    container = gwyfile.load(out)
    container["/0/data"]["data"] = container["/0/data"]["data"] * 2
    container.tofile(out)
    return lambda: tmd_nb.load(out)


def sdf_modified(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    out = tmd_nb.export_to_sdf({"height_map": HEIGHTS, "operator": "me"}, tmp_path / "e.sdf")
    file = sdfio.read(out)
    file.data = file.data * 2
    file.save(out)
    return lambda: tmd_nb.load_from_sdf(out)


def sdf_trailer(tmp_path: Path, x3p_samples: dict[str, Path]) -> Callable[[], object]:
    path = tmp_path / "t.sdf"
    path.write_bytes(binary_header() + b"\0" * 32 + b"x" * (sdf.MAX_TRAILER_TEXT + 1))
    return lambda: tmd_nb.load(path)


CASES = [
    (npy_metadata, tmd_nb.MetadataNotStoredWarning),
    (tmd_metadata, tmd_nb.MetadataNotStoredWarning),
    (npz_python_text, tmd_nb.UndecodedMetadataWarning),
    (x3p_modified, tmd_nb.ModifiedFileWarning),
    (x3p_checksum, tmd_nb.ChecksumWarning),
    (x3p_legacy, tmd_nb.LegacyFormatWarning),
    (gwy_modified, tmd_nb.ModifiedFileWarning),
    (sdf_modified, tmd_nb.ModifiedFileWarning),
    (sdf_trailer, tmd_nb.DroppedContentWarning),
]


@pytest.mark.parametrize("category", WARNINGS, ids=lambda c: c.__name__)
def test_every_exported_warning_is_a_tmd_nb_warning(category: type[Warning]) -> None:
    assert issubclass(category, tmd_nb.TmdNbWarning) and issubclass(category, UserWarning)
    assert category.__module__ == "tmd_nb.errors" and (category.__doc__ or "").strip()


def test_the_warnings_exported_are_the_ones_errors_defines() -> None:
    defined = {n for n in errors.__all__ if n.endswith("Warning")}
    assert defined == {c.__name__ for c in WARNINGS} | {"TmdNbWarning"}


@pytest.mark.parametrize(("make", "category"), CASES, ids=[m.__name__ for m, _ in CASES])
def test_a_warning_points_at_the_callers_line(tmp_path, x3p_samples, make, category) -> None:
    call = make(tmp_path, x3p_samples)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    ours = [w for w in caught if issubclass(w.category, tmd_nb.TmdNbWarning)]
    assert [w.category for w in ours] == [category]
    # The lambda made in this file is the caller's code: the warning names it, not tmd_nb/formats/...
    assert ours[0].filename == __file__, ours[0].filename
    message = str(ours[0].message)
    first = message.split()[0]
    # One style: one line, starting with the file as 'path', a lower-case word or a format name (NPY).
    assert "\n" not in message and (first[0] in "'\"" or first.islower() or first.isupper()), message
    assert not re.search(r"[.:;] [A-Z][a-z]", message), message  # no second sentence starting anew


@pytest.mark.parametrize(("make", "category"), CASES, ids=[m.__name__ for m, _ in CASES])
def test_a_warning_is_filtered_by_the_tmd_nb_class(tmp_path, x3p_samples, make, category) -> None:
    call = make(tmp_path, x3p_samples)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tmd_nb.TmdNbWarning)
        with pytest.raises(category):
            call()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", tmd_nb.TmdNbWarning)
        call()  # silenced as a class, and nothing else is raised


def test_warn_points_past_every_tmd_nb_frame(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tmd_nb.export_to_npy({"height_map": HEIGHTS, "a": 1}, tmp_path / "a.npy")
        expected = inspect.currentframe().f_lineno - 1  # type: ignore[union-attr]
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, expected)]
