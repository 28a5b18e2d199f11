"""PURE: the names and limits of the local tree: what cntr-sync keeps there, and refuses.

The state directory, the partial files of downloads in progress, the ignore file,
the version-control directories nothing is ever written into, how long a path and
a name may be, and a relpath's directories (``ancestors``). The scan, the ignore
rules, the writer and the remote path rules all ask here, so each is written once.

Must not: import anything that performs I/O.
"""

from __future__ import annotations

STATE_DIR_NAME = ".cntrsync"
PARTIAL_PREFIX = ".cntrsync-partial-"
IGNORE_FILE = ".cntrignore"
#: KeptVersion-control directories: a file written there can run code (``.git/config``,
#: hooks). Compared case-folded, since ``.GIT`` is ``.git`` on macOS and Windows.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs"})
MAX_RELPATH_BYTES = 1024
NAME_MAX_BYTES = 255


def ancestors(relpath: str) -> list[str]:
    """The directories above ``relpath``, outermost first: ``a``, ``a/b`` for ``a/b/c``."""
    parts = relpath.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]
