"""The on-disk journal of reports: kept until acknowledged, sent in order, batched."""

from __future__ import annotations

from eventservice.client.panda import RangeUpdateResult
from eventservice.errors import DispatcherUnavailable, InvalidInput
from eventservice.pilot.reports import ReportJournal


class Sink:
    def __init__(self, down: bool = False, refuse: bool = False) -> None:
        self.down = down
        self.refuse = refuse
        self.calls: list[tuple] = []

    def update_event_ranges(self, reports, version=0):
        if self.down:
            raise DispatcherUnavailable("down")
        if self.refuse:
            raise InvalidInput("malformed")
        self.calls.append(("ranges", version, list(reports)))
        n = sum(len(r["eventRanges"]) for r in reports) if version == 1 else len(reports)
        returns = [True] * n
        errors = [None] * n
        if n > 1:
            returns[-1], errors[-1] = False, "stale attempt"
        return RangeUpdateResult(returns, errors, {"7": "softkill"})

    def update_job(self, panda_id, state, **fields):
        if self.down:
            raise DispatcherUnavailable("down")
        self.calls.append(("job", panda_id, state, fields))
        return None


def finished(rid):
    return {"eventRangeID": rid, "eventStatus": "finished"}


def test_reports_survive_until_acknowledged(tmp_path):
    journal = ReportJournal(tmp_path / "j")
    journal.add_ranges([finished("1-7-1-0-1")])
    journal.add_job(7, "finished", {"nEvents": 1})
    outcome = journal.flush(Sink(down=True))
    assert outcome.unavailable and outcome.remaining == 2
    # A new pilot on the same workdir finds them and sends them, in order.
    again = ReportJournal(tmp_path / "j")
    assert len(again) == 2
    sink = Sink()
    outcome = again.flush(sink)
    assert outcome.remaining == 0 and len(again) == 0
    assert [c[0] for c in sink.calls] == ["ranges", "job"]
    assert outcome.commands == {"7": "softkill"}


def test_consecutive_entries_are_batched_and_refusals_reported(tmp_path):
    journal = ReportJournal(tmp_path)
    journal.add_ranges([finished("1-7-1-0-1")])
    journal.add_ranges([finished("1-7-1-1-1")])
    journal.add_ranges([{"zipFile": {"lfn": "z"}, "eventRanges": [finished("1-7-1-2-1")]}], 1)
    sink = Sink()
    outcome = journal.flush(sink)
    assert [(c[0], c[1], len(c[2])) for c in sink.calls] == [("ranges", 0, 2), ("ranges", 1, 1)]
    assert outcome.refused == [("1-7-1-1-1", "stale attempt")]
    assert set(outcome.applied) == {"1-7-1-0-1", "1-7-1-2-1"}


def test_a_range_named_twice_goes_in_separate_batches(tmp_path):
    journal = ReportJournal(tmp_path)
    journal.add_ranges([{"eventRangeID": "1-7-1-0-1", "eventStatus": "running"}])
    journal.add_ranges([finished("1-7-1-0-1")])
    sink = Sink()
    journal.flush(sink)
    assert len(sink.calls) == 2


def test_refused_report_is_set_aside_not_retried(tmp_path):
    journal = ReportJournal(tmp_path)
    journal.add_ranges([finished("bad")])
    outcome = journal.flush(Sink(refuse=True))
    assert outcome.remaining == 0 and len(journal) == 0
    assert len(list(tmp_path.glob("*.refused"))) == 1


def test_sequence_continues_after_restart(tmp_path):
    first = ReportJournal(tmp_path)
    first.add_ranges([finished("a")])
    second = ReportJournal(tmp_path)
    second.add_ranges([finished("b")])
    names = [p.name for p, _ in second.pending()]
    assert names == sorted(names) and len(names) == 2
    assert [e["items"][0]["eventRangeID"] for _, e in second.pending()] == ["a", "b"]
