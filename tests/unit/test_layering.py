"""Imports only point down: control_api -> dpu_emu -> nvmeof -> stdlib (DESIGN.md 1), and
context_tier (the inference-side client) sits on nvmeof/dpu_emu, its core free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"nvmeof", "dpu_emu", "control_api", "context_tier", "testbeds", "tests", "bench"}
# package -> top-level modules of ours it must never import
FORBIDDEN = {
    "nvmeof": {"dpu_emu", "control_api", "context_tier", "testbeds", "tests", "bench"},
    "dpu_emu": {"control_api", "context_tier", "testbeds", "tests", "bench"},
    "control_api": {"context_tier", "testbeds", "tests", "bench"},
    "context_tier": {"control_api", "testbeds", "tests", "bench"},
}
TORCH_ONLY_MODULES = {"hf.py"}  # the one context_tier module allowed to need torch
OPTIONAL_HEAVY = {"torch", "transformers", "numpy"}
WEB_ONLY_IN_CONTROL_API = {"fastapi", "pydantic", "starlette", "uvicorn"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package: str) -> None:
    files = _files(package)
    assert files, f"package {package} has no modules"
    bad = []
    for path in files:
        imported = _imports(path)
        wrong = imported & FORBIDDEN[package]
        if package != "control_api":
            wrong |= imported & WEB_ONLY_IN_CONTROL_API
        if wrong:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(wrong)}")
    assert not bad, "\n".join(bad)


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import dpu_emu.device\nfrom fastapi import FastAPI\n")
    assert _imports(sample) == {"dpu_emu", "fastapi"}


def test_context_tier_core_needs_no_torch() -> None:
    for path in sorted((ROOT / "context_tier").glob("*.py")):
        if path.name not in TORCH_ONLY_MODULES:
            heavy = _imports(path) & OPTIONAL_HEAVY
            assert not heavy, f"{path.name} imports {sorted(heavy)}"


def test_context_tier_imports_without_torch_loaded() -> None:
    code = "import sys, context_tier; assert 'torch' not in sys.modules and 'redis' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
