"""PURE: gitignore patterns compiled once into a matcher that skips pathspec for almost every path.

pathspec's ``GitIgnoreSpec`` decides a path by trying each pattern's regex in
turn: with the 19 default patterns that is about 14 µs a path, most of a
scan of an unchanged tree. Yet almost no path matches any pattern. ``Layer``
puts cheap *necessary* conditions in front of one spec and asks pathspec only
when one of them holds, so its answers are pathspec's by construction:

- a pattern without a slash (pathspec: ``^(?:.+/)?X`` followed by ``/`` or the
  end) can only match where one path component as a whole matches ``X``,
  provided ``X`` cannot match ``/``. Such a component starts with ``X``'s
  leading literal text or ends with its trailing literal text, tested with
  ``str.startswith``/``str.endswith`` on tuples (C loops, no regex); an ``X``
  with neither is tested with one combined ``fullmatch`` per component;
- any other pattern's regex can only match a path that contains the longest
  run of literal characters at its top level (``in``); a pattern without one
  always asks pathspec.

Paths pathspec would first rewrite (a leading ``/`` or ``./``) and paths with
a newline (where ``$`` may match before it) always go to pathspec. The scan
uses ``names`` to check only the component it has just added: the ones above
it passed the same conditions when their directory was entered.

Must not: do I/O, or decide anything pathspec would decide differently.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pathspec import GitIgnoreSpec

# pathspec's regex for a pattern without a slash: any leading directories, then
# the pattern, then a directory mark or the end (files and directories) or a
# directory mark only (a pattern with a trailing slash).
_ANY_DIRS = "^(?:.+/)?"
_TAILS = ("(?:(?P<ps_d>/)|$)", "(?P<ps_d>/)")
_SLASH = ord("/")
# Flags under which a literal in the regex is not the literal it reads as.
_ODD_FLAGS = re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE


def _regex_parser() -> Any:
    """The stdlib's regex parser (``re._parser``: private, hence Any and a fallback).

    Without it every pattern is asked of pathspec: slower, never wrong.
    """
    try:
        return importlib.import_module("re._parser")
    except ImportError:  # pragma: no cover - a Python that moved it again
        return None


_PARSER = _regex_parser()


class Layer:
    """One ``GitIgnoreSpec`` with necessary conditions in front of it (see the module)."""

    __slots__ = (
        "_name_regex",
        "_spec",
        "empty",
        "name_bodies",
        "path_always",
        "path_literals",
        "prefixes",
        "suffixes",
    )

    def __init__(self, spec: GitIgnoreSpec) -> None:
        self._spec = spec
        prefixes: list[str] = []
        suffixes: list[str] = []
        name_regexes: list[str] = []
        path_literals: list[str] = []
        self.path_always = False
        active = [p for p in spec.patterns if p.include is not None]
        self.empty = not active
        for pattern in active:
            regex = getattr(pattern, "regex", None)
            if not isinstance(regex, re.Pattern) or not isinstance(regex.pattern, str):
                self.path_always = True
                continue
            kind = _classify(regex)
            if kind is None:
                self.path_always = True
            elif kind[0] == "path":
                path_literals.append(kind[1])
            elif kind[0] == "prefix":
                prefixes.append(kind[1])
            elif kind[0] == "suffix":
                suffixes.append(kind[1])
            else:
                name_regexes.append(kind[1])
        # What a component starts or ends with, or fullmatches, for a slash-free
        # pattern to match through it; what a path contains, for any other pattern.
        self.prefixes = tuple(dict.fromkeys(prefixes))
        self.suffixes = tuple(dict.fromkeys(suffixes))
        self.name_bodies = tuple(dict.fromkeys(name_regexes))
        self.path_literals = tuple(dict.fromkeys(path_literals))
        self._name_regex = _either(self.name_bodies)

    def name_may_match(self, name: str) -> bool:
        """False when no slash-free pattern can match a path through this component."""
        return (
            name.startswith(self.prefixes)
            or name.endswith(self.suffixes)
            or (self._name_regex is not None and self._name_regex.fullmatch(name) is not None)
        )

    def path_may_match(self, candidate: str) -> bool:
        """False when no pattern with a slash can match ``candidate``, nor must pathspec see it
        (a newline, a leading ``/`` or ``./``)."""
        return (
            self.path_always
            or "\n" in candidate
            or candidate.startswith(("/", "./"))
            or any(lit in candidate for lit in self.path_literals)
        )

    def decide(self, candidate: str, names: Iterable[str] | None = None) -> bool | None:
        """pathspec's answer for ``candidate`` (``/`` at the end for a directory): True
        ignored, False re-included, None no pattern matches.

        ``names``: the components still to check against slash-free patterns;
        None means all of ``candidate``'s.
        """
        if self.empty:
            return None
        if self.path_may_match(candidate) or any(
            self.name_may_match(name) for name in (candidate.split("/") if names is None else names)
        ):
            return self.exact(candidate)
        return None

    def exact(self, candidate: str) -> bool | None:
        """pathspec's answer, asked directly."""
        return self._spec.check_file(candidate).include


class Screen:
    """The union of several layers' conditions, asked once per entry of a directory walk.

    ``passes`` is True only when none of the layers can match the entry's path,
    given that the components above it passed too (the walk checks every
    directory before it enters it): then pathspec need not be asked at all.
    ``names``: more components to treat as "may match" (the caller's own rules).
    """

    __slots__ = ("_name_regex", "_path_literals", "_prefixes", "_suffixes", "names_only")

    def __init__(self, layers: Iterable[Layer], names: Iterable[str] = ()) -> None:
        layers = [layer for layer in layers if not layer.empty]
        self._prefixes = tuple(
            dict.fromkeys([*names, *(p for layer in layers for p in layer.prefixes)])
        )
        self._suffixes = tuple(dict.fromkeys(s for layer in layers for s in layer.suffixes))
        self._name_regex = _either(
            tuple(dict.fromkeys(b for layer in layers for b in layer.name_bodies))
        )
        self._path_literals = tuple(
            dict.fromkeys(lit for layer in layers for lit in layer.path_literals)
        )
        # Only prefixes and suffixes: then ``passes`` is "the name starts with none of
        # ``affixes[0]``, ends with none of ``affixes[1]`` and has no newline", which
        # the walk inlines.
        self.names_only = self._name_regex is None and not self._path_literals

    @property
    def affixes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(prefixes, suffixes) of the names that fail the screen."""
        return self._prefixes, self._suffixes

    @staticmethod
    def possible(layers: Iterable[Layer]) -> bool:
        """Whether a Screen can stand for these layers (none has a pattern with no condition)."""
        return not any(layer.path_always for layer in layers)

    def passes(self, relpath: str, name: str, is_dir: bool) -> bool:
        """True when no layer can match ``relpath`` (whose last component is ``name``)."""
        if name.startswith(self._prefixes) or name.endswith(self._suffixes) or "\n" in name:
            return False
        if self._name_regex is not None and self._name_regex.fullmatch(name) is not None:
            return False
        if self._path_literals:
            candidate = f"{relpath}/" if is_dir else relpath
            return not any(lit in candidate for lit in self._path_literals)
        return True


def _either(bodies: Sequence[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{body})" for body in bodies)) if bodies else None


def _classify(regex: re.Pattern[str]) -> tuple[str, str] | None:
    """What a path must have for ``regex`` to match it, or None (nothing cheap is known).

    ("prefix"|"suffix", text): some component starts/ends with text; ("name",
    body): some component fullmatches body; ("path", text): the path contains text.
    """
    if _PARSER is None or regex.flags & _ODD_FLAGS:
        return None
    text = regex.pattern
    try:
        for tail in _TAILS:
            if text.startswith(_ANY_DIRS) and text.endswith(tail):
                body = text[len(_ANY_DIRS) : -len(tail)]
                items = list(_PARSER.parse(body))
                if items and all(_slash_free(op, av) for op, av in items):
                    leading = _literal_run(items)
                    if leading:
                        return ("prefix", leading)
                    trailing = _literal_run(items[::-1])[::-1]
                    if trailing:
                        return ("suffix", trailing)
                    return ("name", body)
        longest = max(_literal_runs(list(_PARSER.parse(text))), key=len, default="")
    except (re.error, TypeError, ValueError, AttributeError):
        return None
    return ("path", longest) if longest else None


def _slash_free(op: Any, av: Any) -> bool:
    """Whether one parsed regex item can never match ``/`` (and spans one component)."""
    if op is _PARSER.LITERAL:
        return bool(av != _SLASH)
    if op is _PARSER.NOT_LITERAL:
        return bool(av == _SLASH)
    if op in (_PARSER.MAX_REPEAT, _PARSER.MIN_REPEAT):
        return all(_slash_free(inner_op, inner) for inner_op, inner in av[2])
    if op is _PARSER.IN:
        return all(_class_item_slash_free(item_op, item) for item_op, item in av)
    return False


def _class_item_slash_free(op: Any, av: Any) -> bool:
    if op is _PARSER.LITERAL:
        return bool(av != _SLASH)
    if op is _PARSER.RANGE:
        low, high = av
        return not low <= _SLASH <= high
    return False  # NEGATE, CATEGORY: may include "/"


def _literal_run(items: Sequence[tuple[Any, Any]]) -> str:
    """The literal characters at the start of ``items``."""
    run = []
    for op, av in items:
        if op is not _PARSER.LITERAL:
            break
        run.append(chr(av))
    return "".join(run)


def _literal_runs(items: Sequence[tuple[Any, Any]]) -> list[str]:
    """Every run of consecutive top-level literals: each must appear in any match."""
    runs, run = [], []
    for op, av in items:
        if op is _PARSER.LITERAL:
            run.append(chr(av))
        elif run:
            runs.append("".join(run))
            run = []
    if run:
        runs.append("".join(run))
    return runs
