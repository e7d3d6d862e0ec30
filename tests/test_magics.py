"""%tmd_export / %tmd_load / %tmd_panel driven through a real IPython InteractiveShell."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import run, usage_error
from IPython.core.completer import provisionalcompleter
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from tmd_nb import export_to_npz, export_to_x3p, load
from tmd_nb.formats import registry as codec
from tmd_nb.notebook import arguments, completion, magics
from tmd_nb.notebook.display import HeightMapResult


def listed(items: list[str]) -> str:
    """``"a, b or c"``, as the messages list choices."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


# The formats as the registry declares them, so that a new format is expected in every message.
WRITABLE = [f for f in codec.FORMATS if getattr(f, "save", None) is not None]
EXTENSIONS = listed(list(codec.extensions(writing=True)))
KEEPING_ALL = listed([f.extensions[0] for f in WRITABLE if f.keeps is None])
SAVED = re.compile(
    r"^Saved (?P<name>.+) \((?P<shape>[\d x]+) (?P<dtype>\w+), (?P<keys>\d+) metadata keys?\) to "
    r"(?P<path>.+) \((?P<size>[\d.]+ (?:B|KiB|MiB|GiB)), (?P<fmt>"
    + "|".join(re.escape(f.title) for f in codec.FORMATS)
    + r")\) in [\d.]+ m?s$"
)


def saved_line(out: str) -> re.Match[str]:
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {out!r}"
    match = SAVED.match(lines[0])
    assert match, f"unexpected success line {lines[0]!r}"
    return match


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())  # hidden temporaries included


# --------------------------------------------------------------------------- %tmd_export


def test_export_npz_prints_one_line_and_round_trips(ip, capsys, tmp_path) -> None:
    ip.user_ns["z"] = np.arange(12, dtype=np.float32).reshape(3, 4)
    _, out, err = run(ip, capsys, "%tmd_export z out.npz")
    match = saved_line(out)
    assert err == ""
    assert (match["name"], match["shape"], match["dtype"], match["keys"], match["fmt"]) == (
        "z",
        "3 x 4",
        "float32",
        "0",
        "NPZ",
    )
    assert match["path"] == str(tmp_path / "out.npz")
    assert match["size"] == f"{(tmp_path / 'out.npz').stat().st_size} B"
    assert np.array_equal(load(tmp_path / "out.npz")["height_map"], ip.user_ns["z"])


def test_export_meta_options_are_literals_or_text_and_never_mutate_the_users_dict(ip, capsys, tmp_path) -> None:
    scan = {"height_map": np.ones((4, 5)), "units": "mm", "operator": "ann"}
    ip.user_ns["scan"] = scan
    cell = (
        '%tmd_export scan s.npz -m units=um -m pixel=0.5e-6 -m n=3 -m ok=True -m tags=["a", "b"] '
        '-m "note=first pass" --meta=label=x-1 -m empty= -m pair=(1, 2)'
    )
    _, out, _ = run(ip, capsys, cell)
    assert saved_line(out)["keys"] == "10"
    back = load(tmp_path / "s.npz")
    assert back["units"] == "um" and back["operator"] == "ann"
    assert back["pixel"] == 0.5e-6 and back["n"] == 3 and back["ok"] is True
    assert back["tags"] == ["a", "b"] and back["note"] == "first pass" and back["label"] == "x-1"
    assert back["empty"] == "" and back["pair"] == (1, 2)
    assert scan == {"height_map": scan["height_map"], "units": "mm", "operator": "ann"}


def test_export_array_with_meta_becomes_a_dict_in_the_file(ip, capsys, tmp_path) -> None:
    ip.user_ns["z"] = np.zeros((2, 2))
    _, out, _ = run(ip, capsys, "%tmd_export z z.npz -m units=nm")
    assert saved_line(out)["keys"] == "1"
    assert load(tmp_path / "z.npz")["units"] == "nm"
    assert isinstance(ip.user_ns["z"], np.ndarray)


@pytest.mark.parametrize(
    "option, message",
    [
        ("-m novalue", "-m/--meta expects KEY=VALUE, got 'novalue'"),
        ("-m =3", "-m/--meta expects KEY=VALUE, got '=3'"),
        ("-m height_map=1", "-m/--meta cannot set 'height_map'"),
    ],
)
def test_bad_meta_option_is_refused(ip, capsys, tmp_path, option, message) -> None:
    ip.user_ns["z"] = np.zeros((2, 2))
    assert usage_error(ip, capsys, f"%tmd_export z z.npz {option}").startswith(message)
    assert files(tmp_path) == []


def test_existing_file_is_refused_without_force_and_replaced_with_it(ip, capsys, tmp_path) -> None:
    ip.user_ns["a"] = np.zeros((2, 2))
    ip.user_ns["b"] = np.ones((3, 3))
    run(ip, capsys, "%tmd_export a out.npz")
    before = (tmp_path / "out.npz").read_bytes()
    message = usage_error(ip, capsys, "%tmd_export b out.npz")
    assert message == "'out.npz' already exists; use -f to overwrite it"
    assert (tmp_path / "out.npz").read_bytes() == before
    for flag in ("-f", "--force"):
        _, out, _ = run(ip, capsys, f"%tmd_export b out.npz {flag}")
        saved_line(out)
        assert load(tmp_path / "out.npz")["height_map"].shape == (3, 3)
    assert files(tmp_path) == ["out.npz"]


def test_no_compress_stores_members_uncompressed(ip, capsys, tmp_path) -> None:
    ip.user_ns["flat"] = np.zeros((200, 200))
    run(ip, capsys, "%tmd_export flat packed.npz")
    _, out, _ = run(ip, capsys, "%tmd_export flat plain.npz --no-compress")
    saved_line(out)
    with zipfile.ZipFile(tmp_path / "plain.npz") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}
    with zipfile.ZipFile(tmp_path / "packed.npz") as zf:
        assert zipfile.ZIP_DEFLATED in {i.compress_type for i in zf.infolist()}
    assert (tmp_path / "plain.npz").stat().st_size > 10 * (tmp_path / "packed.npz").stat().st_size
    assert (
        usage_error(ip, capsys, "%tmd_export flat flat.npy --no-compress")
        == "--no-compress applies to .npz files only, not .npy"
    )


@pytest.mark.parametrize("level", ["fastest", "balanced", "smallest", "6", "0"])
def test_level_reaches_the_npz_writer(ip, capsys, tmp_path, level) -> None:
    ip.user_ns["scan"] = {"height_map": np.linspace(0, 1, 40000).reshape(200, 200), "units": "um"}
    _, out, _ = run(ip, capsys, f"%tmd_export scan s.npz --level {level}")
    saved_line(out)
    reference = export_to_npz(ip.user_ns["scan"], tmp_path / "ref.npz", level=int(level) if level.isdigit() else level)
    with zipfile.ZipFile(tmp_path / "s.npz") as ours, zipfile.ZipFile(reference) as theirs:
        for name in theirs.namelist():
            assert ours.getinfo(name).compress_size == theirs.getinfo(name).compress_size
            assert ours.read(name) == theirs.read(name)
    assert np.load(tmp_path / "s.npz")["height_map"].tobytes() == ip.user_ns["scan"]["height_map"].tobytes()


@pytest.mark.parametrize("level", ["fastest", "smallest", "6", "0"])
def test_level_reaches_the_x3p_writer(ip, capsys, tmp_path, level) -> None:
    ip.user_ns["scan"] = {"height_map": np.linspace(0, 1, 40000).reshape(200, 200), "units": "um"}
    _, out, _ = run(ip, capsys, f"%tmd_export scan s.x3p --level {level}")
    saved_line(out)
    reference = export_to_x3p(ip.user_ns["scan"], tmp_path / "ref.x3p", level=int(level) if level.isdigit() else level)
    with zipfile.ZipFile(tmp_path / "s.x3p") as ours, zipfile.ZipFile(reference) as theirs:
        data = ours.getinfo("bindata/data.bin")
        assert data.compress_size == theirs.getinfo("bindata/data.bin").compress_size
        assert (data.compress_type == zipfile.ZIP_STORED) == (level == "0")
    assert load(tmp_path / "s.x3p")["height_map"].tobytes() == ip.user_ns["scan"]["height_map"].tobytes()


def test_level_mistakes_are_one_line(ip, capsys, tmp_path) -> None:
    ip.user_ns["z"] = np.zeros((2, 2))
    assert (
        usage_error(ip, capsys, "%tmd_export z a.npz --level fast")
        == "--level must be fastest, balanced or smallest or 0-9 as in zlib, not 'fast'"
    )
    assert (
        usage_error(ip, capsys, "%tmd_export z a.npz --level 12")
        == "--level must be fastest, balanced or smallest or 0-9 as in zlib, not 12"
    )
    assert usage_error(ip, capsys, "%tmd_export z a.npy --level balanced") == (
        "--level applies to .npz or .x3p files only, not .npy"
    )
    assert usage_error(ip, capsys, "%tmd_export z a.npz --level 6 --no-compress") == (
        "--level and --no-compress contradict each other; give one of them"
    )
    assert files(tmp_path) == []


def test_export_npy_drops_metadata_with_one_note_line(ip, capsys, tmp_path) -> None:
    ip.user_ns["scan"] = {"height_map": np.arange(6).reshape(2, 3), "units": "um"}
    _, out, err = run(ip, capsys, "%tmd_export scan scan.npy -m extra=1")
    match = saved_line(out)
    assert (match["fmt"], match["keys"], match["dtype"]) == ("NPY", "0", "int64")
    assert err.strip() == (
        "note: .npy stores the height map only; 2 metadata keys not saved ('units', 'extra'); "
        f"use {KEEPING_ALL} to keep them"
    )
    assert np.array_equal(np.load(tmp_path / "scan.npy"), np.arange(6).reshape(2, 3))


def test_tmd_round_trip_with_the_real_scans(ip, capsys, tmp_path, tmd_samples) -> None:
    source = tmd_samples / "v2_Surface.tmd"
    _, out, _ = run(ip, capsys, f'%tmd_load "{source}" -n surface')
    assert out.startswith(f"Loaded {source} into surface (169 x 169 float32, 8 metadata keys) in ")
    _, out, err = run(ip, capsys, "%tmd_export surface copy.tmd")
    match = saved_line(out)
    assert (match["fmt"], match["keys"]) == ("TMD", "5") and err == ""
    assert (tmp_path / "copy.tmd").read_bytes() == source.read_bytes()
    # metadata a .tmd cannot hold is named in one note line, not a warning traceback
    _, out, err = run(ip, capsys, "%tmd_export surface extra.tmd -m operator=ann")
    saved_line(out)
    assert err.strip() == (
        "note: .tmd stores the height map, lengths, offsets and comment only; 1 metadata key "
        f"not saved ('operator'); use {KEEPING_ALL} to keep them"
    )
    # what a .tmd file cannot represent is a one-line error and leaves no file
    message = usage_error(ip, capsys, "%tmd_export surface bad.tmd -m comment=café")
    assert message.startswith("surface: comment must be ASCII")
    assert not (tmp_path / "bad.tmd").exists()


def test_loading_a_quoted_name_with_spaces_among_the_samples(ip, capsys, tmd_samples) -> None:
    result = ip.run_line_magic("tmd_load", f"'{tmd_samples / 'v2_Vickers Indentation.tmd'}'")
    assert isinstance(result, HeightMapResult) and result["height_map"].shape == (400, 400)


# --------------------------------------------------------------------------- NAME expressions


def test_name_may_be_an_item_or_attribute_expression(ip, capsys, tmp_path) -> None:
    z = np.arange(20.0).reshape(4, 5)
    ip.user_ns.update(
        scan={"z": z, "inner": {"height_map": z}}, ns=types.SimpleNamespace(z=z), stack=np.stack([z, z + 1]), key="z"
    )
    for expr, expected in [
        ('scan["z"]', z),
        ("scan['inner']", z),
        ("ns.z", z),
        ("stack[1]", z + 1),
        ("stack[-1, 1:3, ::2]", (z + 1)[1:3, ::2]),
        ("scan[key]", z),
    ]:
        _, out, _ = run(ip, capsys, f"%tmd_export {expr} out.npz -f")
        assert saved_line(out)["name"] == expr
        assert np.array_equal(load(tmp_path / "out.npz")["height_map"], expected)


@pytest.mark.parametrize(
    "expr, message",
    [
        ("nope", "name 'nope' is not defined"),
        ('scan["missing"]', "scan[\"missing\"]: bad key 'missing' for dict"),
        ("ns.nothing", "ns.nothing: SimpleNamespace object has no attribute 'nothing'"),
        ("stack[9]", "stack[9]: bad index 9 for ndarray"),
        ("f()", "'f()' is not a variable name, attribute or subscript"),
        ("scan[f()]", "'scan[f()]': only constants and variable names may be used as subscripts"),
        ("a+b", "'a+b' is not a variable name"),
        ("1z", "'1z' is not a variable name"),
    ],
)
def test_bad_name_is_one_line_and_runs_nothing(ip, capsys, tmp_path, expr, message) -> None:
    calls = []
    ip.user_ns.update(
        scan={"z": np.zeros((2, 2))},
        ns=types.SimpleNamespace(),
        stack=np.zeros((2, 2, 2)),
        f=lambda: calls.append(1) or np.zeros((2, 2)),
        a=np.zeros((2, 2)),
        b=np.zeros((2, 2)),
    )
    assert usage_error(ip, capsys, f"%tmd_export {expr} out.npz").startswith(message)
    assert calls == [] and files(tmp_path) == []


@pytest.mark.parametrize(
    "value, message",
    [
        (np.zeros(5), "v must be 2-D, but has shape (5,) (1-D)"),
        ("text", "v must be a 2-D numpy array or a dict with a 'height_map' array, not builtins.str"),
        ({"z": np.zeros((2, 2))}, "v has no 'height_map' entry (keys: 'z')"),
        (np.array([["a"]]), "v has dtype <U1; a height map must be bool, integer, float or complex"),
        (np.ma.masked_array(np.zeros((2, 2))), "v is a masked array"),
        ({"height_map": np.zeros((2, 2)), "bad": object()}, "v: "),
    ],
)
def test_wrong_type_is_one_line_and_leaves_no_file(ip, capsys, tmp_path, value, message) -> None:
    ip.user_ns["v"] = value
    assert usage_error(ip, capsys, "%tmd_export v out.npz").startswith(message)
    assert files(tmp_path) == []


# --------------------------------------------------------------------------- paths and options


@pytest.mark.parametrize(
    "cell, message",
    [
        (
            "%tmd_export z out.txt",
            f"cannot tell the format of 'out.txt' from its extension: use {EXTENSIONS}",
        ),
        ("%tmd_export z sub/", "cannot tell the format of 'sub/'"),
        ("%tmd_export z nodir/out.npz", "cannot save to 'nodir/out.npz': directory"),
        (
            "%tmd_export z",
            "%tmd_export: the following arguments are required: PATH (usage: %tmd_export [-f] "
            "[--no-compress] [--level LEVEL] [-m KEY=VALUE] NAME PATH; see %tmd_export?)",
        ),
        ("%tmd_export z out.npz --bogus", "%tmd_export: unrecognized arguments: --bogus"),
        ("%tmd_export z out.npz extra", "%tmd_export: unrecognized arguments: extra"),
        ('%tmd_export z "out.npz', 'unclosed " quote in: z "out.npz'),
        ("%tmd_export z[0 out.npz", "unclosed bracket in: z[0 out.npz"),
        ("%tmd_load", "%tmd_load: the following arguments are required: PATH"),
        ("%tmd_load out.npz -n", "%tmd_load: argument -n/--name: expected one argument"),
        ("%tmd_panel --what", "%tmd_panel: unrecognized arguments: --what"),
    ],
)
def test_usage_mistakes_are_one_line(ip, capsys, tmp_path, cell, message) -> None:
    (tmp_path / "sub").mkdir()
    ip.user_ns["z"] = np.zeros((2, 2))
    assert usage_error(ip, capsys, cell).startswith(message)
    assert files(tmp_path) == ["sub"] and list((tmp_path / "sub").iterdir()) == []


def test_export_to_a_directory_named_like_a_file_is_refused(ip, capsys, tmp_path) -> None:
    (tmp_path / "d.npz").mkdir()
    ip.user_ns["z"] = np.zeros((2, 2))
    assert (
        usage_error(ip, capsys, "%tmd_export z d.npz -f") == "'d.npz' is a directory; give a file name ending in .npz"
    )


def test_unwritable_destination_is_one_line(ip, capsys, tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    # root may write anywhere; the kernel's /proc refuses new files even to root
    target = "locked/z.npz" if not os.access(locked, os.W_OK) else "/proc/tmd_nb_test.npz"
    try:
        ip.user_ns["z"] = np.zeros((2, 2))
        assert usage_error(ip, capsys, f"%tmd_export z {target}").startswith(f"cannot write {target!r}: ")
        assert list(locked.iterdir()) == [] and not os.path.exists("/proc/tmd_nb_test.npz")
    finally:
        locked.chmod(0o700)


def test_paths_with_spaces_quotes_escapes_tilde_and_variables(ip, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "my scans").mkdir()
    ip.user_ns.update(z=np.zeros((2, 2)), folder="my scans", run=7)
    for cell, name in [
        ('%tmd_export z "my scans/a b.npz"', "my scans/a b.npz"),
        ("%tmd_export z 'my scans/c d.npy'", "my scans/c d.npy"),
        (r"%tmd_export z my\ scans/e\ f.npz", "my scans/e f.npz"),
        ("%tmd_export z ~/home.npz", "home.npz"),
        ('%tmd_export z "$folder/var.npz"', "my scans/var.npz"),
        ("%tmd_export z run{run + 1}.npz", "run8.npz"),
    ]:
        _, out, _ = run(ip, capsys, cell)
        assert saved_line(out)["path"] == str(tmp_path / name), cell
        assert (tmp_path / name).is_file()
    result = ip.run_line_magic("tmd_load", "~/run8.npz")
    assert result["height_map"].shape == (2, 2)


# --------------------------------------------------------------------------- %tmd_load


def test_load_returns_a_result_that_can_be_assigned(ip, capsys, tmp_path) -> None:
    export_to_npz({"height_map": np.arange(6.0).reshape(2, 3), "units": "um"}, tmp_path / "s.npz")
    _, out, err = run(ip, capsys, "scan = %tmd_load s.npz")
    assert out == "" and err == ""
    scan = ip.user_ns["scan"]
    assert isinstance(scan, HeightMapResult) and scan["units"] == "um"
    assert np.array_equal(scan["height_map"], np.arange(6.0).reshape(2, 3))


def test_load_with_name_binds_and_prints_one_line(ip, capsys, tmp_path) -> None:
    np.save(tmp_path / "a.npy", np.ones((3, 2), dtype=np.uint8))
    _, out, _ = run(ip, capsys, "%tmd_load a.npy -n arr")
    assert re.fullmatch(r"Loaded a\.npy into arr \(3 x 2 uint8, 0 metadata keys\) in [\d.]+ m?s\n", out)
    assert ip.user_ns["arr"]["height_map"].dtype == np.uint8
    _, out, _ = run(ip, capsys, "%tmd_load --name=again a.npy")
    assert "into again" in out and "again" in ip.user_ns


def test_load_recognises_content_not_extension(ip, tmp_path) -> None:
    export_to_npz({"height_map": np.zeros((2, 2)), "k": 1}, tmp_path / "looks_like.npy")
    assert ip.run_line_magic("tmd_load", "looks_like.npy")["k"] == 1


@pytest.mark.parametrize(
    "setup, cell, message",
    [
        (None, "%tmd_load missing.npz", "no such file: 'missing.npz'"),
        ("dir", "%tmd_load folder", "'folder' is a directory, not a file"),
        (
            "garbage",
            "%tmd_load junk.npz",
            "'junk.npz' is not a GWY, NPY, NPZ, SDF, TMD, X3P or instrument file (it starts with b'hello",
        ),
        ("truncated", "%tmd_load cut.npz", "'cut.npz'"),
        (None, "%tmd_load x.npz -n 2bad", "-n/--name: '2bad' is not a valid Python variable name"),
        (None, "%tmd_load x.npz -n class", "-n/--name: 'class' is not a valid Python variable name"),
    ],
)
def test_load_mistakes_are_one_line(ip, capsys, tmp_path, setup, cell, message) -> None:
    if setup == "dir":
        (tmp_path / "folder").mkdir()
    elif setup == "garbage":
        (tmp_path / "junk.npz").write_bytes(b"hello world")
    elif setup == "truncated":
        export_to_npz({"height_map": np.random.default_rng(0).random((50, 50))}, tmp_path / "cut.npz")
        data = (tmp_path / "cut.npz").read_bytes()
        (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    names = set(ip.user_ns)
    assert usage_error(ip, capsys, cell).startswith(message)
    assert set(ip.user_ns) == names


def test_loaded_result_displays_summary_and_picture_not_numbers(ip, tmp_path) -> None:
    export_to_npz({"height_map": np.random.default_rng(5).random((300, 200)), "units": "um"}, tmp_path / "s.npz")
    result = ip.run_line_magic("tmd_load", "s.npz")
    data, _ = ip.display_formatter.format(result)
    assert '<img src="data:image/png;base64,' in data["text/html"] and "units" in data["text/html"]
    assert data["text/plain"].startswith("height map 300 x 200 float64")
    assert data["text/plain"].count("\n") < 6


# --------------------------------------------------------------------------- progress


def test_progress_bar_appears_only_for_slow_jobs() -> None:
    now = [0.0]
    stream = io.StringIO()
    bar = magics.ProgressBar("saving x.npz", stream, after=1.0, clock=lambda: now[0])
    bar(10, 100)
    now[0] = 0.5
    bar(100, 100)
    bar.close()
    assert stream.getvalue() == ""  # a quick job draws nothing

    bar = magics.ProgressBar("saving x.npz", stream, after=1.0, clock=lambda: now[0])
    now[0] += 1.5
    bar(25, 100)
    now[0] += 0.05
    bar(30, 100)  # throttled
    now[0] += 0.5
    bar(100, 100)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("100% of 100 B\n")
    assert " 25% of 100 B" in text


def test_slow_saves_and_loads_show_progress_on_stderr(ip, capsys, monkeypatch) -> None:
    monkeypatch.setattr(magics, "PROGRESS_AFTER", 0.0)
    ip.user_ns["z"] = np.random.default_rng(6).random((300, 300))
    _, out, err = run(ip, capsys, "%tmd_export z big.npz")
    saved_line(out)
    assert "\rsaving big.npz [" in err and err.endswith("\n") and "100%" in err
    _, out, err = run(ip, capsys, "%tmd_load big.npz -n back")
    assert out.startswith("Loaded big.npz into back")
    assert "\rloading big.npz [" in err and "100%" in err


# --------------------------------------------------------------------------- help


def test_question_mark_help_shows_argparse_usage(ip, capsys) -> None:
    for magic, options in [
        (
            "tmd_export",
            ["-f, --force", "--no-compress", "--level LEVEL", "-m <KEY=VALUE>, --meta <KEY=VALUE>", "NAME", "PATH"],
        ),
        ("tmd_load", ["-n NAME, --name NAME", "PATH"]),
        ("tmd_panel", ["--load"]),
    ]:
        _, out, _ = run(ip, capsys, f"%{magic}?")
        assert f"%{magic} [" in out
        for option in options:
            assert option in out, (magic, option)
    _, out, _ = run(ip, capsys, "%tmd_export -h")
    usage = " ".join(out.split("\n\n")[0].split())  # argparse wraps the usage line at the terminal width
    assert usage == "%tmd_export [-f] [--no-compress] [--level LEVEL] [-m KEY=VALUE] NAME PATH" and "--force" in out


def test_export_help_names_the_unit_keys_and_their_shorthand(ip, capsys) -> None:
    _, out, _ = run(ip, capsys, "%tmd_export?")
    assert "-m lateral_unit=um -m height_unit=nm" in out
    assert "``units`` is the shorthand for both" in out
    assert "-m units=um" in out


# --------------------------------------------------------------------------- completion


def completions(ip: InteractiveShell, text: str) -> list[str]:
    with provisionalcompleter():
        found = list(ip.Completer.completions(text, len(text)))
    # what the front end shows: each completion replaces text[start:end]
    return [text[: c.start] + c.text for c in found]


def test_completion_offers_exportable_variables_for_name(ip) -> None:
    ip.user_ns.update(
        scan_a=np.zeros((2, 2)),
        scan_b={"height_map": np.ones((3, 3), dtype=int)},
        scan_1d=np.zeros(3),
        scan_txt="x",
        scan_dict={"z": np.zeros((2, 2))},
        scan_obj=np.zeros((2, 2), dtype=object),
        _scan_private=np.zeros((2, 2)),
    )
    assert completions(ip, "%tmd_export scan") == ["%tmd_export scan_a", "%tmd_export scan_b"]
    assert "%tmd_export scan_a" in completions(ip, "%tmd_export ")
    assert "%tmd_export scan_1d" not in completions(ip, "%tmd_export ")
    assert completions(ip, "%tmd_export -f scan_") == ["%tmd_export -f scan_a", "%tmd_export -f scan_b"]


def test_completion_offers_directories_and_height_map_files_for_path(ip, tmp_path, monkeypatch) -> None:
    ip.user_ns["z"] = np.zeros((2, 2))
    for name in ("a.npz", "b.NPY", "c.tmd", "notes.txt", ".hidden.npz", "my scan.npz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "deep.npz").write_bytes(b"")
    expected = [
        "%tmd_export z a.npz",
        "%tmd_export z b.NPY",
        "%tmd_export z c.tmd",
        "%tmd_export z data/",
        '%tmd_export z "my scan.npz"',
    ]
    assert completions(ip, "%tmd_export z ") == expected
    assert completions(ip, "%tmd_export z -m k=1 ") == [e.replace("z ", "z -m k=1 ") for e in expected]
    assert completions(ip, "%tmd_export z d") == ["%tmd_export z data/"]
    assert completions(ip, "%tmd_export z data/") == ["%tmd_export z data/deep.npz"]
    assert completions(ip, "%tmd_export z .h") == ["%tmd_export z .hidden.npz"]
    assert completions(ip, "%tmd_load my") == ['%tmd_load "my scan.npz"']
    assert completions(ip, '%tmd_load "my') == ['%tmd_load "my scan.npz"']
    assert completions(ip, "%tmd_load 'my") == ["%tmd_load 'my scan.npz'"]
    assert completions(ip, "%tmd_load my\\ s") == ['%tmd_load "my scan.npz"']  # escaped as %tmd_load reads it
    assert completions(ip, "scan = %tmd_load a") == ["scan = %tmd_load a.npz"]
    assert completions(ip, "%tmd_load -n x c") == ["%tmd_load -n x c.tmd"]
    monkeypatch.setenv("HOME", str(tmp_path))
    assert completions(ip, "%tmd_load ~/da") == ["%tmd_load ~/data/"]


def test_completion_offers_options(ip) -> None:
    assert completions(ip, "%tmd_export z out.npz --n") == ["%tmd_export z out.npz --no-compress"]
    assert completions(ip, "%tmd_export z out.npz --level b") == ["%tmd_export z out.npz --level balanced"]
    assert completions(ip, "%tmd_export z out.npz --level s") == ["%tmd_export z out.npz --level smallest"]
    assert completions(ip, "%tmd_load x.npz --") == ["%tmd_load x.npz --channel", "%tmd_load x.npz --name"]
    assert completions(ip, "%tmd_panel --") == ["%tmd_panel --load"]


def test_completion_offers_the_formats_convert_can_write(ip) -> None:
    line = "%tmd_convert scans/ -o out --format "
    writable = [f.name for f in WRITABLE]
    assert completions(ip, line) == [line + name for name in writable]
    for first in sorted({name[0] for name in writable}):
        assert completions(ip, line + first) == [line + name for name in writable if name.startswith(first)]
    assert not any(c.endswith(("False", "None", "and", "nonlocal")) for c in completions(ip, line + "n"))


def test_completer_is_removed_on_unload(ip, tmp_path) -> None:
    (tmp_path / "only scan.npz").write_bytes(b"")
    assert completions(ip, "%tmd_load on") == ['%tmd_load "only scan.npz"']  # our quoting
    ip.run_line_magic("unload_ext", "tmd_nb")
    ids = [getattr(m, "matcher_identifier", None) for m in ip.Completer.custom_matchers]
    assert completion.MATCHER_ID not in ids
    # IPython's own file completer may still answer, but not with our quoting
    assert '%tmd_load "only scan.npz"' not in completions(ip, "%tmd_load on")


def test_completion_knows_every_line_magic_and_no_other() -> None:
    assert set(magics.syntaxes()) == set(magics.TmdMagics.magics["line"])


# --------------------------------------------------------------------------- extension


def test_load_unload_reload_extension(ip, capsys) -> None:
    line = ip.magics_manager.magics["line"]
    assert {"tmd_export", "tmd_load", "tmd_panel"} <= set(line)
    ip.run_line_magic("unload_ext", "tmd_nb")
    assert not {"tmd_export", "tmd_load", "tmd_panel"} & set(line)
    result, _, err = run(ip, capsys, "%tmd_load x.npz")
    assert result.error_in_exec is not None and "not found" in err
    ip.run_line_magic("load_ext", "tmd_nb")
    ip.run_line_magic("reload_ext", "tmd_nb")
    ip.run_line_magic("reload_ext", "tmd_nb")
    assert {"tmd_export", "tmd_load", "tmd_panel"} <= set(line)
    ids = [getattr(m, "matcher_identifier", None) for m in ip.Completer.custom_matchers]
    assert ids.count(completion.MATCHER_ID) == 1
    ip.user_ns["z"] = np.zeros((2, 2))
    _, out, _ = run(ip, capsys, "%tmd_export z after_reload.npz")
    saved_line(out)


def test_unload_leaves_other_magics_of_the_same_name_alone(ip) -> None:
    ip.run_line_magic("unload_ext", "tmd_nb")
    ip.register_magic_function(lambda line: "mine", magic_name="tmd_load")
    try:
        ip.run_line_magic("load_ext", "tmd_nb")  # ours replaces it...
        ip.run_line_magic("unload_ext", "tmd_nb")  # ...and unloading removes ours only
        assert "tmd_export" not in ip.magics_manager.magics["line"]
        ip.register_magic_function(lambda line: "mine", magic_name="tmd_load")
        magics.unload_ipython_extension(ip)
        assert ip.run_line_magic("tmd_load", "") == "mine"
    finally:
        ip.magics_manager.magics["line"].pop("tmd_load", None)
        ip.run_line_magic("load_ext", "tmd_nb")


def test_extension_enabled_from_ipython_config(tmp_path) -> None:
    ipdir = tmp_path / "ipdir"
    (ipdir / "profile_default").mkdir(parents=True)
    (ipdir / "profile_default" / "ipython_config.py").write_text('c.InteractiveShellApp.extensions = ["tmd_nb"]\n')
    code = (
        "import numpy as np; z = np.ones((2, 3)); get_ipython().run_line_magic('tmd_export', 'z cfg.npz'); "
        "print(sorted(k for k in get_ipython().magics_manager.magics['line'] if k.startswith('tmd_')))"
    )
    env = {**os.environ, "IPYTHONDIR": str(ipdir), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "IPython", "--HistoryManager.hist_file=:memory:", "--no-banner", "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Saved z (2 x 3 float64, 0 metadata keys)" in out.stdout
    assert "['tmd_convert', 'tmd_export', 'tmd_load', 'tmd_panel']" in out.stdout
    assert load(tmp_path / "cfg.npz")["height_map"].shape == (2, 3)


# --------------------------------------------------------------------------- %tmd_panel


def test_panel_magic_shows_the_export_and_load_panels_on_the_user_namespace(ip, tmp_path) -> None:
    from ipywidgets.widgets.widget import Widget

    from tmd_nb.notebook.panel import ExportPanel, LoadPanel

    ip.user_ns["surface"] = np.zeros((4, 4))
    export_to_npz({"height_map": np.ones((3, 3)), "units": "um"}, tmp_path / "in.npz")
    with capture_output() as captured:
        assert ip.run_line_magic("tmd_panel", "") is None
        ip.run_line_magic("tmd_panel", "--load")
    from ipywidgets.widgets import widget as widget_module

    registry = getattr(widget_module, "_instances", None)  # ipywidgets >= 8.1; Widget.widgets is deprecated
    if registry is None:
        registry = Widget._active_widgets  # ipywidgets 8.0
    shown = [registry[o.data["application/vnd.jupyter.widget-view+json"]["model_id"]] for o in captured.outputs]
    export_panel, load_panel = shown
    assert isinstance(export_panel, ExportPanel) and isinstance(load_panel, LoadPanel)
    assert export_panel.selected == "surface"
    load_panel.path = "in.npz"
    load_panel.name = "from_panel"
    assert load_panel.bind() == "from_panel"
    assert ip.user_ns["from_panel"]["units"] == "um"


def test_panel_magic_in_a_terminal_says_it_needs_jupyter(tmp_path) -> None:
    """A terminal IPython cannot show widgets: one line says so, instead of a widget repr."""
    code = "import numpy as np; z = np.ones((2, 3))\n%load_ext tmd_nb\n%tmd_panel\n%tmd_panel --load\nprint('end')\n"
    (tmp_path / "panel.ipy").write_text(code)
    env = {**os.environ, "IPYTHONDIR": str(tmp_path / "ipdir"), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "IPython", "--HistoryManager.hist_file=:memory:", "--no-banner", "panel.ipy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    hint = (
        "%tmd_panel: the panel is a Jupyter widget; open this in JupyterLab, Jupyter Notebook or VS Code "
        "(in a terminal, use %tmd_export and %tmd_load)"
    )
    assert (out.stdout + out.stderr).count(hint) == 2, out.stdout + out.stderr
    assert "Panel(" not in out.stdout and "VBox" not in out.stdout and "end" in out.stdout


# --------------------------------------------------------------------------- plain functions


def test_split_line_is_shell_like_outside_brackets_and_python_inside() -> None:
    assert arguments.split_line('scan["a b"] "x y.npz" -m k=[1, "2 3"] a\\ b \'q"r\'') == [
        'scan["a b"]',
        "x y.npz",
        "-m",
        'k=[1, "2 3"]',
        "a b",
        'q"r',
    ]
    assert arguments.split_line('  "" x  ') == ["", "x"]
    with pytest.raises(UsageError, match="unclosed ' quote"):
        arguments.split_line("x 'y")


def test_one_tokenizer_runs_and_completes_the_same_words() -> None:
    line = 'scan["a b"] "x y.npz" -m k=[1, "2 3"] a\\ b \'q"r\''
    assert arguments.tokenize(line, partial=True).words == arguments.split_line(line)[:-1]
    assert arguments.tokenize(line + " ", partial=True) == (arguments.split_line(line), "", "", None)
    assert arguments.tokenize('z "my sc', partial=True) == (["z"], '"my sc', "my sc", '"')
    assert arguments.tokenize("z my\\ sc", partial=True) == (["z"], "my\\ sc", "my sc", None)
    assert arguments.tokenize('z scan["a', partial=True) == (["z"], 'scan["a', 'scan["a', None)  # not a path


def test_parse_meta_prefers_literals() -> None:
    assert arguments.parse_meta(
        ["a=1", "b=1.5", "c='s'", "d=s", "e=None", "f={'x': 1}", "g=1e3", "h= 2 ", "i=x=y"]
    ) == {"a": 1, "b": 1.5, "c": "s", "d": "s", "e": None, "f": {"x": 1}, "g": 1000.0, "h": 2, "i": "x=y"}
    assert arguments.parse_meta(None) == {}


def test_resolve_name_never_calls_anything() -> None:
    class Trap:
        def __getitem__(self, key):
            return np.zeros((2, 2))

    namespace = {"t": Trap(), "k": "key"}
    assert arguments.resolve_name("t[k]", namespace).shape == (2, 2)
    for expr in ("t.__class__.__init__()", "(lambda: 1)()", "t[k()]", "[t][0]", "t if t else t"):
        with pytest.raises(UsageError):
            arguments.resolve_name(expr, namespace)


def test_export_height_map_function_refuses_overwrite(tmp_path) -> None:
    target = tmp_path / "x.npz"
    target.write_bytes(b"keep")
    with pytest.raises(UsageError, match="already exists"):
        magics.export_height_map(np.zeros((2, 2)), str(target))
    assert target.read_bytes() == b"keep"
    report = magics.export_height_map(np.zeros((2, 2)), str(target), force=True, meta={"a": 1})
    assert report.metadata_keys == 1 and codec.load(target)["a"] == 1


# --------------------------------------------------------------------------- exchange formats


@pytest.mark.parametrize(
    "ext, fmt", [(f.extensions[0], f.title) for f in WRITABLE if f.keeps is None], ids=lambda v: str(v).strip(".")
)
def test_export_and_load_exchange_formats(ip, capsys, tmp_path, ext, fmt) -> None:
    ip.user_ns["scan"] = {"height_map": np.arange(6, dtype=np.float32).reshape(2, 3), "x_length": 3.0}
    _, out, err = run(ip, capsys, f"%tmd_export scan scan{ext} -m operator=me")
    match = saved_line(out)
    assert (match["fmt"], match["keys"], err) == (fmt, "2", "")
    back = ip.run_line_magic("tmd_load", f"scan{ext}")
    assert isinstance(back, HeightMapResult) and back["operator"] == "me" and back["x_length"] == 3.0
    np.testing.assert_array_equal(back["height_map"], ip.user_ns["scan"]["height_map"])


def test_completion_offers_files_of_every_format(ip, tmp_path) -> None:
    names = [f"a{ext}" for ext in codec.extensions()]
    for name in [*names, "c.txt"]:
        (tmp_path / name).write_bytes(b"")
    found = completions(ip, "%tmd_load ")
    assert {f"%tmd_load {name}" for name in names} <= set(found) and "%tmd_load c.txt" not in found


def test_x3p_export_with_a_non_length_unit_is_refused_before_writing(ip, capsys, tmp_path) -> None:
    ip.user_ns["scan"] = {"height_map": np.zeros((2, 3)), "height_unit": "V"}
    _, out, err = run(ip, capsys, "%tmd_export scan scan.x3p")
    assert out == "" and "scan: height_unit 'V' is not a length unit tmd_nb knows; use one of 'km', 'm'" in err
    assert not (tmp_path / "scan.x3p").exists()
