"""The site's own Sphinx extension (docs/_ext/tmd_nb_docs.py), on small throwaway projects.

Each test lays out a tiny repository (a module, a README, a docs/ folder using the extension),
runs ``sphinx-build -W`` on it in a subprocess, as CI runs it on the real site, and reads the HTML.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, require

pytestmark = pytest.mark.slow

EXTENSION_DIR = ROOT / "docs" / "_ext"
REPOSITORY = "https://example.org/lab/repo"


def make_project(root: Path, pages: dict[str, str], module: str) -> Path:
    """A repository at ``root`` with ``fakepkg.py`` and ``docs/`` holding ``pages``; returns docs/."""
    require(importlib.util.find_spec("sphinx") is not None, "sphinx is not installed (pip install -e '.[docs]')")
    (root / "fakepkg.py").write_text(textwrap.dedent(module))
    docs = root / "docs"
    docs.mkdir()
    (docs / "conf.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path[:0] = [{str(EXTENSION_DIR)!r}, {str(root)!r}]
            extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.autosummary", "tmd_nb_docs"]
            exclude_patterns = ["_build"]
            myst_heading_anchors = 3
            tmd_nb_api_module = "fakepkg"
            tmd_nb_repository = {REPOSITORY!r}
            """
        )
    )
    toctree = "\n".join(name.rsplit(".", 1)[0] for name in pages)
    (docs / "index.md").write_text(f"# Index\n\n```{{toctree}}\n{toctree}\n```\n")
    for name, text in pages.items():
        (docs / name).write_text(textwrap.dedent(text))
    return docs


def build(docs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(docs), str(docs / "_build")],
        capture_output=True,
        text=True,
        timeout=120,
    )


DOCUMENTED = '''
    """A module."""

    __all__ = ["Thing", "Trouble", "VERSION", "do"]
    VERSION = "1.2"


    def do(x: int) -> int:
        """Do something with ``x``."""
        return x


    class Thing:
        """A thing."""

        def act(self) -> None:
            """Act."""


    class Trouble(ValueError):
        """Something went wrong."""
'''


def test_the_api_page_has_an_entry_for_every_name_of_all(tmp_path: Path) -> None:
    docs = make_project(tmp_path, {"api.rst": "API\n===\n\n.. tmd-nb-api::\n"}, DOCUMENTED)
    result = build(docs)
    assert result.returncode == 0, result.stderr
    html = (docs / "_build" / "api.html").read_text()
    for name in ("do", "Thing", "Trouble", "VERSION"):
        assert f'id="fakepkg.{name}"' in html, name
    assert 'id="fakepkg.Thing.act"' in html  # classes list their members
    for title in ("Functions", "Classes", "Exceptions and warnings", "Data"):
        assert f">{title}<" in html, title
    assert "str(object=" not in html  # VERSION is shown by its value, not by str's docstring
    assert "<span class=\"pre\">'1.2'</span>" in html


def test_a_public_name_without_a_docstring_fails_the_build(tmp_path: Path) -> None:
    module = DOCUMENTED.replace('"""Do something with ``x``."""', "# no docstring")
    docs = make_project(tmp_path, {"api.rst": "API\n===\n\n.. tmd-nb-api::\n"}, module)
    result = build(docs)
    assert result.returncode != 0
    assert "fakepkg.do is public (in __all__) but has no docstring" in result.stderr


def test_links_to_repository_files_become_links_to_pages_or_to_the_repository(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    (tmp_path / "README.md").write_text(
        "# Readme\n\n## Part\n\n"
        "See [the spec](docs/spec.md#a-heading), [a test](tests/test_x.py), [the top](README.md#part), "
        "[nowhere](docs/missing.md).\n\n## End\n"
    )
    pages = {
        "spec.md": "# Spec\n\n## A heading\n\nText.\n",
        "guide.md": """\
            # Guide

            ```{include} ../README.md
            :start-after: "## Part"
            :end-before: "## End"
            ```

            <!-- if-present ../SECURITY.md -->
            ## Security section
            <!-- end-if-present -->
        """,
    }
    docs = make_project(tmp_path, pages, DOCUMENTED)
    result = build(docs)
    # The one broken link is left alone, so Sphinx reports it (and -W fails the build).
    assert result.returncode != 0
    assert "missing.md" in result.stderr and result.stderr.count("WARNING") == 1, result.stderr
    html = (docs / "_build" / "guide.html").read_text()
    assert 'href="spec.html#a-heading"' in html  # a page of the site: a link to the page
    assert f'href="{REPOSITORY}/blob/main/tests/test_x.py"' in html  # any other file: the repository
    assert f'href="{REPOSITORY}/blob/main/README.md#part"' in html
    assert "Security section" not in html  # no SECURITY.md: the block is left out

    (tmp_path / "SECURITY.md").write_text("# Security\n")
    (docs / "_build").rename(tmp_path / "old_build")  # a fresh build sees the file
    build(docs)
    assert "Security section" in (docs / "_build" / "guide.html").read_text()
