"""The project's own checks run with the suite: lint, format, and types of the core packages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUFF_BESIDE_PYTHON = (Path(sys.executable).parent / "ruff").exists()
CORE = ["domain", "store", "dispatcher", "server", "client", "pilot"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_and_format_are_clean() -> None:
    ruff = str(Path(sys.executable).parent / "ruff") if RUFF_BESIDE_PYTHON else shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    lint = run(ruff, "check", ".")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    formatting = run(ruff, "format", "--check", ".")
    assert formatting.returncode == 0, formatting.stdout + formatting.stderr


def test_core_packages_type_check() -> None:
    pytest.importorskip("mypy")
    result = run(sys.executable, "-m", "mypy", *(f"src/eventservice/{p}" for p in CORE))
    assert result.returncode == 0, result.stdout + result.stderr
