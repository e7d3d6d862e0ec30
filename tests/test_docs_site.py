"""The documentation site, built by Sphinx and read in a real browser.

The site is built once per session with ``sphinx-build -W --keep-going`` (which executes the
example notebooks), or taken from ``TMD_NB_DOCS_BUILD`` when that names a finished HTML build
(``.ci/run`` builds the site first and passes it on, so CI builds it once). It is served from
127.0.0.1 by ``http.server`` and read in headless Chromium the way a person would: from the
index to a notebook page, which must show a picture its code drew; to the API page, which must
list ``export_to_npz`` and every other public name; to the format specification. Requests that
leave 127.0.0.1 are refused, so none of this may depend on the network. Needs Debian's
``chromium``; without it the test skips, except under ``TMD_NB_STRICT=1`` (``.ci/run``).
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, require

import tmd_nb

pytestmark = [pytest.mark.slow, pytest.mark.browser]

BUILD_TIMEOUT = 900  # seconds: the build executes every notebook
UI_TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built HTML site: TMD_NB_DOCS_BUILD's, or one built now into a temporary folder."""
    given = os.environ.get("TMD_NB_DOCS_BUILD")
    if given:
        html = Path(given)
        assert (html / "index.html").is_file(), f"TMD_NB_DOCS_BUILD={given} holds no built site (no index.html)"
        return html
    require(importlib.util.find_spec("sphinx") is not None, "sphinx is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs")
    html = out / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(html)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    assert result.returncode == 0, f"sphinx-build failed ({result.returncode}):\n{result.stderr[-6000:]}"
    return html


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def server(site: Path) -> Iterator[str]:
    """The site served over HTTP on 127.0.0.1 (as a host would serve it); its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def page(server: str):
    """A Chromium page that may load nothing but the local site."""
    require(
        CHROMIUM is not None,
        "Chromium not found (install Debian's 'chromium' package; Playwright cannot download its own browsers here)",
    )
    require(
        importlib.util.find_spec("playwright") is not None, "playwright is not installed (pip install -e '.[test]')"
    )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)

    def local_only(route) -> None:
        if route.request.url.startswith(server + "/"):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(UI_TIMEOUT_MS)
            pg.route("**/*", local_only)
            pg.goto(f"{server}/index.html")
            yield pg
        finally:
            browser.close()


def _wait_for_pictures(page, selector: str) -> list[int]:
    """Wait until every <img> matching ``selector`` is decoded; return their natural widths."""
    page.locator(selector).first.wait_for()
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(img => img.complete && img.naturalWidth > 0)",
        arg=selector,
        timeout=UI_TIMEOUT_MS,
    )
    return page.eval_on_selector_all(selector, "imgs => imgs.map(img => img.naturalWidth)")


def test_a_notebook_page_shows_its_executed_outputs(page) -> None:
    from playwright.sync_api import expect

    main = page.locator("main")
    main.get_by_role("link", name="Examples", exact=True).first.click()
    expect(page.locator("h1")).to_contain_text("Examples")
    main.locator(".toctree-wrapper").get_by_role("link", name="tmd_nb quick start").click()
    expect(page.locator("h1")).to_contain_text("tmd_nb quick start")

    widths = _wait_for_pictures(page, "main .cell_output img")
    assert widths and max(widths) >= 200, f"the plotted coin is not a real picture: widths {widths}"
    outputs = page.locator("main .cell_output")
    expect(outputs.filter(has_text="round trip: True")).to_have_count(1)
    # The one-line error of the broken file, as the notebook printed it.
    expect(outputs.filter(has_text="FormatError:").filter(has_text="broken.npz")).to_have_count(1)


def test_the_magics_notebook_shows_its_one_line_errors(page, server: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{server}/examples/02_magics.html")
    errors = page.locator("main .cell_output .stderr", has_text="UsageError:")
    expect(errors.first).to_be_visible()
    assert errors.count() >= 4
    assert "Traceback" not in page.locator("main").inner_text()


def test_the_api_page_lists_every_public_name(page) -> None:
    from playwright.sync_api import expect

    page.locator("main").get_by_role("link", name="API reference").first.click()
    expect(page.locator("h1")).to_contain_text("API reference")
    entry = page.locator("dt[id='tmd_nb.export_to_npz']")
    expect(entry).to_be_visible()
    expect(entry).to_contain_text("export_to_npz")
    expect(page.locator("dd", has=page.locator("p")).filter(has_text="typed metadata").first).to_be_visible()
    missing = [name for name in tmd_nb.__all__ if page.locator(f"dt[id='tmd_nb.{name}']").count() != 1]
    assert not missing, f"public names without an entry on the API page: {missing}"
    # The summary table at the top links to the entries.
    expect(page.locator("table.autosummary a", has_text="export_to_npz")).to_have_attribute(
        "href", "#tmd_nb.export_to_npz"
    )


def test_the_format_spec_and_the_panel_screenshots_are_there(page, server: str) -> None:
    from playwright.sync_api import expect

    page.locator("main").get_by_role("link", name="file format specification").click()
    expect(page.locator("h1")).to_contain_text("tmd_nb file formats")
    expect(page.locator("main table").filter(has_text="__tmd_nb_format__.npy")).to_have_count(1)

    page.goto(f"{server}/user-guide.html")
    widths = _wait_for_pictures(page, "main figure img")
    assert len(widths) == 3 and min(widths) >= 300, f"panel screenshots: widths {widths}"

    page.goto(f"{server}/benchmarks.html")
    widths = _wait_for_pictures(page, "main .cell_output img")
    assert widths and max(widths) >= 300, f"the benchmark plot: widths {widths}"
