"""Ignore rules: which relpaths the mirror leaves alone (gitignore syntax, decided by pathspec).

Owns ``IgnoreRules`` (the built-in defaults, ``.cntrignore`` files at the root and
in any directory below it, the configured patterns, and cntr-sync's own paths),
reading and checking ``.cntrignore`` files, and the cheap checks that let the
scan skip pathspec for almost every path.

Why the cheap checks: pathspec decides a path by trying each pattern's regex in
turn. Callgrind, 100k relpaths against the 19 default patterns, pathspec 1.1.1:
81k instructions a path with its "simple" backend, 17.5k with its "re2" backend
(google-re2), where a whole warm scan costs about 23k a file. Yet almost no path
matches any pattern. So each source of patterns (a ``Layer``) puts *necessary*
conditions in front of its ``GitIgnoreSpec``, derived from the pattern text, and
asks pathspec only when one of them holds; its answers are pathspec's by
construction:

- a pattern without a slash (a trailing one aside) matches a path only where one
  component as a whole matches it, provided none of its wildcards can match
  ``/`` (a negated bracket expression, or a range that spans ``/``, can). Such a
  component starts with the literal characters (escaped ones included) before
  the pattern's first wildcard (``*``, ``?``, a bracket expression), or else ends
  with those after its last one (``str.startswith``/``str.endswith`` on tuples:
  C loops, no regex); a pattern with neither (``*.[oa]``) asks its own pathspec
  pattern about the component;
- any other pattern matches only a path that contains the longest literal run
  of one of its segments (``in``); a pattern without one always asks pathspec.

Paths pathspec would first rewrite (a leading ``/`` or ``./``) always go to
pathspec, and so do names that end with a newline: there a regex's ``$`` matches
before it (``Layer`` sends any name with a newline; a newline elsewhere only
keeps a pattern from matching).

Must not: decide anything pathspec would decide differently, or use anything of
pathspec but its public API (``GitIgnoreSpec.from_lines``, ``check_file``, its
patterns' ``include``, ``pattern`` and ``match_file``). The only I/O here is
reading ``.cntrignore`` files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pathspec import GitIgnoreSpec, RegexPattern

from cntr_sync.errors import ConfigError, LocalError
from cntr_sync.hashing import open_regular
from cntr_sync.tree_names import IGNORE_FILE, PARTIAL_PREFIX, STATE_DIR_NAME, ancestors

DEFAULT_PATTERNS: tuple[str, ...] = (
    # ".git" without a slash also covers the gitlink *file* of submodules and worktrees.
    ".git",
    ".hg/",
    ".svn/",
    ".bzr/",
    "_darcs/",
    f"{STATE_DIR_NAME}/",
    "*.swp",
    "*.swo",
    "*.swx",
    "*~",
    ".#*",
    r"\#*#",  # escaped: a leading '#' would make the line a comment
    "4913",  # vim writes and removes this probe file to test a directory
    ".~lock.*#",
    "*.tmp",
    "*.crdownload",
    "*.part",
    ".DS_Store",
    "Thumbs.db",
)


class IgnoreRules:
    """Which relpaths the mirror leaves alone (gitignore semantics, via pathspec).

    Precedence, highest first: the configured patterns (the ``ignore`` setting,
    ``--exclude``/``--include``), then ``.cntrignore`` files from the deepest
    directory up to the root, then the built-in defaults. The first layer (one
    of those sources) with a matching line decides, and within a layer the last
    matching line, as in git; so ``!pattern`` in any layer re-includes what a
    lower layer ignores.

    The walk asks about each entry as it lists a directory, and enters only the
    directories that are not ignored. It carries one flag down: whether the
    names of a directory's path are *ruled out*, i.e. no component of it can
    match a slash-free pattern of any layer; then only an entry's own name needs
    that check.
    """

    def __init__(self, base: GitIgnoreSpec, configured: GitIgnoreSpec) -> None:
        self._base = Layer(base)
        self._configured = Layer(configured)
        self._nested: dict[str, Layer] = {}
        self._always: frozenset[str] = frozenset()
        # Prefilters by the nested files that apply (most directories share one).
        self._prefilters: dict[tuple[str, ...], Prefilter | None] = {}

    @classmethod
    def load(cls, root: Path, patterns: Sequence[str] = ()) -> IgnoreRules:
        """Defaults, then ``root/.cntrignore`` if present, then ``patterns``.

        A bad line in ``.cntrignore`` raises ``LocalError`` naming file and line;
        a bad configured pattern raises ``ConfigError``. Nested ``.cntrignore``
        files are read by the scan as it enters their directories
        (``add_directory_file``).
        """
        file_lines = _checked_ignore_lines(root / IGNORE_FILE)
        for pattern in patterns:
            if not _valid_pattern(pattern):
                raise ConfigError(f"invalid ignore pattern {pattern!r} in settings")
        return cls(
            GitIgnoreSpec.from_lines([*DEFAULT_PATTERNS, *file_lines]),
            GitIgnoreSpec.from_lines(patterns),
        )

    def always_ignore(self, relpaths: Iterable[str]) -> None:
        """Never mirror these relpaths (and what is under them), whatever any pattern says:
        cntr-sync's own state and backup directories and container-id file when they sit in
        the tree."""
        self._always = frozenset(relpaths)
        self._prefilters.clear()

    def add_directory_file(self, directory: str, path: Path) -> None:
        """Read ``.cntrignore`` of ``directory`` (a relpath); its patterns are relative to it."""
        lines = _checked_ignore_lines(path)
        if any(line.strip() and not line.lstrip().startswith("#") for line in lines):
            self._nested[directory] = Layer(GitIgnoreSpec.from_lines(lines))

    def ignored_path(self, relpath: str, *, is_dir: bool = False) -> bool:
        """Whether ``relpath`` would be left alone, a directory above it included (what a
        download is checked against: nothing is written under ``.git/``)."""
        return any(self.ignored(d, is_dir=True) for d in ancestors(relpath)) or self.ignored(
            relpath, is_dir=is_dir
        )

    def ignored(self, relpath: str, is_dir: bool) -> bool:
        """True when ``relpath`` (POSIX, relative to the root) is not mirrored."""
        return self._check(relpath, relpath.rpartition("/")[2], is_dir, every_name=True)[0]

    def entry_ignored(
        self, relpath: str, name: str, is_dir: bool, parent_names_ruled_out: bool
    ) -> tuple[bool, bool]:
        """``ignored`` for the walk, which enters a directory only when it is not ignored.

        ``parent_names_ruled_out``: the walk's answer for the parent directory (see
        the class), so only ``name`` is checked against slash-free patterns.
        Returns (ignored, whether this entry's own path has its names ruled out).
        """
        return self._check(relpath, name, is_dir, every_name=not parent_names_ruled_out)

    def prefilter(self, directory: str) -> Prefilter | None:
        """What the walk asks first of each entry of ``directory`` (a relpath, "" for the
        root) when the directory's names are ruled out: when it rules an entry out, the
        entry is not ignored, its own names are ruled out, and ``entry_ignored`` need
        not be asked. None: ask ``entry_ignored`` every time."""
        applying = []
        while directory:
            if directory in self._nested:
                applying.append(directory)
            directory = directory.rpartition("/")[0]
        key = tuple(applying)
        if key not in self._prefilters:
            layers = [self._configured, *(self._nested[d] for d in key), self._base]
            # Our own names (the state directory, partial downloads, the paths always
            # ignored) are decided by the walk, never by a pattern: never ruled out.
            own = (
                STATE_DIR_NAME,
                PARTIAL_PREFIX,
                *(relpath.rpartition("/")[2] for relpath in self._always),
            )
            possible = all(own) and not any(layer.path_always for layer in layers)
            self._prefilters[key] = Prefilter(layers, own) if possible else None
        return self._prefilters[key]

    def _check(self, relpath: str, name: str, is_dir: bool, every_name: bool) -> tuple[bool, bool]:
        if is_dir and name == STATE_DIR_NAME:
            return True, False
        if self._always and (
            relpath in self._always or any(relpath.startswith(f"{own}/") for own in self._always)
        ):
            return True, False
        candidate = f"{relpath}/" if is_dir else relpath
        ruled_out = not every_name
        # Precedence: configured patterns, nested files deepest first, then the base.
        layer = self._configured
        if not layer.empty:
            decided, ruled_out = layer.check(candidate, name, every_name, ruled_out)
            if decided is not None:
                return decided, False
        if self._nested:
            end = len(relpath)
            while (end := relpath.rfind("/", 0, end)) > 0:
                nested = self._nested.get(relpath[:end])
                if nested is None:
                    continue
                decided, ruled_out = nested.check(candidate[end + 1 :], name, every_name, ruled_out)
                if decided is not None:
                    return decided, False
        decided, ruled_out = self._base.check(candidate, name, every_name, ruled_out)
        return bool(decided), ruled_out


class Layer:
    """The patterns of one source (the defaults with the root ``.cntrignore``, one
    nested ``.cntrignore``, or the configured ones): one ``GitIgnoreSpec`` with
    necessary conditions in front of it (see the module)."""

    __slots__ = (
        "_spec",
        "empty",
        "name_patterns",
        "path_always",
        "path_literals",
        "prefixes",
        "suffixes",
    )

    def __init__(self, spec: GitIgnoreSpec) -> None:
        self._spec = spec
        prefixes: list[str] = []
        suffixes: list[str] = []
        path_literals: list[str] = []
        # Slash-free patterns with no literal at either end, asked about a component.
        self.name_patterns: list[RegexPattern] = []
        self.path_always = False
        active = [p for p in spec.patterns if p.include is not None]
        self.empty = not active
        for pattern in active:
            text = pattern.pattern
            condition = _condition(text) if isinstance(text, str) else None
            if condition is None:
                self.path_always = True
            elif condition.kind == "prefix":
                prefixes.append(condition.text)
            elif condition.kind == "suffix":
                suffixes.append(condition.text)
            elif condition.kind == "name":
                self.name_patterns.append(pattern)
            else:
                path_literals.append(condition.text)
        # What a component starts or ends with, for a slash-free pattern to match
        # through it; what a path contains, for any other pattern.
        self.prefixes = tuple(dict.fromkeys(prefixes))
        self.suffixes = tuple(dict.fromkeys(suffixes))
        self.path_literals = tuple(dict.fromkeys(path_literals))

    def name_may_match(self, name: str) -> bool:
        """False when no slash-free pattern can match a path through this component."""
        return (
            name.startswith(self.prefixes)
            or name.endswith(self.suffixes)
            or _any_matches(self.name_patterns, name)
        )

    def path_may_match(self, candidate: str) -> bool:
        """False when no pattern with a slash can match ``candidate``, nor must pathspec see it
        (a newline, a leading ``/`` or ``./``)."""
        return (
            self.path_always
            or "\n" in candidate
            or candidate.startswith(("/", "./"))
            or any(literal in candidate for literal in self.path_literals)
        )

    def decide(self, candidate: str) -> bool | None:
        """pathspec's answer for ``candidate`` (``/`` at the end for a directory): True
        ignored, False re-included, None no pattern matches."""
        if self.empty:
            return None
        if self.path_may_match(candidate) or any(
            self.name_may_match(name) for name in candidate.split("/")
        ):
            return self.exact(candidate)
        return None

    def exact(self, candidate: str) -> bool | None:
        """pathspec's answer, asked directly."""
        return self._spec.check_file(candidate).include

    def check(
        self, candidate: str, name: str, every_name: bool, ruled_out: bool
    ) -> tuple[bool | None, bool]:
        """(the layer's decision, whether the names are still ruled out) for the walk.

        ``every_name``: the components above ``name`` were not ruled out, so all of
        them are checked; else only ``name``. pathspec is asked only if a pattern
        may match.
        """
        if every_name:
            return self.decide(candidate), False
        if self.name_may_match(name) or "\n" in name:
            return self.exact(candidate), False
        if self.path_may_match(candidate):
            return self.exact(candidate), ruled_out
        return None, ruled_out


class Prefilter:
    """The union of several layers' conditions, asked first of each entry of a directory.

    ``rules_out`` is True only when no pattern of any of the layers can match the
    entry's path, given that the components above it were ruled out too (the walk
    checks every directory before it enters it): then pathspec need not be asked
    at all. ``own_names``: names that must never be ruled out (cntr-sync's own).
    """

    __slots__ = (
        "_firsts",
        "_lasts",
        "_name_patterns",
        "_names_only",
        "_path_literals",
        "_prefixes",
        "_suffixes",
    )

    def __init__(self, layers: Iterable[Layer], own_names: Iterable[str] = ()) -> None:
        layers = [layer for layer in layers if not layer.empty]
        self._prefixes = tuple(
            dict.fromkeys([*own_names, *(p for layer in layers for p in layer.prefixes)])
        )
        # A name that ends with a newline always goes to pathspec: there a regex's
        # "$" matches before it, so a pattern may match the name without it.
        self._suffixes = tuple(
            dict.fromkeys(["\n", *(s for layer in layers for s in layer.suffixes)])
        )
        if not all(self._prefixes) or not all(self._suffixes):
            raise ValueError("an empty prefix or suffix would fit every name")
        # A name starts with a prefix only if it starts with the prefix's first
        # character: one set lookup rules out most names before the tuple is tried
        # (callgrind: about 1k instructions an entry, 4 % of a warm scan).
        self._firsts = frozenset(prefix[0] for prefix in self._prefixes)
        self._lasts = frozenset(suffix[-1] for suffix in self._suffixes)
        self._name_patterns = [p for layer in layers for p in layer.name_patterns]
        self._path_literals = tuple(
            dict.fromkeys(literal for layer in layers for literal in layer.path_literals)
        )
        # Only prefixes and suffixes to check (the defaults): one test instead of two.
        self._names_only = not self._name_patterns and not self._path_literals

    def rules_out(self, relpath: str, name: str, is_dir: bool) -> bool:
        """True when no layer can match ``relpath`` (whose last component is ``name``,
        not empty)."""
        if (name[0] in self._firsts and name.startswith(self._prefixes)) or (
            name[-1] in self._lasts and name.endswith(self._suffixes)
        ):
            return False
        if self._names_only:
            return True
        if _any_matches(self._name_patterns, name):
            return False
        if self._path_literals:
            candidate = f"{relpath}/" if is_dir else relpath
            return not any(literal in candidate for literal in self._path_literals)
        return True


def _any_matches(patterns: Sequence[RegexPattern], name: str) -> bool:
    """Whether one of these slash-free pathspec patterns matches the component ``name``.

    Asked of ``name/``: a pattern with a trailing slash matches only a directory's
    path, and one without matches a directory's as well as a file's.
    """
    if not patterns:
        return False
    as_directory = f"{name}/"
    return any(pattern.match_file(as_directory) is not None for pattern in patterns)


# -- conditions from the pattern text -------------------------------------------------


class _Condition:
    """What a path must have for one pattern to match it (see the module): a component
    that starts ("prefix") or ends ("suffix") with ``text``, a component the pattern
    itself matches ("name"), or ``text`` somewhere in the path ("path")."""

    __slots__ = ("kind", "text")

    def __init__(self, kind: str, text: str = "") -> None:
        self.kind = kind
        self.text = text


def _condition(line: str) -> _Condition | None:
    """The condition for an active pattern given as ``line``; None: nothing cheap is known.

    Trailing whitespace is always stripped, as pathspec does unless it is escaped:
    an escaped one leaves a dangling ``\\`` here, which is read as a wildcard, so
    nothing is claimed beyond it.
    """
    text = line.rstrip()
    if text.startswith("!"):
        text = text[1:]
    segments = text.split("/")
    if segments[-1] == "" and len(segments) == 2 and segments[0]:
        segments.pop()  # "name/": slash-free but for the directory mark
    globs = [_Glob(segment) for segment in segments]
    if len(globs) == 1 and globs[0].text and not globs[0].may_match_slash:
        glob = globs[0]
        if glob.leading:
            return _Condition("prefix", glob.leading)
        if glob.trailing:
            return _Condition("suffix", glob.trailing)
        return _Condition("name")
    # Each segment's literal characters appear in any path the pattern matches.
    longest = max((run for glob in globs for run in (glob.leading, glob.trailing)), key=len)
    return _Condition("path", longest) if longest else None


class _Glob:
    """One segment of a pattern (the text between two slashes), read as git reads it:
    ``\\`` escapes the next character, ``*`` and ``?`` are wildcards, and ``[`` opens
    a bracket expression closed by the first ``]`` after an optional ``!``/``^`` and
    an optional leading ``]``."""

    __slots__ = ("leading", "may_match_slash", "text", "trailing")

    def __init__(self, text: str) -> None:
        self.text = text
        self.may_match_slash = False
        leading: str | None = None
        run: list[str] = []  # literal characters since the last wildcard
        index = 0
        while index < len(text):
            char = text[index]
            wildcard_end = index + 1
            if char == "\\" and index + 1 < len(text):
                run.append(text[index + 1])
                index += 2
                continue
            if char == "[":
                close = _bracket_close(text, index)
                if close is None:  # pathspec drops such a pattern; claim nothing
                    self.may_match_slash = True
                else:
                    self.may_match_slash |= _bracket_may_match_slash(text[index + 1 : close])
                    wildcard_end = close + 1
            elif char not in "*?\\":  # a dangling "\" is read as a wildcard
                run.append(char)
                index += 1
                continue
            if leading is None:
                leading = "".join(run)
            run = []
            index = wildcard_end
        self.trailing = "".join(run)
        self.leading = self.trailing if leading is None else leading


def _bracket_close(text: str, start: int) -> int | None:
    """The index of the ``]`` closing the bracket expression that opens at ``start``."""
    index = start + 1
    if index < len(text) and text[index] in "!^":
        index += 1
    if index < len(text) and text[index] == "]":
        index += 1
    close = text.find("]", index)
    return None if close < 0 else close


def _bracket_may_match_slash(inside: str) -> bool:
    """Whether a bracket expression (the text between its brackets) may match ``/``:
    a negated one may, and one with ``/`` or a range around it."""
    if inside[:1] in ("!", "^") or "/" in inside:
        return True
    return any(
        inside[index] == "-" and inside[index - 1] <= "/" <= inside[index + 1]
        for index in range(1, len(inside) - 1)
    )


# -- ignore files ---------------------------------------------------------------------


def _checked_ignore_lines(path: Path) -> list[str]:
    lines = _read_ignore_file(path)
    for lineno, line in enumerate(lines, start=1):
        if not _valid_pattern(line):
            raise LocalError(f"{path}:{lineno}: invalid ignore pattern {line!r}", path=str(path))
    return lines


def _valid_pattern(line: str) -> bool:
    try:
        GitIgnoreSpec.from_lines([line])
    except ValueError:
        return False
    return True


def _read_ignore_file(path: Path) -> list[str]:
    try:
        fd = open_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    try:
        with os.fdopen(fd, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        lineno = data[: exc.start].count(b"\n") + 1
        raise LocalError(f"{path}:{lineno}: not valid UTF-8", path=str(path)) from None
    return [line.removesuffix("\r") for line in text.split("\n")]
