"""Sphinx helpers of the tmd_nb site, so that the site follows the code without hand edits.

* ``.. tmd-nb-api::`` writes the API reference from the module's ``__all__``: a summary table,
  then one autodoc entry per public name, grouped into functions, classes and exceptions. A name
  added to ``__all__`` appears without touching the docs; a public name without a docstring is a
  warning (an error under ``sphinx-build -W``).
* Links in Markdown pages and in the repository files they include (README.md, SECURITY.md...)
  are written relative to the file they appear in, as GitHub resolves them. Each one is rewritten
  to what it means on the site: a link to a file that is a page of the site (``docs/FORMAT.md``,
  ``notebooks/01_quickstart.ipynb``) becomes a link to that page; a link to any other file of the
  repository (``tests/test_safety.py``, ``README.md#export-panel``) becomes a link to the file in
  the repository (``tmd_nb_repository``). Broken links stay as they are, so Sphinx reports them.
* A block between ``<!-- if-present PATH -->`` and ``<!-- end-if-present -->`` is kept only when
  PATH (relative to the page) exists, so a page can include a file that not every branch has yet.
"""

from __future__ import annotations

import importlib
import inspect
import posixpath
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

PAGE_SUFFIXES = (".md", ".ipynb", ".rst")
# [text](target) or [text](target "title"), not an image; the text may hold `code` but no brackets.
LINK = re.compile(r"(?<!!)(\[[^\]\n]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
IF_PRESENT = re.compile(r"^<!-- if-present (\S+) -->\n(.*?)^<!-- end-if-present -->\n", re.M | re.S)


# --------------------------------------------------------------------------- API reference


def _kind(obj: Any) -> str:
    if inspect.isclass(obj):
        return "exception" if issubclass(obj, BaseException) else "class"
    if callable(obj):
        return "function"
    return "data"


def _attribute_doc(module: str, member: str) -> list[str]:
    try:
        docs = ModuleAnalyzer.for_module(module).find_attr_docs()
    except PycodeError:
        return []
    return list(docs.get(("", member), []))


GROUPS = {"function": "Functions", "class": "Classes", "exception": "Exceptions and warnings", "data": "Data"}


class ApiDirective(SphinxDirective):
    """``.. tmd-nb-api::`` (the module defaults to ``tmd_nb_api_module``)."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0] if self.arguments else self.config.tmd_nb_api_module
        module = importlib.import_module(name)
        public = list(getattr(module, "__all__", []))
        if not public:
            logger.warning("%s has no __all__: nothing to document", name, location=self.get_location())
            return []
        by_kind: dict[str, list[str]] = {kind: [] for kind in GROUPS}
        for member in public:
            obj = getattr(module, member)
            # (Data such as __version__ cannot carry a docstring of its own: getdoc gives its type's.)
            if _kind(obj) != "data" and not (inspect.getdoc(obj) or "").strip():
                logger.warning(
                    "%s.%s is public (in __all__) but has no docstring", name, member, location=self.get_location()
                )
            by_kind[_kind(obj)].append(member)
        lines = [".. autosummary::", "   :nosignatures:", ""]
        # (Data is left out of the table: autosummary would summarise it by its type's docstring.)
        lines += [
            f"   {name}.{member}"
            for kind in GROUPS
            if kind != "data"
            for member in sorted(by_kind[kind], key=str.lower)
        ]
        lines.append("")
        for kind, title in GROUPS.items():
            members = sorted(by_kind[kind], key=str.lower)
            if not members:
                continue
            lines += [title, "-" * len(title), ""]
            for member in members:
                if kind == "data":
                    # autodata would show the docstring of the value's type (str's, for __version__):
                    # a constant is shown with its value and the ``#:`` comment it has in the source, if any.
                    lines += [f".. py:data:: {name}.{member}", f"   :value: {getattr(module, member)!r}", ""]
                    lines += [f"   {line}" for line in _attribute_doc(name, member)] + [""]
                    continue
                lines.append(f".. auto{kind}:: {name}.{member}")
                if kind in ("class", "exception"):
                    lines.append("   :show-inheritance:")
                if kind == "class":
                    lines.append("   :members:")
                lines.append("")
        return self.parse_text_to_nodes("\n".join(lines), allow_section_headings=True)


# --------------------------------------------------------------------------- links and optional includes


def _pages(srcdir: Path) -> dict[Path, str]:
    """Map the real location of each folder the site reads (docs/, and where its symlinks lead) to its site path."""
    roots = {srcdir.resolve(): ""}
    for entry in srcdir.iterdir():
        if entry.is_symlink() and entry.is_dir():
            roots[entry.resolve()] = entry.name + "/"
    return roots


def _rewrite(text: str, base: Path, app: Sphinx, from_dir: str) -> str:
    """Rewrite the links of ``text`` (a file in directory ``base``) for a page in site directory ``from_dir``."""
    srcdir = Path(app.srcdir)
    repo_root = srcdir.resolve().parent
    roots = _pages(srcdir)
    url = app.config.tmd_nb_repository.rstrip("/")
    branch = app.config.tmd_nb_repository_branch

    def replace(match: re.Match[str]) -> str:
        target = match.group(2)
        if target.startswith("#") or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
            return match.group(0)  # an anchor on the same page, or a URL
        path_part, hash_, fragment = target.partition("#")
        real = (base / path_part).resolve()
        if not real.exists():
            return match.group(0)  # broken: left for Sphinx to report
        if real.is_file() and real.suffix in PAGE_SUFFIXES:
            for root, prefix in roots.items():
                if real.is_relative_to(root):
                    in_site = prefix + real.relative_to(root).as_posix()
                    docname = in_site.rsplit(".", 1)[0]
                    if docname in app.env.found_docs:
                        if prefix:
                            # MyST resolves symlinks in file links (and then finds no page there), so a page
                            # reached through a linked folder is linked by its name, without anchor.
                            return f"{match.group(1)}{posixpath.relpath(docname, from_dir or '.')}{match.group(3)}"
                        rel = posixpath.relpath(in_site, from_dir or ".")
                        return f"{match.group(1)}{rel}{hash_}{fragment}{match.group(3)}"
        if real.is_relative_to(repo_root) and url:
            kind = "tree" if real.is_dir() else "blob"
            where = real.relative_to(repo_root).as_posix()
            return f"{match.group(1)}{url}/{kind}/{branch}/{where}{hash_}{fragment}{match.group(3)}"
        return match.group(0)

    return LINK.sub(replace, text)


def _keep_if_present(app: Sphinx, text: str, base: Path) -> str:
    def keep(match: re.Match[str]) -> str:
        path = base / match.group(1)
        # A dependency, present or not: the page is read again when the file appears or changes.
        app.env.note_dependency(str(path))
        return match.group(2) if path.exists() else ""

    return IF_PRESENT.sub(keep, text)


def _on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".md":
        return  # notebooks are JSON; their links are left to MyST-NB
    base = path.parent
    text = _keep_if_present(app, source[0], base)
    source[0] = _rewrite(text, base, app, posixpath.dirname(docname))


def _on_include_read(app: Sphinx, relative_path: Path, parent_docname: str, content: list[str]) -> None:
    included = (Path(app.srcdir) / relative_path).resolve()
    if included.suffix != ".md":
        return
    # MyST passes the parent's name without its folder; the pages that include files are top-level.
    content[0] = _rewrite(content[0], included.parent, app, posixpath.dirname(parent_docname))


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("tmd_nb_api_module", "tmd_nb", "env")
    app.add_config_value("tmd_nb_repository", "", "env")
    app.add_config_value("tmd_nb_repository_branch", "main", "env")
    app.add_directive("tmd-nb-api", ApiDirective)
    app.connect("source-read", _on_source_read)
    app.connect("include-read", _on_include_read)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
