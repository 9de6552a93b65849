"""The CLI as a user runs it: ``eventservice demo`` end to end, with and without preemption."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run_demo(tmp_path: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "eventservice",
            "demo",
            "--no-live",
            "--keep",
            str(tmp_path / "demo"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )


@pytest.mark.slow
def test_demo_merged_output_equals_sequential_run(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--events", "300", "--pilots", "2", "--cores", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical" in result.stdout
    assert "events 300" in result.stdout
    assert (tmp_path / "demo" / "merged.root").stat().st_size > 0


@pytest.mark.slow
def test_demo_survives_random_sigkills(tmp_path: Path) -> None:
    """Preemption: 1,000 events, 4 pilots, a random SIGKILL every few seconds."""
    result = run_demo(
        tmp_path, "--events", "1000", "--pilots", "4", "--cores", "2", "--preempt-every", "3"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical: tree 'hits', 1000 events" in result.stdout
    killed = int(result.stdout.split(" started, ")[1].split(" killed")[0])
    assert killed >= 1, result.stdout


def test_demo_rejects_bad_options(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--events", "0")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
