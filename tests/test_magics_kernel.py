"""The magics in a real Jupyter kernel: what a notebook user actually sees (nbclient + nbformat)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tmd_nb import load

pytestmark = pytest.mark.slow

CELLS = [
    # 0: the kernel must run this interpreter (the one with tmd_nb installed)
    "import sys, numpy as np\nprint(sys.executable)\n%load_ext tmd_nb",
    # 1
    "scan = {'height_map': np.arange(12.0).reshape(3, 4), 'units': 'um'}\n%tmd_export scan scan.npz -m operator=ann",
    # 2: a user mistake
    "%tmd_export scan scan.npz",
    # 3
    "%tmd_export scan 'scan copy.npy'",
    # 4
    "loaded = %tmd_load scan.npz\nloaded",
    # 5
    "%tmd_load scan.npz -n again\nprint(again['operator'], again['height_map'].shape)",
    # 6: another mistake, in a load
    "%tmd_load missing.npz",
    # 7
    "%unload_ext tmd_nb\n%tmd_load scan.npz",
]


def _text(outputs: list[dict], name: str) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream" and o["name"] == name)


ERROR_CELLS = {2, 6, 7}


def _assert_one_line_usage_error(outputs: list[dict], message: str) -> None:
    """A UsageError shows as one red line (IPython prints it on stderr), never traceback frames."""
    errors = [o for o in outputs if o["output_type"] == "error"]
    stderr = _text(outputs, "stderr")
    shown = stderr + "".join("\n".join(o["traceback"]) for o in errors)
    assert "Traceback" not in shown and "File " not in shown and "magics.py" not in shown, shown
    lines = [line for line in shown.splitlines() if line.strip()]
    assert lines == [f"UsageError: {message}"], lines
    assert _text(outputs, "stdout") == ""


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[nbformat.NotebookNode, Path]:
    folder = tmp_path_factory.mktemp("kernel")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    for index in ERROR_CELLS:  # expected to fail; any other failing cell stops the run
        nb.cells[index].metadata["tags"] = ["raises-exception"]
    replies: dict[int, dict] = {}

    def on_cell_executed(cell, cell_index, execute_reply):
        replies[cell_index] = execute_reply["content"]

    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=120,
        on_cell_executed=on_cell_executed,
        resources={"metadata": {"path": str(folder)}},
    )
    client.execute()
    nbformat.validate(nb)
    nb.metadata["replies"] = replies
    return nb, folder


def test_mistakes_fail_the_cell_as_usage_errors_and_nothing_else_fails(executed) -> None:
    nb, _ = executed
    replies = nb.metadata["replies"]
    assert sorted(replies) == list(range(len(CELLS)))
    for index, content in replies.items():
        if index in ERROR_CELLS:
            assert (content["status"], content["ename"]) == ("error", "UsageError"), index
        else:
            assert content["status"] == "ok", (index, content)


def test_kernel_runs_this_interpreter(executed) -> None:
    nb, _ = executed
    assert _text(nb.cells[0].outputs, "stdout").strip() == sys.executable
    assert _text(nb.cells[0].outputs, "stderr") == ""


def test_export_prints_one_line(executed) -> None:
    nb, folder = executed
    outputs = nb.cells[1].outputs
    assert len(outputs) == 1 and outputs[0]["name"] == "stdout"
    line = outputs[0]["text"]
    assert line.count("\n") == 1
    assert line.startswith(f"Saved scan (3 x 4 float64, 2 metadata keys) to {folder / 'scan.npz'} (")
    assert load(folder / "scan.npz")["operator"] == "ann"


def test_refused_overwrite_is_one_line_without_traceback(executed) -> None:
    nb, _ = executed
    _assert_one_line_usage_error(nb.cells[2].outputs, "'scan.npz' already exists; use -f to overwrite it")


def test_npy_export_notes_dropped_metadata_in_one_line(executed) -> None:
    nb, folder = executed
    outputs = nb.cells[3].outputs
    assert _text(outputs, "stderr") == (
        "note: .npy stores the height map only; 1 metadata key not saved ('units'); "
        "use .npz, .x3p, .gwy or .sdf to keep them\n"
    )
    assert _text(outputs, "stdout").startswith(
        f"Saved scan (3 x 4 float64, 0 metadata keys) to {folder / 'scan copy.npy'}"
    )
    assert np.array_equal(np.load(folder / "scan copy.npy"), np.arange(12.0).reshape(3, 4))


def test_loaded_result_shows_summary_and_picture(executed) -> None:
    nb, _ = executed
    (result,) = [o for o in nb.cells[4].outputs if o["output_type"] == "execute_result"]
    html = result["data"]["text/html"]
    assert '<img src="data:image/png;base64,' in html
    assert "3 x 4" in html and "float64" in html and "operator" in html and "&#x27;ann&#x27;" in html
    plain = result["data"]["text/plain"]
    assert plain.startswith("height map 3 x 4 float64") and "min 0, max 11, mean 5.5" in plain
    assert "11." not in plain  # the values themselves are never printed
    assert len(nb.cells[4].outputs) == 1


def test_load_with_name_prints_one_line_and_binds(executed) -> None:
    nb, _ = executed
    out = _text(nb.cells[5].outputs, "stdout").splitlines()
    assert out[0].startswith("Loaded scan.npz into again (3 x 4 float64, 2 metadata keys) in ")
    assert out[1:] == ["ann (3, 4)"]


def test_missing_file_is_one_line_without_traceback(executed) -> None:
    nb, _ = executed
    _assert_one_line_usage_error(nb.cells[6].outputs, "no such file: 'missing.npz'")


def test_unloaded_magics_are_gone_in_the_kernel(executed) -> None:
    nb, _ = executed
    shown = _text(nb.cells[7].outputs, "stderr")
    assert "UsageError: Line magic function `%tmd_load` not found." in shown


def test_completion_through_the_kernel_protocol(tmp_path) -> None:
    """Tab in a notebook sends complete_request; the reply must hold our candidates."""
    from jupyter_client.manager import start_new_kernel

    (tmp_path / "scan one.npz").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        reply = kc.execute_interactive(
            "%load_ext tmd_nb\nimport numpy as np\nsurface = np.zeros((2, 2))\nsurfboard = 1", timeout=60
        )
        assert reply["content"]["status"] == "ok"

        def complete(code: str) -> tuple[list[str], str]:
            kc.complete(code, len(code))
            content = kc.get_shell_msg(timeout=60)["content"]
            assert content["status"] == "ok"
            replaced = code[content["cursor_start"] : content["cursor_end"]]
            return content["matches"], replaced

        assert complete("%tmd_export surf") == (["surface"], "surf")
        assert complete("%tmd_export surface sc") == (['"scan one.npz"'], "sc")
        assert complete("x = %tmd_load ") == (['"scan one.npz"'], "")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
