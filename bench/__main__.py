"""``python -m bench`` from the repository root: the issue-13 harness in ``bench/run.py``.

``bench/`` stays a directory of scripts (no ``__init__.py``): they import their helpers
as top-level modules (``from _support import ...``) when run as ``python bench/x.py``,
so this only puts ``bench/`` on the path and hands over to ``run.main``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main

sys.exit(main())
