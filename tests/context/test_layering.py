"""context_tier sits on top: it may import nvmeof and dpu_emu, never the reverse, and its
core (everything but ``hf``) needs no torch (DESIGN.md section 1)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 600
BELOW = ("nvmeof", "dpu_emu", "control_api")
NEVER_FROM_CONTEXT_TIER = {"control_api", "testbeds", "tests", "bench", "fastapi", "pydantic", "starlette"}
TORCH_ONLY_MODULES = {"hf.py"}
OPTIONAL = {"torch", "transformers", "numpy"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_lower_packages_never_import_context_tier() -> None:
    bad = [str(p.relative_to(ROOT)) for package in BELOW for p in sorted((ROOT / package).rglob("*.py"))
           if "context_tier" in imports(p)]
    assert not bad


def test_context_tier_imports_only_downwards_and_core_needs_no_torch() -> None:
    for path in sorted((ROOT / "context_tier").glob("*.py")):
        found = imports(path)
        assert not found & NEVER_FROM_CONTEXT_TIER, path.name
        if path.name not in TORCH_ONLY_MODULES:
            assert not found & OPTIONAL, f"{path.name} imports {found & OPTIONAL}"
        assert len(path.read_text(encoding="utf-8").splitlines()) < MAX_MODULE_LINES, path.name


def test_core_imports_without_torch_loaded() -> None:
    code = "import sys, context_tier; assert 'torch' not in sys.modules and 'redis' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
