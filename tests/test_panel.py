"""The export and load panels, driven headless through their widgets (``.value``, ``.click()``).

No kernel or browser is needed: ipywidgets objects work without a frontend, so each test builds a
panel on a plain dict namespace, sets widget values and clicks buttons as a person would, and
checks what the panel shows and what lands on disk.
"""

from __future__ import annotations

import datetime as dt
import os
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_identical, png_size

import tmd_nb
from tmd_nb.formats import npz as npz_format
from tmd_nb.notebook import display
from tmd_nb.notebook.panel import ExportPanel, LoadPanel, common, parse_value


def _scan() -> dict:
    rng = np.random.default_rng(0)
    return {
        "height_map": rng.normal(size=(30, 40)).astype(np.float32),
        "units": "um",
        "x_length": 1.5,
        "count": 7,
        "flag": False,
        "nothing": None,
        "when": dt.datetime(2024, 5, 17, 14, 30, tzinfo=dt.UTC),
        "day": dt.date(2024, 5, 17),
        "mask": np.ones((30, 40), dtype=bool),
        "nested": {"operator": "A", "passes": [1, 2]},
        "gain": np.float32(1.25),
    }


@pytest.fixture
def ns() -> dict:
    return {"scan": _scan(), "flat": np.zeros((5, 6), dtype=np.int16)}


def _row(panel: ExportPanel, key: str):
    matches = [row for row in panel._rows if row.key == key]
    assert len(matches) == 1, f"{key!r}: {len(matches)} rows"
    return matches[0]


def _add(panel: ExportPanel, key: str, kind: str, text: str):
    panel._add_button.click()
    row = panel._rows[-1]
    row._key.value = key
    row._type.value = kind
    row._value.value = text
    return row


# --------------------------------------------------------------------------- picker


def test_picker_lists_exportable_variables_with_shape_and_dtype(ns: dict) -> None:
    ns.update(
        {
            "line": np.arange(5.0),  # 1-D
            "cube": np.zeros((2, 3, 4)),  # 3-D
            "words": np.array([["a", "b"]]),  # not numeric
            "masked": np.ma.masked_array(np.zeros((2, 2))),
            "no_map": {"units": "mm"},
            "bad_map": {"height_map": [[1, 2]]},  # a list, not an array
            "_hidden": np.zeros((2, 2)),  # IPython's _, _1, ... look like this
            "text": "hello",
            "cplx": np.ones((3, 3), dtype=np.complex64),
        }
    )
    panel = ExportPanel(namespace=ns)
    listed = dict((value, label) for label, value in panel._picker.options)
    assert list(listed) == ["cplx", "flat", "scan"]
    assert listed["flat"] == "flat  \u2014  5 x 6 int16"
    assert "30 x 40 float32" in listed["scan"] and "10 metadata keys" in listed["scan"]
    assert panel.selected == "cplx"  # the first one is selected, so there is something to look at


def test_picker_never_turns_an_array_into_text(ns: dict) -> None:
    class Untextable(np.ndarray):
        def __repr__(self) -> str:
            raise AssertionError("repr of a height map")

        def __str__(self) -> str:
            raise AssertionError("str of a height map")

        def __format__(self, spec: str) -> str:
            raise AssertionError("format of a height map")

        def tolist(self):
            raise AssertionError("tolist of a height map")

    ns["huge"] = np.zeros((50, 60)).view(Untextable)
    ns["wrapped"] = {"height_map": np.ones((4, 4)).view(Untextable), "mask": np.zeros(3).view(Untextable)}
    panel = ExportPanel(namespace=ns)
    panel.selected = "huge"
    panel.selected = "wrapped"
    assert _row(panel, "mask")._value.value == "array(3) float64"


def test_refresh_picks_up_new_variables_and_keeps_edits(ns: dict) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    _row(panel, "units")._value.value = "nm"
    ns["later"] = np.ones((8, 9))
    assert "later" not in [v for _, v in panel._picker.options]
    panel._refresh_button.click()
    assert "later" in [v for _, v in panel._picker.options]
    assert panel.selected == "scan" and _row(panel, "units")._value.value == "nm"  # edits survive
    ns["scan"] = {"height_map": np.zeros((3, 3)), "units": "mm"}  # a new object under the same name
    panel._refresh_button.click()
    assert _row(panel, "units")._value.value == "mm" and len(panel._rows) == 1
    del ns["scan"], ns["later"]
    panel.refresh()
    assert [v for _, v in panel._picker.options] == ["flat"] and panel.selected == "flat"


def test_empty_namespace_says_what_to_do() -> None:
    panel = ExportPanel(namespace={"x": 1})
    assert panel.selected is None
    assert "No height map found" in panel._empty_note.value
    assert panel._save_button.disabled
    assert panel.save() is None and "no height map" in panel.status


def test_without_ipython_a_namespace_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    # no running shell, even when another test module left IPython's singleton behind
    monkeypatch.setattr("IPython.get_ipython", lambda: None)
    with pytest.raises(RuntimeError, match=r"namespace=globals\(\)"):
        ExportPanel()
    with pytest.raises(RuntimeError, match="LoadPanel"):
        LoadPanel()
    with pytest.raises(TypeError, match="dict of variables"):
        ExportPanel(namespace=[1, 2])  # type: ignore[arg-type]


def test_selected_setter_names_unknown_variables(ns: dict) -> None:
    panel = ExportPanel(namespace=ns)
    with pytest.raises(KeyError, match="'nope' is not an exportable height map"):
        panel.selected = "nope"


# --------------------------------------------------------------------------- preview


def test_preview_shows_picture_and_summary(ns: dict) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    width, height = png_size(panel._preview_image.value)
    assert 100 < width < 600 and 100 < height < 600
    summary = panel._summary.value
    array = ns["scan"]["height_map"]
    assert "30 x 40" in summary and "float32" in summary
    assert f"min {float(array.min()):.6g}" in summary and f"max {float(array.max()):.6g}" in summary
    assert "units" not in summary  # the metadata is in the editor, not repeated here
    ns["ints"] = np.array([[123456789, -5]])
    panel.refresh()
    panel.selected = "ints"
    assert "min -5, max 123456789" in panel._summary.value  # integers in full, not 1.23457e+08


def test_panels_summarise_finite_points_and_count_the_missing_ones(tmp_path: Path) -> None:
    import warnings

    holed = np.arange(12.0).reshape(3, 4)
    holed[0, :3] = np.nan
    nothing = np.full((3, 4), np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning about an empty range, no matplotlib one
        # ...but a library's own deprecation notices are not ours (ipywidgets 8.0 on a newer ipykernel)
        warnings.simplefilter("default", DeprecationWarning)
        panel = ExportPanel(namespace={"holed": holed, "nothing": nothing})
        panel.selected = "holed"
        assert "min 3, max 11, mean 7 of 9 finite points; left out: 3 missing (NaN)" in panel._summary.value
        panel.selected = "nothing"
        assert "no heights: all 12 points are missing (NaN)" in panel._summary.value
        assert png_size(panel._preview_image.value)[0] > 100
        tmd_nb.export_to_npz({"height_map": nothing}, tmp_path / "nothing.npz")
        loader = LoadPanel(namespace={}, directory=tmp_path)
        loader.path = "nothing.npz"
    assert "no heights: all 12 points are missing (NaN)" in loader._summary.value


def test_preview_of_4000_by_4000_is_drawn_once_from_a_downsampled_view(monkeypatch: pytest.MonkeyPatch) -> None:
    # The work is counted, not timed: one picture per selection, and only a view of at most
    # 256 x 256 values is converted and drawn, whatever the size of the map.
    big = np.random.default_rng(1).random((4000, 4000))
    panel = ExportPanel(namespace={"a_small": np.zeros((2, 2)), "big": big})
    assert panel.selected == "a_small"
    pictures: list[tuple[int, ...]] = []
    drawn: list[tuple[int, ...]] = []
    render, convert = common.preview_png, display._as_float
    monkeypatch.setattr(common, "preview_png", lambda array, **kw: pictures.append(array.shape) or render(array, **kw))
    monkeypatch.setattr(display, "_as_float", lambda small: drawn.append(small.shape) or convert(small))
    panel._picker.value = "big"
    assert pictures == [(4000, 4000)]
    assert drawn and all(rows <= 256 and cols <= 256 for rows, cols in drawn), drawn
    width, height = png_size(panel._preview_image.value)
    assert width < 600 and height < 600  # a small picture, drawn from a downsampled view
    assert "4000 x 4000" in panel._summary.value


def test_empty_height_map_is_listed_but_not_drawn() -> None:
    panel = ExportPanel(namespace={"empty": np.zeros((0, 5))})
    assert panel._preview_image.layout.display == "none"
    assert "No picture" in panel._summary.value


# --------------------------------------------------------------------------- metadata editor


def test_rows_are_prefilled_typed_and_read_only_where_needed(ns: dict) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    shown = {
        row.key: (row.readonly, row._type.value if not row.readonly else None, row._value.value) for row in panel._rows
    }
    assert shown == {
        "units": (False, "str", "um"),
        "x_length": (False, "float", "1.5"),
        "count": (False, "int", "7"),
        "flag": (False, "bool", "False"),
        "nothing": (False, "None", ""),
        "when": (False, "datetime", "2024-05-17T14:30:00+00:00"),
        "day": (False, "date", "2024-05-17"),
        "mask": (True, None, "array(30, 40) bool"),
        "nested": (True, None, "dict with 2 keys: {'operator': 'A', 'passes': [1, 2]}"),
        "gain": (False, "float32", "1.25"),
    }
    assert _row(panel, "mask")._value.disabled and _row(panel, "mask")._key.disabled
    assert panel.metadata["mask"] is ns["scan"]["mask"]  # the very object, saved unchanged


def test_untouched_rows_save_every_value_exactly(tmp_path: Path) -> None:
    meta = {
        "neg_zero": -0.0,
        "nan": float("nan"),
        "inf": float("-inf"),
        "tiny": 5e-324,
        "big": 2**70,
        "text": "tab\tand\nnewline",
        "unicode": "µm \u00e5",
        "tuple": (1, "a", None, 2.5),
        "list": [True, 1, 1.0],
        "complex": 1 - 2j,
        "bytes": b"\x00\xff",
        "naive": dt.datetime(2024, 1, 2, 3, 4, 5, 678901),
        "offset": dt.datetime(2024, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
        "zone": dt.datetime(2024, 1, 2, tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Paris")),
        "delta": dt.timedelta(seconds=3),
        "path": Path("/data/scan.tmd"),
        "deep": [[1, 2], [3]],
    }
    data = {"height_map": np.arange(12, dtype=">f8").reshape(3, 4), **meta}
    panel = ExportPanel(namespace={"data": data})
    readonly = {row.key for row in panel._rows if row.readonly}
    assert readonly == {"zone", "delta", "path", "deep"}  # the editor cannot show these exactly
    panel.path = tmp_path / "same.npz"
    written = panel.save()
    assert written == str(tmp_path / "same.npz"), panel.status
    assert_identical(data, tmd_nb.load_from_npz(written))


def test_added_rows_are_saved_with_their_types(ns: dict, tmp_path: Path) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    _add(panel, "operator", "str", "  J. Doe ")
    _add(panel, "passes", "int", "3")
    _add(panel, "pitch", "float", "0.25")
    _add(panel, "ok", "bool", "yes")
    _add(panel, "none", "None", "")
    _add(panel, "taken", "datetime", "2024-05-17T14:30:00Z")
    _add(panel, "day", "date", "2024-05-17")
    _add(panel, "shape", "literal", "(5, 6)")
    _add(panel, "z", "literal", "1+2j")
    assert all(row.error is None for row in panel._rows), [row.error for row in panel._rows]
    panel.path = tmp_path / "typed.npz"
    panel._save_button.click()
    assert panel.status.startswith("Saved flat to "), panel.status
    back = tmd_nb.load_from_npz(tmp_path / "typed.npz")
    expected = {
        "height_map": ns["flat"],
        "operator": "  J. Doe ",
        "passes": 3,
        "pitch": 0.25,
        "ok": True,
        "none": None,
        "taken": dt.datetime(2024, 5, 17, 14, 30, tzinfo=dt.UTC),
        "day": dt.date(2024, 5, 17),
        "shape": (5, 6),
        "z": 1 + 2j,
    }
    assert_identical(expected, back)


def test_numpy_floats_show_their_shortest_repr_and_save_in_their_own_dtype(tmp_path: Path) -> None:
    meta = {
        "x_length": np.float32(2.52),
        "pitch": np.float64(0.1),
        "tiny": np.float32(1e-45),
        "neg_zero": np.float32(-0.0),
        "gap": np.float32("nan"),
    }
    panel = ExportPanel(namespace={"scan": {"height_map": np.zeros((2, 2), np.float32), **meta}})
    shown = {row.key: (row.readonly, row._type.value, row._value.value) for row in panel._rows}
    assert shown == {
        "x_length": (False, "float32", "2.52"),
        "pitch": (False, "float64", "0.1"),
        "tiny": (False, "float32", "1e-45"),
        "neg_zero": (False, "float32", "-0.0"),
        "gap": (False, "float32", "nan"),
    }
    panel.path = tmp_path / "f.npz"
    assert panel.save() is not None, panel.status
    assert_identical({"height_map": np.zeros((2, 2), np.float32), **meta}, tmd_nb.load_from_npz(tmp_path / "f.npz"))
    row = _row(panel, "x_length")
    row._value.value = "1e39"
    assert row.error == "'1e39' is too large for float32"
    row._value.value = "2.5x"
    assert row.error == "'2.5x' is not a number"
    row._value.value = "3.25"
    assert row.error is None and type(row.parsed) is np.float32 and row.parsed == np.float32(3.25)


def test_type_labels_fit_their_dropdown_and_literal_explains_itself(ns: dict) -> None:
    from tmd_nb.notebook.panel.values import VALUE_TYPES

    width_em = 8.5  # the type dropdown's width, with room for its arrow
    assert all(len(label) * 0.62 + 1.6 <= width_em for label, _ in VALUE_TYPES), VALUE_TYPES
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    _add(panel, "shape", "literal", "")
    assert panel._rows[-1]._type.layout.width == "8.5em"
    assert panel._rows[-1]._value.placeholder == "a Python literal: [1, 2], (0.5, 'mm'), 1+2j, b'raw'"


def test_paths_in_the_home_folder_are_shown_from_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages name files as people write them (~/scans/a.npz), not by the home folder's full path."""
    home = tmp_path / "home"
    (home / "scans").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    panel = ExportPanel(namespace={"flat": np.zeros((5, 6))})
    panel.path = home / "scans" / "a.npz"
    assert panel.save() == str(home / "scans" / "a.npz")  # the API returns the real path
    assert panel.status.startswith("Saved flat to ~/scans/a.npz ("), panel.status
    assert "~/scans/a.npz already exists." in panel._exists_note.value
    loader = LoadPanel(namespace={}, directory=home / "scans")
    loader.path = "a.npz"
    assert loader.status.startswith("Loaded ~/scans/a.npz ("), loader.status
    loader.name = "a"
    loader.bind()
    assert loader.status == "a now holds the height map and 0 metadata keys from ~/scans/a.npz."
    elsewhere = tmp_path / "b.npz"  # outside the home folder: the full path
    panel.path = elsewhere
    assert panel.save() and panel.status.startswith(f"Saved flat to {elsewhere} (")


def test_suggested_keys_bring_their_type(ns: dict) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    buttons = {button.description: button for button in panel._suggest_buttons}
    # the unit keys of the one convention (docs/FORMAT.md), not the shorthand
    assert set(buttons) == {"lateral_unit", "height_unit", "x_length", "y_length", "source", "timestamp"}
    buttons["x_length"].click()
    row = panel._rows[-1]
    assert (row.key, row._type.value) == ("x_length", "float")
    assert "not a number" in row.error  # an empty float is not a value: it must be typed
    row._value.value = "12.5"
    before = dt.datetime.now().astimezone().replace(microsecond=0)  # the stamp is to the second
    buttons["timestamp"].click()
    after = dt.datetime.now().astimezone()
    stamp = panel._rows[-1]
    assert stamp._type.value == "datetime" and stamp.error is None
    assert before <= stamp.parsed <= after  # the time of the click, with its zone: no slack to choose
    assert "timestamp" not in panel._rows[0]._key.options  # a key in use is no longer suggested
    assert buttons["x_length"].disabled and not buttons["height_unit"].disabled
    buttons["x_length"].click()  # already there: no duplicate row (headless, a disabled button still clicks)
    assert [row.key for row in panel._rows] == ["x_length", "timestamp"]
    assert "already in the metadata" in panel.status
    # Typing a suggested key into a fresh row also picks its type.
    panel._add_button.click()
    panel._rows[-1]._key.value = "y_length"
    assert panel._rows[-1]._type.value == "float"


@pytest.mark.parametrize(
    ("kind", "text", "reason"),
    [
        ("int", "1.5", "not a whole number"),
        ("int", "", "not a whole number"),
        ("float", "1,5", "not a number"),
        ("bool", "maybe", "not True or False"),
        ("None", "x", "takes no text"),
        ("datetime", "17/05/2024", "not a date and time"),
        ("date", "2024-13-01", "not a date"),
        ("literal", "[1, 2", "not a Python literal"),
        ("literal", "{1, 2}", "cannot store"),  # a set parses but has no lossless storage
    ],
)
def test_invalid_value_marks_its_row_and_blocks_saving(
    ns: dict, tmp_path: Path, kind: str, text: str, reason: str
) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    panel.path = tmp_path / "blocked.npz"
    row = _add(panel, "sample", kind, text)
    assert reason in row.error
    assert "\u2717" in row._check.value and reason in row._check.value
    assert row._value.layout.border and "tmd-invalid" in row._dom_classes
    assert panel._save_button.disabled
    assert "metadata 'sample'" in panel._blocker_note.value
    assert panel.save() is None
    assert panel.status.startswith("Not saved: metadata 'sample'")
    assert not (tmp_path / "blocked.npz").exists()
    with pytest.raises(ValueError, match="metadata 'sample'"):
        _ = panel.metadata
    row._type.value = "str"  # any text is a valid str: the mark goes, saving is possible again
    assert row.error is None and not row._value.layout.border and not panel._save_button.disabled


def test_key_problems_block_saving(ns: dict) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    first = _add(panel, "", "int", "1")
    assert first.error == "the key is empty" and "metadata row 1" in panel._blocker_note.value
    first._key.value = "height_map"
    assert "array itself" in first.error
    first._key.value = "a"
    second = _add(panel, "a", "int", "2")
    assert "used 2 times" in first.error and "used 2 times" in second.error
    assert "and 1 more invalid row" in panel._blocker_note.value
    assert panel._save_button.disabled
    second._remove.click()
    assert panel._rows == [first] and first.error is None and not panel._save_button.disabled


def test_removing_a_read_only_row_drops_it_and_unstorable_values_block(ns: dict, tmp_path: Path) -> None:
    ns["odd"] = {"height_map": np.zeros((2, 2)), "keep": 1, "weird": {1, 2}, "obj": object()}
    panel = ExportPanel(namespace=ns)
    panel.selected = "odd"
    assert "cannot be saved" in _row(panel, "weird").error
    assert panel._save_button.disabled and "metadata 'weird'" in panel._blocker_note.value
    _row(panel, "weird")._remove.click()
    _row(panel, "obj")._remove.click()
    panel.path = tmp_path / "odd.npz"
    assert panel.save() is not None, panel.status
    assert_identical({"height_map": ns["odd"]["height_map"], "keep": 1}, tmd_nb.load_from_npz(tmp_path / "odd.npz"))
    assert "weird" in ns["odd"]  # the user's dict is never modified


def test_editing_does_not_touch_the_users_dict(ns: dict, tmp_path: Path) -> None:
    original = dict(ns["scan"])
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    _row(panel, "units")._value.value = "nm"
    _row(panel, "count")._remove.click()
    _add(panel, "new", "int", "5")
    panel.path = tmp_path / "s.npz"
    assert panel.save()
    assert ns["scan"].keys() == original.keys() and ns["scan"]["units"] == "um"
    back = tmd_nb.load_from_npz(tmp_path / "s.npz")
    assert back["units"] == "nm" and "count" not in back and back["new"] == 5
    assert list(back)[:3] == ["height_map", "units", "x_length"]  # row order is key order


# --------------------------------------------------------------------------- output


def _member_bytes(path: Path) -> list[tuple]:
    """Each member's name, method, CRC, sizes and raw (still compressed) bytes: the archive minus its dates."""
    out = []
    with zipfile.ZipFile(path) as zf, open(path, "rb") as raw:
        for info in zf.infolist():
            raw.seek(info.header_offset)
            header = raw.read(30)
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            raw.seek(info.header_offset + 30 + name_len + extra_len)
            out.append((info.filename, info.compress_type, info.CRC, info.file_size, raw.read(info.compress_size)))
    return out


@pytest.mark.parametrize("fmt", ["npz", "npz-uncompressed"])
def test_saved_file_is_what_export_to_npz_writes(ns: dict, tmp_path: Path, fmt: str) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    panel.format = fmt
    assert panel.path == "scan.npz"  # suggested from the variable name, relative to the working directory
    panel.path = tmp_path / "panel.npz"
    panel._save_button.click()
    reference = tmd_nb.export_to_npz(ns["scan"], tmp_path / "reference.npz", compress=fmt == "npz")
    assert_identical(tmd_nb.load_from_npz(reference), tmd_nb.load_from_npz(tmp_path / "panel.npz"))
    assert _member_bytes(tmp_path / "panel.npz") == _member_bytes(Path(reference))
    methods = {m[1] for m in _member_bytes(Path(reference))}
    assert methods == ({zipfile.ZIP_DEFLATED} if fmt == "npz" else {zipfile.ZIP_STORED})


@pytest.mark.parametrize("level", ["fastest", "balanced", "smallest"])
def test_level_choice_is_what_export_to_npz_writes_at_that_level(ns: dict, tmp_path: Path, level: str) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    assert panel.level == "fastest"  # the default
    panel.level = level
    panel.path = tmp_path / "panel.npz"
    assert panel.save() == str(tmp_path / "panel.npz")
    reference = tmd_nb.export_to_npz(ns["scan"], tmp_path / "reference.npz", level=level)
    assert _member_bytes(tmp_path / "panel.npz") == _member_bytes(Path(reference))
    assert_identical(tmd_nb.load_from_npz(reference), tmd_nb.load_from_npz(tmp_path / "panel.npz"))


def test_level_choice_shows_for_compressing_formats_only(ns: dict) -> None:
    panel = ExportPanel(namespace=ns)
    assert [value for _, value in panel._level.options] == ["fastest", "balanced", "smallest"]
    shown = {}
    for fmt in ["npz", "npz-uncompressed", "npy", "tmd", "x3p", "gwy"]:
        panel.format = fmt
        shown[fmt] = panel._level.layout.display != "none"
    assert shown == {"npz": True, "npz-uncompressed": False, "npy": False, "tmd": False, "x3p": True, "gwy": False}
    with pytest.raises(ValueError, match="^unknown level 'fast'; choose one of fastest, balanced, smallest$"):
        panel.level = "fast"


def test_level_is_not_passed_to_formats_without_one(ns: dict, tmp_path: Path) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    panel.level = "smallest"
    panel.format = "npy"
    panel.path = tmp_path / "flat.npy"
    assert panel.save() == str(tmp_path / "flat.npy")  # the level is for NPZ only: not an error here
    panel.format = "npz-uncompressed"
    panel.path = tmp_path / "flat.npz"
    assert panel.save() == str(tmp_path / "flat.npz")
    assert {m[1] for m in _member_bytes(tmp_path / "flat.npz")} == {zipfile.ZIP_STORED}


def test_npy_says_metadata_is_not_stored_without_a_raw_warning(ns: dict, tmp_path: Path) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    panel._format.value = "npy"
    assert panel.path == "scan.npy"  # the suggested name follows the format
    panel.path = tmp_path / "scan.npy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert panel.save() == str(tmp_path / "scan.npy")
    assert "metadata" in panel.status and "not stored" in panel.status and "choose NPZ, X3P, GWY or SDF" in panel.status
    assert_identical(ns["scan"]["height_map"], tmd_nb.load_from_npy(tmp_path / "scan.npy"))
    panel.selected = "flat"  # no metadata: nothing to warn about
    panel.path = tmp_path / "flat.npy"
    panel.save()
    assert panel.status.startswith("Saved flat") and "not stored" not in panel.status


def test_tmd_saves_and_names_unstorable_keys(ns: dict, tmp_path: Path) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    panel.format = "tmd"
    panel.path = tmp_path / "scan.tmd"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert panel.save(), panel.status
    assert "'count'" in panel.status  # the keys a .tmd file cannot hold are named in the status
    assert "units" not in panel.status  # ... and not the unit, honoured by converting into mm
    back = tmd_nb.load_tmd(tmp_path / "scan.tmd")
    expected = (ns["scan"]["height_map"].astype(np.float64) / 1000).astype(np.float32)  # um -> mm
    assert np.array_equal(back["height_map"], expected)
    assert back["x_length"] == np.float32(0.0015)


def test_errors_become_one_plain_sentence(ns: dict, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_bytes(b"x")
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    panel.path = tmp_path / "a_file" / "sub" / "inside.npz"  # a file where a folder should be
    assert panel._save_button.disabled
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in panel._blocker_note.value
    panel.path = tmp_path / ("x" * 300 + ".npz")  # fine to type, but too long once saving starts
    assert not panel._save_button.disabled
    assert panel.save() is None
    assert panel.status.startswith("Not saved: File name too long: ") and "Traceback" not in panel.status
    assert panel._progress.bar_style == "danger"
    ns["fine"] = np.array([[0.1, 0.2]])  # float64 values float32 would round: TMD refuses them
    panel.refresh()
    panel.selected = "fine"
    panel.format = "tmd"
    panel.path = tmp_path / "fine.tmd"
    assert panel.save() is None
    assert panel.status.startswith("Not saved: ") and "float32" in panel.status
    assert not (tmp_path / "fine.tmd").exists()
    assert not panel._save_button.disabled  # ready to try again


def test_folder_and_empty_path_block_saving(ns: dict, tmp_path: Path) -> None:
    panel = ExportPanel(namespace=ns)
    panel.path = ""
    assert panel._save_button.disabled and "type a file name" in panel._blocker_note.value
    panel.path = tmp_path
    assert panel._save_button.disabled and "is a folder" in panel._blocker_note.value


def test_existing_file_needs_explicit_overwrite(ns: dict, tmp_path: Path) -> None:
    target = tmp_path / "scan.npz"
    target.write_bytes(b"old content")
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    panel.path = target
    assert "already exists" in panel._exists_note.value
    assert panel._overwrite.layout.display is None and panel._overwrite.value is False
    assert panel._save_button.disabled
    panel._save_button.click()  # a disabled button's handlers still run headless: save() must refuse too
    assert target.read_bytes() == b"old content" and "Overwrite" in panel.status
    panel._overwrite.value = True
    assert not panel._save_button.disabled and panel._save_button.description == "Overwrite"
    panel.path = tmp_path / "other.npz"  # changing the path drops the confirmation
    panel.path = target
    assert panel._overwrite.value is False and panel._save_button.disabled
    panel._overwrite.value = True
    panel._save_button.click()
    assert panel.status.startswith("Saved scan to"), panel.status
    assert tmd_nb.load_from_npz(target)["units"] == "um"
    # The file now exists: saving again needs a new confirmation.
    assert panel._overwrite.value is False and panel._save_button.disabled
    assert "already exists" in panel._exists_note.value


def test_status_reports_path_size_and_time(ns: dict, tmp_path: Path) -> None:
    panel = ExportPanel(namespace=ns)
    panel.selected = "scan"
    panel.path = tmp_path / "deep" / "er" / "scan.npz"  # missing folders are created
    written = panel.save()
    size = os.path.getsize(written)
    assert written in panel.status
    unit_size = f"{size} B" if size < 1024 else f"{size / 1024:.1f} KiB"
    assert f"({unit_size}, " in panel.status and panel.status.rstrip(".").endswith(" s)")


def test_progress_bar_moves_while_saving_a_large_map(tmp_path: Path) -> None:
    big = np.random.default_rng(2).random((2000, 2000))  # 32 MB: several chunks
    panel = ExportPanel(namespace={"big": big})
    seen: list[float] = []
    panel._progress.observe(lambda change: seen.append(change["new"]), "value")
    panel.path = tmp_path / "big.npz"
    assert panel.save()
    assert seen[-1] == 1.0 and panel._progress.bar_style == "success"
    moving = [v for v in seen if 0.0 < v < 1.0]
    assert len(moving) >= 2, f"progress values: {seen}"
    assert moving == sorted(moving)


def test_relative_path_is_relative_to_the_working_directory(
    ns: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    panel = ExportPanel(namespace=ns)
    panel.selected = "flat"
    assert panel.save() == str(tmp_path / "flat.npz")
    assert (tmp_path / "flat.npz").is_file()


def test_unexpected_errors_still_end_in_the_status_line(
    ns: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(npz_format, "write_npz", broken)
    panel = ExportPanel(namespace=ns)
    panel.path = tmp_path / "x.npz"
    assert panel.save() is None
    assert panel.status == "Not saved: unexpected RuntimeError: disk on fire"
    assert not panel._save_button.disabled


def test_parse_value_rejects_unknown_types() -> None:
    with pytest.raises(ValueError, match="unknown value type"):
        parse_value("decimal", "1")
    assert parse_value("str", " x ") == " x "
    assert parse_value("float", "nan") != parse_value("float", "nan")  # a real NaN, not the text "nan"


# --------------------------------------------------------------------------- load panel


def test_load_panel_previews_and_binds(ns: dict, tmp_path: Path) -> None:
    tmd_nb.export_to_npz(ns["scan"], tmp_path / "my scan-1.npz")
    tmd_nb.export_to_npy(ns["flat"], tmp_path / "flat.npy")
    (tmp_path / "notes.txt").write_text("not a height map")
    target: dict = {}
    panel = LoadPanel(namespace=target, directory=tmp_path)
    assert list(panel._path.options) == [str(tmp_path / "flat.npy"), str(tmp_path / "my scan-1.npz")]
    assert panel._bind_button.disabled
    panel._path.value = "my scan-1.npz"
    assert panel.status.startswith(f"Loaded {tmp_path / 'my scan-1.npz'}")
    assert panel._progress.value == 1.0 and panel._progress.bar_style == "success"
    assert "30 x 40" in panel._summary.value and "units" in panel._summary.value
    assert png_size(panel._preview_image.value)[0] < 600
    assert panel.name == "my_scan_1" and not panel._bind_button.disabled
    panel._bind_button.click()
    assert_identical(tmd_nb.load_from_npz(tmp_path / "my scan-1.npz"), dict(target["my_scan_1"]))
    assert "my_scan_1 now holds the height map and 10 metadata keys" in panel.status
    assert panel._name_note.value == ""  # no warning about replacing what was just bound

    panel._path.value = str(tmp_path / "flat.npy")
    assert panel.name == "flat"  # a suggested name follows the file
    panel.name = "flat_map"
    panel._what.value = "array"
    assert "already exists" not in panel._name_note.value
    panel._bind_button.click()
    assert_identical(ns["flat"], target["flat_map"])
    target["flat_map"] = "something else"
    panel._validate()
    assert "Bind will replace it" in panel._name_note.value
    panel._bind_button.click()
    assert "replaced the previous value" in panel.status


def test_load_panel_suggested_name_follows_the_file(tmp_path: Path) -> None:
    tmd_nb.export_to_npy(np.zeros((2, 2)), tmp_path / "first.npy")
    tmd_nb.export_to_npy(np.ones((2, 2)), tmp_path / "2nd.npy")
    panel = LoadPanel(namespace={"first": 1}, directory=tmp_path)
    panel.path = "first.npy"
    assert panel.name == "first" and "Bind will replace it" in panel._name_note.value
    panel.path = "2nd.npy"
    assert panel.name == "scan_2nd"
    panel.name = "class"
    assert panel._bind_button.disabled and "not a valid Python variable name" in panel._name_note.value
    assert panel.bind() is None and panel.status.startswith("Not bound:")


def test_load_panel_state_after_bind_follows_the_next_file(tmp_path: Path) -> None:
    tmd_nb.export_to_npy(np.zeros((2, 2)), tmp_path / "one.npy")
    tmd_nb.export_to_npy(np.ones((3, 3)), tmp_path / "two.npy")
    target: dict = {}
    panel = LoadPanel(namespace=target, directory=tmp_path)
    panel.path = "one.npy"
    panel.name = "surface"  # typed, so it stays when another file is picked
    assert panel.bind() == "surface" and panel._name_note.value == ""
    panel.path = "two.npy"
    assert panel.name == "surface" and panel.data["height_map"].shape == (3, 3)
    # Bind would now put other data over what it bound before: that is a replacement again
    assert "Bind will replace it" in panel._name_note.value
    assert panel.bind() == "surface" and "replaced the previous value" in panel.status
    assert target["surface"]["height_map"].shape == (3, 3) and panel._name_note.value == ""
    panel.path = "missing.npy"  # nothing loaded: the bar no longer shows the last load's success
    assert panel.data is None and panel._bind_button.disabled
    assert panel._progress.value == 0.0 and panel._progress.bar_style == ""


def test_load_panel_errors_are_plain(tmp_path: Path) -> None:
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    panel = LoadPanel(namespace={}, directory=tmp_path)
    panel.path = "broken.npz"
    assert panel.status.startswith("Could not load: ") and "broken.npz" in panel.status
    assert panel._progress.bar_style == "danger"
    assert "Traceback" not in panel.status and panel._bind_button.disabled and panel.data is None
    panel.path = "missing.npz"
    assert panel.status == f"No file at {tmp_path / 'missing.npz'}."
    panel.path = str(tmp_path)
    assert "is a folder" in panel.status


def test_load_panel_reads_tmd_scans(tmd_samples: Path) -> None:
    panel = LoadPanel(namespace={}, directory=tmd_samples)
    assert str(tmd_samples / "v2_Vickers Indentation.tmd") in panel._path.options
    panel.path = "v2_Vickers Indentation.tmd"
    assert panel.data is not None and panel.data["height_map"].shape == (400, 400)
    assert panel.name == "v2_Vickers_Indentation"
    assert panel.bind() == "v2_Vickers_Indentation"


@pytest.mark.parametrize("fmt", ["x3p", "gwy", "sdf"])
def test_exchange_formats_are_offered_and_keep_the_metadata(ns: dict, tmp_path: Path, fmt: str) -> None:
    panel = ExportPanel(namespace=ns)
    assert fmt in [value for _, value in panel._format.options]
    panel.selected = "scan"
    panel._format.value = fmt
    assert panel.path == f"scan.{fmt}"
    panel.path = tmp_path / f"scan.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert panel.save() == str(tmp_path / f"scan.{fmt}")
    back = tmd_nb.load(tmp_path / f"scan.{fmt}")
    assert back.keys() == ns["scan"].keys()
    assert np.array_equal(back["height_map"], ns["scan"]["height_map"])
    loader = LoadPanel(namespace={}, directory=str(tmp_path))
    assert str(tmp_path / f"scan.{fmt}") in loader._path.options
