"""The payload CLI as a user runs it: clear messages and exit codes, no tracebacks."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from eventservice.cli.payload_commands import register


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_make_input_simulate_merge_verify(app: typer.Typer, tmp_path) -> None:
    evnt, seq = str(tmp_path / "evnt.root"), str(tmp_path / "seq.root")
    code, out = run(
        app, "make-input", "--events", "8", "--out", evnt, "--seed", "2", "--guid", "G-CLI"
    )
    assert (code, out.strip()) == (0, "G-CLI")
    common = ["payload", "simulate", "--sequential", "--input", evnt, "--cpu-per-event", "0"]
    assert run(app, *common, "--out", seq)[0] == 0
    parts = []
    for first, last in [(0, 4), (5, 7)]:
        part = str(tmp_path / f"1-1-1-{first}-1.HITS.root")
        args = ["--out", part, "--first-event", str(first), "--last-event", str(last)]
        assert run(app, *common, *args)[0] == 0
        parts.append(part)
    merged = str(tmp_path / "merged.root")
    code, out = run(
        app, "payload", "merge", "--out", merged, "--expect-events", "0:7", *reversed(parts)
    )
    assert code == 0 and "merged 8 events (0-7) from 2 files" in out
    code, out = run(app, "verify", merged, seq)
    assert code == 0 and out.startswith("identical")
    code, out = run(app, "verify", parts[0], seq)
    assert code == 1 and "DIFFERENT" in out and "missing eventNumbers: 5, 6, 7" in out


def test_errors_are_one_line_and_exit_1(app: typer.Typer, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("PILOT_EVENTRANGECHANNEL", raising=False)
    code, out = run(app, "payload", "simulate")
    assert code == 1 and "PILOT_EVENTRANGECHANNEL is not set" in out
    code, out = run(app, "payload", "per-range", "--", "true")
    assert code == 1 and "PILOT_EVENTRANGECHANNEL is not set" in out
    code, out = run(app, "payload", "simulate", "--sequential", "--input", "x.root")
    assert code == 1 and "needs --input and --out" in out
    code, out = run(app, "payload", "merge", "--out", str(tmp_path / "m"), str(tmp_path / "none"))
    assert code == 1 and out.startswith("error: cannot read") and "Traceback" not in out
    code, out = run(app, "payload", "merge", "--out", "m", "--expect-events", "5", "x")
    assert code == 1 and "FIRST:LAST" in out
    code, out = run(app, "make-input", "--events", "0", "--out", str(tmp_path / "e.root"))
    assert code == 1 and "at least one event" in out
