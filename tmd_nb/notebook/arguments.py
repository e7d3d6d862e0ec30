"""The argument line of the magics: words, the variable a NAME refers to, ``-m KEY=VALUE`` values.

One tokenizer (:func:`tokenize`) serves both running a magic (:func:`split_line`, strict) and
completing one (``partial=True``: the text before the cursor, whose last word is unfinished).
Every user mistake is a one-line :class:`~IPython.core.error.UsageError`.
"""

from __future__ import annotations

import argparse
import ast
import keyword
import unicodedata
from collections.abc import Mapping
from typing import Any, NamedTuple

from IPython.core.error import UsageError

from ..heightmap import HEIGHT_MAP

__all__ = [
    "Syntax",
    "Tokens",
    "is_variable_name",
    "name_problem",
    "parse_level",
    "parse_line",
    "parse_meta",
    "resolve_name",
    "split_line",
    "syntax_of",
    "tokenize",
]


class Syntax(NamedTuple):
    """What a magic's argument line holds, for completion: its options and what its positionals are."""

    #: Every option string (``-f``, ``--force``, ...), sorted.
    options: tuple[str, ...]
    #: The options that take a value (the next word is theirs, not a positional).
    value_options: frozenset[str]
    #: What each positional argument is, in order: ``"variable"`` or ``"path"``.
    positionals: tuple[str, ...]
    #: The values an option accepts when its parser lists them (``--format``: the format names).
    choices: Mapping[str, tuple[str, ...]] = {}


def syntax_of(parser: argparse.ArgumentParser, positionals: tuple[str, ...]) -> Syntax:
    """The :class:`Syntax` of a magic from its own argument parser, so completion cannot drift from it."""
    # argparse lists its arguments only in the private ``_actions``; this is the one place that reads it.
    actions = [a for a in parser._actions if a.option_strings]
    return Syntax(
        options=tuple(sorted(o for a in actions for o in a.option_strings)),
        value_options=frozenset(o for a in actions if a.nargs != 0 for o in a.option_strings),
        positionals=positionals,
        choices={o: tuple(map(str, a.choices)) for a in actions if a.choices for o in a.option_strings},
    )


class Tokens(NamedTuple):
    """What :func:`tokenize` found: the finished words and, in partial mode, the word being typed."""

    words: list[str]
    #: Raw text of the unfinished last word (what a completion replaces); "" after a space.
    typed: str = ""
    #: The unfinished word's value: top-level quotes removed, escapes applied.
    value: str = ""
    #: The quote the unfinished word has left open at the top level, if any.
    open_quote: str | None = None


def tokenize(line: str, *, partial: bool = False) -> Tokens:
    """Split a magic's argument line into words, shell-like, but keeping Python subscripts whole.

    At the top level, whitespace separates words, quotes group (and are removed) and a
    backslash escapes the next character (inside double quotes: only ``"`` and ``\\``), as in
    a shell, so ``"my scans/a.npz"`` is one path. Inside brackets (``[]``, ``()``, ``{}``)
    nothing is split or unquoted, so ``scan["z"]`` and ``-m tags=["a", "b"]`` reach Python intact.

    An unclosed quote or bracket is a :class:`UsageError`, unless ``partial``: then the line is
    the text before the cursor and its last, unfinished word is reported apart from ``words``.
    """
    words: list[str] = []
    current: list[str] = []
    start: int | None = None  # where the word being read began
    quote: str | None = None
    depth = 0
    i = 0
    while i < len(line):
        char = line[i]
        if depth:
            current.append(char)
            if quote:
                if char == "\\" and i + 1 < len(line):
                    current.append(line[i + 1])
                    i += 1
                elif char == quote:
                    quote = None
            elif char in "\"'":
                quote = char
            elif char in "([{":
                depth += 1
            elif char in ")]}":
                depth -= 1
        elif quote == "'":
            if char == "'":
                quote = None
            else:
                current.append(char)
        elif quote == '"':
            if char == '"':
                quote = None
            elif char == "\\" and i + 1 < len(line) and line[i + 1] in '"\\':
                current.append(line[i + 1])
                i += 1
            else:
                current.append(char)
        elif char.isspace():
            if start is not None:
                words.append("".join(current))
                current, start = [], None
        else:
            if start is None:
                start = i
            if char in "\"'":
                quote = char
            elif char == "\\" and i + 1 < len(line):
                current.append(line[i + 1])
                i += 1
            else:
                current.append(char)
                if char in "([{":
                    depth += 1
        i += 1
    if partial:
        typed = line[start:] if start is not None else ""
        return Tokens(words, typed, "".join(current), quote if depth == 0 else None)
    if quote:
        raise UsageError(f"unclosed {quote} quote in: {line.strip()}")
    if depth:
        raise UsageError(f"unclosed bracket in: {line.strip()}")
    if start is not None:
        words.append("".join(current))
    return Tokens(words)


def split_line(line: str) -> list[str]:
    """The words of a complete argument line (see :func:`tokenize`)."""
    return tokenize(line).words


def parse_line(parser: argparse.ArgumentParser, magic: str, line: str) -> argparse.Namespace:
    """Parse ``line`` with a ``@magic_arguments`` parser; ``-h``/``--help`` prints the help instead.

    The result has ``help=True`` when help was printed. A usage mistake names the magic and
    shows its usage line.
    """
    words = split_line(line)
    if "-h" in words or "--help" in words:
        print("\n".join(x for x in parser.format_help().splitlines() if x.strip() != "::").strip())
        return argparse.Namespace(help=True)
    try:
        args = parser.parse_args(words)
    except UsageError as exc:
        usage = " ".join(w for w in parser.format_usage().split() if w not in ("usage:", "::"))
        raise UsageError(f"%{magic}: {exc} (usage: {usage}; see %{magic}?)") from None
    args.help = False
    return args


def _check_expression(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Name):
        return
    if isinstance(node, ast.Attribute):
        _check_expression(node.value, text)
        return
    if isinstance(node, ast.Subscript):
        _check_expression(node.value, text)
        _check_index(node.slice, text)
        return
    raise UsageError(f"{text!r} is not a variable name, attribute or subscript (such as scan or scan['z'])")


def _check_index(node: ast.AST, text: str) -> None:
    if isinstance(node, ast.Tuple):
        for element in node.elts:
            _check_index(element, text)
    elif isinstance(node, ast.Slice):
        for part in (node.lower, node.upper, node.step):
            if part is not None:
                _check_index(part, text)
    elif (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float, complex)  # -1, not -"a" or -True
    ):
        return
    elif not isinstance(node, (ast.Constant, ast.Name)):
        raise UsageError(f"{text!r}: only constants and variable names may be used as subscripts")


def _evaluate(node: ast.AST, namespace: Mapping[str, Any], text: str) -> Any:
    """Walk a checked expression; never calls ``eval``."""
    if isinstance(node, ast.Name):
        try:
            return namespace[node.id]
        except KeyError:
            raise UsageError(f"name {node.id!r} is not defined") from None
    if isinstance(node, ast.Attribute):
        value = _evaluate(node.value, namespace, text)
        try:
            return getattr(value, node.attr)
        except AttributeError:
            raise UsageError(f"{text}: {type(value).__name__} object has no attribute {node.attr!r}") from None
    if isinstance(node, ast.Subscript):
        value = _evaluate(node.value, namespace, text)
        key = _evaluate_index(node.slice, namespace, text)
        try:
            return value[key]
        except (KeyError, IndexError, TypeError) as exc:
            what = "key" if isinstance(exc, KeyError) else "index"
            raise UsageError(f"{text}: bad {what} {key!r} for {type(value).__name__} ({exc})") from None
    raise AssertionError(f"unchecked node {node!r}")  # _check_expression ran first


def _evaluate_index(node: ast.AST, namespace: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate_index(e, namespace, text) for e in node.elts)
    if isinstance(node, ast.Slice):
        parts = [
            None if p is None else _evaluate_index(p, namespace, text) for p in (node.lower, node.upper, node.step)
        ]
        return slice(*parts)
    if isinstance(node, ast.Name):
        return _evaluate(node, namespace, text)
    return ast.literal_eval(node)


def _shown(text: str, limit: int = 60) -> str:
    """``text`` as a repr for a one-line message, cut in the middle when long."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit // 2]}\u2026{shown[-limit // 2 :]}"


def resolve_name(text: str, namespace: Mapping[str, Any]) -> Any:
    """The object ``text`` names in ``namespace``: a name, ``a.b`` attribute or ``a["k"]``/``a[0]`` item.

    Parsed with :mod:`ast` and walked by hand, so nothing but attribute and item access runs.
    Whatever goes wrong (a bad subscript, ``z[::0]``, a property that raises, an expression too
    deep to parse) is one :class:`UsageError` line naming ``text``.
    """
    problem = None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        problem = "is not a variable name, attribute or subscript (such as scan or scan['z'])"
    except (RecursionError, MemoryError, ValueError):  # too deeply nested to parse; NUL bytes
        problem = "is too long or deeply nested to be read as a variable name, attribute or subscript"
    if problem is None:
        try:
            _check_expression(tree.body, text)
            return _evaluate(tree.body, namespace, text)
        except UsageError:
            raise
        except RecursionError:
            problem = "is too deeply nested to be read as a variable name, attribute or subscript"
        except Exception as exc:  # a bad subscript such as -"a", a zero slice step, a failing property...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            problem = f"cannot be evaluated: {type(exc).__name__}" + (f": {reason[:200]}" if reason else "")
    raise UsageError(f"{_shown(text)} {problem}")


def is_variable_name(text: str) -> bool:
    """Whether ``text`` can name a new variable: what ``%tmd_load -n`` and the load panel's Name accept."""
    return name_problem(text) is None


def name_problem(text: str) -> str | None:
    """Why ``text`` cannot name a new variable that code can then use, or None if it can.

    It must be an identifier and not a keyword, and be written as Python reads it: identifiers
    in code are NFKC-normalised, so a variable bound as ``'ﬁ'`` could never be used by typing
    ``ﬁ`` (Python reads that as ``fi``). The rule of ``%tmd_load -n`` and the load panel's Name.
    """
    if not text.isidentifier() or keyword.iskeyword(text):
        return f"{_shown(text)} is not a valid Python variable name"
    normal = unicodedata.normalize("NFKC", text)
    if normal != text:
        use = f"type {normal!r} instead" if not keyword.iskeyword(normal) else "choose another name"
        return f"{_shown(text)} reads as {normal!r} in Python code (names are NFKC-normalised); {use}"
    return None


def parse_meta(items: list[str] | None) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict; VALUE is a Python literal when it parses as one, else text."""
    meta: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"-m/--meta expects KEY=VALUE, got {item!r}")
        if key == HEIGHT_MAP:
            raise UsageError("-m/--meta cannot set 'height_map': it is the array being saved")
        try:
            value: Any = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
        meta[key] = value
    return meta


def parse_level(text: str | None) -> int | str | None:
    """``--level``'s value: a digit string becomes an int (``"6"`` -> 6), a name stays a name.

    Whether it is a level at all is checked where it is used, with the message that lists the choices.
    """
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else text
