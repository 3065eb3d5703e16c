"""Shared test configuration: make the repository root importable without installing.

``python -m pytest`` already puts the working directory on ``sys.path``; a plain ``pytest``
run from elsewhere does not, so the root is added here once.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
