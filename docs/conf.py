"""Sphinx configuration of the tmd_nb documentation site.

Build it from the repository root (``pip install -e '.[docs]'`` first)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

MyST reads the Markdown pages; MyST-NB executes the example notebooks of ``notebooks/`` (linked
in as ``docs/examples``) and ``benchmarks.md`` at build time, so the site shows their real
outputs. The API reference is generated from ``tmd_nb.__all__`` by ``_ext/tmd_nb_docs.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS / "_ext"))

import tmd_nb  # noqa: E402  (after the path set-up, like every Sphinx conf.py)

project = "tmd_nb"
author = "the tmd_nb authors"
copyright = "the tmd_nb authors, MIT licence"
release = tmd_nb.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.viewcode",
    "numpydoc",
    "tmd_nb_docs",
]

# The Markdown files of docs/ that are pages of their own (FORMAT.md, magics.md) keep their
# names, so links to them from the README and the code stay valid on GitHub too.
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "examples/README.md", "README.md"]
templates_path: list[str] = []
# magics.md starts at "##", as it did as a section of the README; it is a page of its own here.
suppress_warnings = ["myst.header"]

# --- MyST and MyST-NB --------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # "page.md#a-heading" links, as GitHub resolves them
nb_execution_mode = "cache"  # a fresh clone executes everything; a rebuild re-runs changed notebooks only
nb_execution_timeout = 600  # seconds per cell: 05_large_heightmaps saves 64 MB maps several times
nb_execution_raise_on_error = True  # a notebook that fails fails the build (cells tagged raises-exception may raise)
nb_execution_show_tb = True  # ... and the log shows why
nb_merge_streams = True
nb_render_markdown_format = "myst"

# --- API reference -----------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autosummary_generate = False  # the summary table only; the entries are on the same page
numpydoc_show_class_members = False  # the classes list their members through autodoc instead
numpydoc_xref_param_type = False
# Every public name must carry a docstring: GL08 ("no docstring") is a warning, so -W fails on it.
numpydoc_validation_checks = {"GL08"}
tmd_nb_api_module = "tmd_nb"

# Links in included repository files (README.md, SECURITY.md, magics.md) that point outside docs/
# become links to the file in the repository.
tmd_nb_repository = "https://github.com/tmd-nb/tmd_nb"
tmd_nb_repository_branch = "main"

# --- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"tmd_nb {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
html_theme_options = {
    "github_url": tmd_nb_repository,
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_context = {"default_mode": "light"}
# Only the examples have pages below them; elsewhere the left column would be an empty "Section
# Navigation". (Names without wildcards: Sphinx refuses two wildcard patterns matching one page.)
html_sidebars: dict[str, list[str]] = {
    page.stem: [] for page in DOCS.iterdir() if page.suffix in (".md", ".rst") and page.stem != "examples"
}
