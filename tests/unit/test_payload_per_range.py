"""The per-range wrapper: environment given to the command and how its end is judged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from eventservice.payload.per_range import PerRangeRunner
from eventservice.payload.workers import RangeError, worker_count

RANGE = {
    "eventRangeID": "1-2-3-10-1",
    "startEvent": 10,
    "lastEvent": 14,
    "LFN": "evnt.root",
    "PFN": "root://host//data/evnt.root",
    "GUID": "G-1",
    "scope": "s",
}


def test_command_gets_the_range_and_writes_the_output(tmp_path) -> None:
    script = (
        "import os; e = os.environ; "
        "open(e['ES_OUTPUT'], 'w').write(' '.join(e[k] for k in ('ES_EVENT_RANGE_ID',"
        " 'ES_INPUT', 'ES_FIRST_EVENT', 'ES_LAST_EVENT', 'ES_GUID'))); "
        "sum(i * i for i in range(200000))"
    )
    runner = PerRangeRunner((sys.executable, "-c", script), str(tmp_path))
    path, cpu, wall = runner.process_range(RANGE)
    assert path == str(tmp_path / "1-2-3-10-1.out")
    assert Path(path).read_text() == "1-2-3-10-1 root://host//data/evnt.root 10 14 G-1"
    assert cpu > 0 and wall > 0


def test_lfn_is_the_input_without_pfn(tmp_path) -> None:
    runner = PerRangeRunner(("true",), str(tmp_path))
    variables = runner.environment({k: v for k, v in RANGE.items() if k != "PFN"})
    assert variables["ES_INPUT"] == "evnt.root"


def test_failure_reports_exit_code_and_stderr_tail(tmp_path) -> None:
    script = "import sys; sys.stderr.write('x' * 2000 + ' the real problem\\n'); sys.exit(3)"
    runner = PerRangeRunner((sys.executable, "-c", script), str(tmp_path))
    with pytest.raises(
        RangeError, match=r"exited with code 3; stderr: x+ the real problem$"
    ) as caught:
        runner.process_range(RANGE)
    assert caught.value.kind == "ERR_ATHENAMP_PROCESS"


def test_success_without_output_is_a_failure(tmp_path) -> None:
    (tmp_path / "1-2-3-10-1.out").write_text("left over from an earlier attempt")
    with pytest.raises(RangeError, match="wrote no"):
        PerRangeRunner(("true",), str(tmp_path)).process_range(RANGE)


def test_unrunnable_command(tmp_path) -> None:
    with pytest.raises(RangeError, match="cannot run /nonexistent/cmd"):
        PerRangeRunner(("/nonexistent/cmd",), str(tmp_path)).process_range(RANGE)


def test_worker_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATHENA_PROC_NUMBER", "3")
    assert worker_count(None) == 3
    assert worker_count(2) == 2
    monkeypatch.setenv("ATHENA_PROC_NUMBER", "many")
    with pytest.raises(Exception, match="integer"):
        worker_count(None)
