"""The hypervisor's steal: read off /proc/stat, and spread over a run's polls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from eventservice import proc
from eventservice.demo import steal as steal_module
from eventservice.demo.steal import StealClock


def fake_proc(tmp_path: Path, first_line: str) -> Path:
    (tmp_path / "stat").write_text(first_line + "\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    return tmp_path


def test_steal_is_the_eighth_column_of_the_cpu_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proc, "PROC", fake_proc(tmp_path, "cpu  7221 0 920 10756 31 0 5 517 0 0"))
    monkeypatch.setattr(proc, "_TICKS", 100)
    assert proc.cpu_steal_seconds() == pytest.approx(5.17)


@pytest.mark.parametrize("content", [None, "cpu 1 2 3 4", "intr 1 2 3 4 5 6 7 8 9"])
def test_steal_is_unknown_without_a_full_cpu_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None
) -> None:
    monkeypatch.setattr(proc, "PROC", fake_proc(tmp_path, content) if content else tmp_path)
    assert proc.cpu_steal_seconds() is None


def test_this_machine_reports_a_steal_it_can_only_add_to() -> None:
    first = proc.cpu_steal_seconds()
    if first is None:
        pytest.skip("no /proc/stat here")
    assert 0 <= first <= (proc.cpu_steal_seconds() or 0)


StealValues = Callable[..., None]


@pytest.fixture
def steal_values(monkeypatch: pytest.MonkeyPatch) -> StealValues:
    """Make the clock read these values of the machine's steal, one per reading."""

    def use(*values: float | None) -> None:
        source = iter(values)
        monkeypatch.setattr(steal_module, "cpu_steal_seconds", lambda: next(source))

    return use


def test_the_steal_of_a_run_is_interpolated_between_the_polls_around_its_end(
    steal_values: StealValues,
) -> None:
    steal_values(10.0, 10.5, 11.0, 12.0)
    clock = StealClock(100.0)
    clock.read(101.0)
    clock.read(102.0)
    clock.read(104.0)
    # 2.5 s in: half way from the reading at 2 s (1.0 stolen) to the one at 4 s (2.0).
    assert clock.during(2.5) == pytest.approx(1.25)
    assert clock.during(1.0) == pytest.approx(0.5)
    # Past the last reading: what the readings saw, nothing made up.
    assert clock.during(9.0) == pytest.approx(2.0)


def test_the_steal_is_unknown_without_two_readings(steal_values: StealValues) -> None:
    steal_values(None, None, 3.0)
    clock = StealClock(0.0)
    clock.read(1.0)
    assert clock.during(1.0) is None
    clock.read(2.0)
    assert clock.during(1.0) is None  # one reading only
