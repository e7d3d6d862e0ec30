"""The export panel in a real browser: JupyterLab on 127.0.0.1, driven in headless Chromium.

Runs ``notebooks/03_export_panel.ipynb`` in JupyterLab, then uses the panel the way a person
would (select a variable, add a typed metadata row, type a path, click Save) and checks the file
on disk with :func:`tmd_nb.load_from_npz`. A screenshot of the panel is kept in
``test-artifacts/panel.png`` (git-ignored). Needs Debian's ``chromium`` (Playwright cannot
download browsers here) and the ``browser`` extra; without them the test skips, except under
``TMD_NB_STRICT=1`` (``.ci/run``), where that is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, require

import tmd_nb

pytestmark = [pytest.mark.slow, pytest.mark.browser]

NOTEBOOK = ROOT / "notebooks" / "03_export_panel.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOTS = {
    name: ROOT / "docs" / "_static" / "screenshots" / name
    for name in ("panel.png", "panel-invalid.png", "load-panel.png")
}
SERVER_START_TIMEOUT = 60.0
UI_TIMEOUT_MS = 60_000


class Lab(NamedTuple):
    url: str
    token: str
    root: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_ready(proc: subprocess.Popen, url: str, token: str, log: Path) -> None:
    """Poll the server's REST API until it answers (or the process dies, or time runs out)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {proc.returncode} while starting:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        proc_wait = 0.2  # a bounded wait on the process itself, which also notices an early exit
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=proc_wait)
    pytest.fail(f"JupyterLab did not answer on {url} within {SERVER_START_TIMEOUT:.0f} s ({last}):\n{_tail(log)}")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A private JupyterLab server on 127.0.0.1 serving a copy of notebook 03; always stopped.

    The server and its kernel see a home folder of their own, ``tmp_path/home``, and serve
    ``~/scans``; temporary folders go to ``~/tmp``. The panels name files under the home folder
    from ``~``, so the screenshots the docs show read ``~/scans/...``, not pytest's paths.
    """
    require(
        CHROMIUM is not None,
        "Chromium not found (install Debian's 'chromium' package; Playwright cannot download its own browsers here)",
    )
    require(
        importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install -e '.[browser]')"
    )
    require(
        importlib.util.find_spec("jupyterlab") is not None, "jupyterlab is not installed (pip install -e '.[browser]')"
    )
    home = tmp_path / "home"
    root = home / "scans"
    root.mkdir(parents=True)
    (home / "tmp").mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    env = dict(os.environ)
    # Keep every Jupyter/IPython setting and runtime file of this server inside tmp_path.
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"),
            "IPYTHONDIR": str(home / "ipython"),
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        }
    )
    # User settings of this private server: do not ask about (or fetch) the Jupyter news feed.
    notification = home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false"}')
    port = _free_port()
    token = secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        # No network calls: no news feed, no update check, no PyPI extension manager.
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI often run as root; the server is on 127.0.0.1 only
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(proc, url, token, log)
        yield Lab(url, token, root, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _wait_for_kernel(page, expect) -> None:
    """Wait until the notebook's kernel is idle, accepting JupyterLab's "Select Kernel" dialog if it asks.

    Whether the dialog appears depends on how fast the kernel specs load, so both paths are handled.
    """
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    idle = page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\|\s*Idle"))
    expect(accept.or_(idle).first).to_be_visible()
    if accept.is_visible():
        accept.click()
        expect(accept).to_have_count(0)
    expect(idle.first).to_be_visible()


def _wait_for_new_picture(page, image, old_src: str | None) -> None:
    """Wait until the preview <img> shows a new picture, fully decoded (ipywidgets swaps its blob URL)."""
    page.wait_for_function(
        "([img, old]) => img.src && img.src !== old && img.complete && img.naturalWidth > 0",
        arg=[image.element_handle(), old_src],
        timeout=UI_TIMEOUT_MS,
    )


def _save_screenshot(page, name: str, tmp_path: Path, element=None) -> Path:
    """Screenshot into tmp_path, then keep a copy in test-artifacts/ (git-ignored) for people to look at.

    With ``TMD_NB_DOCS_SCREENSHOTS=1``, the panel pictures the user guide shows are refreshed in
    ``docs/_static/screenshots/`` too (they are committed, so the site builds without a browser).
    """
    shot = tmp_path / name
    if element is not None:
        element.screenshot(path=str(shot))
    else:
        page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    if os.environ.get("TMD_NB_DOCS_SCREENSHOTS") == "1" and name in DOCS_SCREENSHOTS:
        shutil.copy(shot, DOCS_SCREENSHOTS[name])
    return ARTIFACTS / name


def test_export_panel_in_jupyterlab(lab: Lab, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(UI_TIMEOUT_MS)
            try:
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
                page.locator(".jp-Notebook .jp-Cell").first.wait_for()
                _wait_for_kernel(page, expect)
                # Run > Run All Cells, through the menu bar like a person.
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
                page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

                panel = page.locator(".tmd-export-panel")
                expect(panel).to_be_visible()  # the widget rendered (not its text repr)
                # The scripted cells ran to the end without errors.
                expect(page.locator(".jp-OutputArea-output", has_text="same heights: True")).to_be_visible()
                expect(
                    page.locator(
                        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']", has_text="Traceback"
                    )
                ).to_have_count(0)

                picker = panel.locator(".tmd-panel-picker select")
                labels = picker.locator("option").all_text_contents()
                index = next(i for i, text in enumerate(labels) if text.startswith("surface"))
                assert "240 x 320 float32" in labels[index].replace("\xa0", " ")
                image = panel.locator(".tmd-panel-preview")
                old_picture = image.get_attribute("src")
                picker.select_option(index=index)
                expect(panel.locator(".tmd-panel-summary")).to_contain_text("240 x 320 float32")
                _wait_for_new_picture(page, image, old_picture)

                panel.locator(".tmd-panel-add-row").click()
                row = panel.locator(".tmd-meta-row").last
                row.locator(".tmd-meta-key input").fill("sample_id")
                row.locator(".tmd-meta-type select").select_option(label="int")
                value = row.locator(".tmd-meta-value input")
                value.fill("4x2")
                expect(row.locator(".tmd-meta-check")).to_contain_text("not a whole number")
                expect(panel.locator(".tmd-panel-save")).to_be_disabled()
                expect(panel.locator(".tmd-panel-problems")).to_contain_text("metadata 'sample_id'")
                _save_screenshot(page, "panel-invalid.png", tmp_path, panel)
                value.fill("42")
                expect(row.locator(".tmd-meta-check")).to_contain_text("\u2713")

                panel.locator(".tmd-panel-path input").fill("browser_export.npz")
                save = panel.locator(".tmd-panel-save")
                expect(save).to_be_enabled()
                save.click()
                status = panel.locator(".tmd-panel-status")
                expect(status).to_contain_text("Saved surface to")
                expect(status).to_contain_text("Saved surface to ~/scans/browser_export.npz")
                # Saving again needs an explicit overwrite confirmation.
                expect(panel.locator(".tmd-panel-exists")).to_contain_text("already exists")
                expect(save).to_be_disabled()
                shot = _save_screenshot(page, "panel.png", tmp_path, panel)

                # The dict sample: its metadata prefilled as typed rows, the mask read-only.
                index = next(i for i, text in enumerate(labels) if text.startswith("scan"))
                old_picture = image.get_attribute("src")
                picker.select_option(index=index)
                expect(panel.locator(".tmd-panel-summary")).to_contain_text("240 x 320 float64")
                _wait_for_new_picture(page, image, old_picture)
                expect(panel.locator(".tmd-meta-row")).to_have_count(7)
                expect(panel.locator(".tmd-meta-readonly .tmd-meta-value input")).to_have_value("array(240, 320) bool")
                expect(panel.locator(".tmd-panel-path input")).to_have_value("browser_export.npz")  # typed paths stay
                _save_screenshot(page, "panel-scan.png", tmp_path, panel)

                # The load panel of the notebook was bound by a scripted cell; it rendered too.
                loader = page.locator(".tmd-load-panel")
                expect(loader.locator(".tmd-load-status")).to_contain_text("scan_again now holds the height map")
                expect(loader.locator(".tmd-load-status")).to_contain_text("from ~/tmp/")
                expect(loader.locator(".tmd-load-summary")).to_contain_text("operator")
                _save_screenshot(page, "load-panel.png", tmp_path, loader)
            except Exception:
                _save_screenshot(page, "panel-failure.png", tmp_path)
                raise
        finally:
            browser.close()

    written = lab.root / "browser_export.npz"
    assert written.is_file(), f"no file at {written}; JupyterLab log:\n{_tail(lab.log)}"
    data = tmd_nb.load_from_npz(written)
    assert set(data) == {"height_map", "sample_id"}
    assert type(data["sample_id"]) is int and data["sample_id"] == 42
    assert data["height_map"].shape == (240, 320) and data["height_map"].dtype == np.float32
    assert shot.stat().st_size > 10_000  # a real picture of the panel, kept for people to look at
