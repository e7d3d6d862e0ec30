"""Tab completion for the magics' arguments: exportable variables, height-map files, options.

:func:`complete` is a plain function of the line before the cursor and the user namespace;
:func:`register_completer` wraps it in an IPython (>= 8.6) context matcher. The line is read
with the magics' own tokenizer (:func:`tmd_nb.notebook.arguments.tokenize`), so a completed path is
exactly the word the magic will see.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..formats import registry
from ..heightmap import exportable, exportable_names
from ..storage.deflate import LEVEL_NAMES
from .arguments import Syntax, tokenize

__all__ = [
    "MATCHER_ID",
    "complete",
    "exportable",
    "exportable_names",
    "path_candidates",
    "register_completer",
    "unregister_completer",
]

MATCHER_ID = "tmd_nb.notebook.magics.complete"

_MAGIC_LINE = r"\s*(?:(?P<target>[A-Za-z_]\w*)\s*=\s*)?(?P<percent>%?)(?P<magic>{names})\s+(?P<args>.*)"
_NEEDS_QUOTES = set(" \t\"'\\$#&;|<>()[]{}*?!`")


def path_candidates(typed: str, extensions: tuple[str, ...] = registry.extensions()) -> list[str]:
    """Directories (ending in ``/``) and files with one of ``extensions`` that complete ``typed``.

    ``~`` is expanded for the lookup and kept in the result; hidden entries are offered only
    when the typed name starts with a dot.
    """
    expanded = os.path.expanduser(typed)
    directory, stem = os.path.split(expanded)
    shown_dir = typed[: len(typed) - len(stem)] if stem else typed
    try:
        entries = list(os.scandir(directory or "."))
    except OSError:
        return []
    results = []
    for entry in entries:
        name = entry.name
        if not name.startswith(stem) or (name.startswith(".") and not stem.startswith(".")):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            results.append(shown_dir + name + "/")
        elif name.lower().endswith(extensions):
            results.append(shown_dir + name)
    return sorted(results)[:500]


def _quote_path(candidate: str, open_quote: str | None) -> str:
    """The text that replaces the typed word: quoted when it holds spaces or shell-ish characters."""
    quote = open_quote
    if quote is None and _NEEDS_QUOTES & set(candidate):
        quote = "'" if '"' in candidate else '"'
    if quote is None:
        return candidate
    closing = "" if candidate.endswith("/") else quote
    return f"{quote}{candidate}{closing}"


@functools.cache
def _magic_line(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(_MAGIC_LINE.format(names="|".join(map(re.escape, names))), re.DOTALL)


def complete(
    line_before_cursor: str, namespace: Mapping[str, Any], syntaxes: Mapping[str, Syntax]
) -> tuple[str, list[str], str] | None:
    """Completions for the argument being typed on the line of one of the magics in ``syntaxes``.

    Returns ``(typed, candidates, kind)``: ``typed`` is the raw text the candidates replace
    (with its opening quote, if any), ``kind`` is "variable", "path" or "option". ``None``
    when the line is not one of those magics.
    """
    match = _magic_line(tuple(syntaxes)).fullmatch(line_before_cursor)
    if match is None or (match["target"] and not match["percent"]):
        return None
    syntax = syntaxes[match["magic"]]
    words, typed, value, open_quote = tokenize(match["args"], partial=True)
    options, value_options = syntax.options, syntax.value_options
    if words and words[-1] == "--level" and "--level" in value_options:
        return typed, [n for n in LEVEL_NAMES if n.startswith(typed)], "option"
    if words and words[-1] in syntax.choices:
        return typed, [c for c in syntax.choices[words[-1]] if c.startswith(typed)], "option"
    if words and words[-1] in value_options:
        return typed, [], "option"  # an option's value: nothing sensible to offer
    if typed.startswith("-"):
        return typed, [o for o in options if o.startswith(typed)], "option"
    if typed[:1] in ('"', "'") and open_quote is None:
        return typed, [], "path"  # a finished quoted word
    positionals: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in value_options:
            skip = True
        elif not word.startswith("-"):
            positionals.append(word)
    wanted = syntax.positionals[len(positionals)] if len(positionals) < len(syntax.positionals) else None
    if wanted == "variable":
        if typed and not typed.isidentifier():
            return typed, [], "variable"  # scan["z"] and such: leave it to IPython's own completers
        return typed, exportable_names(namespace, typed), "variable"
    if wanted == "path":
        return typed, [_quote_path(c, open_quote) for c in path_candidates(value)], "path"
    return typed, [], "path"


def _make_matcher(shell: Any, syntaxes: Mapping[str, Syntax]) -> Callable[..., Any]:
    """An IPython (>= 8.6) context matcher that completes our magics' arguments."""
    from IPython.core.completer import SimpleCompletion, context_matcher

    @context_matcher(identifier=MATCHER_ID, priority=100)
    def tmd_nb_matcher(context: Any) -> dict[str, Any]:
        before = context.text_until_cursor
        found = complete(before, shell.user_ns, syntaxes)
        if found is None or not found[1] or not before.endswith(found[0]):
            return {"completions": [], "suppress": False}
        typed, candidates, kind = found
        return {
            "completions": [SimpleCompletion(text=c, type=kind) for c in candidates],
            "matched_fragment": typed,
            "suppress": True,
            "ordered": True,
        }

    return tmd_nb_matcher


def unregister_completer(shell: Any) -> None:
    """Remove our matcher from ``shell`` (a shell without a completer is left alone)."""
    completer = getattr(shell, "Completer", None)
    if completer is not None:
        completer.custom_matchers[:] = [
            m for m in completer.custom_matchers if getattr(m, "matcher_identifier", None) != MATCHER_ID
        ]


def register_completer(shell: Any, syntaxes: Mapping[str, Syntax]) -> None:
    """Add a matcher for the magics in ``syntaxes`` to ``shell``, replacing one registered before (so
    reloading adds no twin)."""
    unregister_completer(shell)
    completer = getattr(shell, "Completer", None)
    if completer is not None:
        completer.custom_matchers.append(_make_matcher(shell, syntaxes))
