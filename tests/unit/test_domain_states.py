"""State machines (DESIGN §3): every pair of states, allowed or refused, for each machine.

The expected tables below are written down from DESIGN §3 independently of
``eventservice.domain.states``; the tests compare them pair by pair.
"""

from __future__ import annotations

import itertools

import pytest

from eventservice.domain.states import (
    JOB_TRANSITIONS,
    RANGE_TRANSITIONS,
    TASK_TRANSITIONS,
    JobState,
    RangeState,
    TaskState,
    check_transition,
    job_transition_allowed,
    range_transition_allowed,
)
from eventservice.errors import Conflict, IllegalTransition

R = RangeState
J = JobState
T = TaskState

# ready → sent → running → finished → done → merged; failed (retry: back to ready as
# attempt+1), fatal (never retried), cancelled, discarded (output not used; re-processed).
EXPECTED_RANGE: dict[RangeState, set[RangeState]] = {
    R.READY: {R.SENT, R.CANCELLED},
    # a pilot may report finished/failed/fatal without a running report first;
    # a lease expiry or a release (preemption) puts a held range back to ready.
    R.SENT: {R.RUNNING, R.FINISHED, R.FAILED, R.FATAL, R.READY, R.CANCELLED},
    R.RUNNING: {R.FINISHED, R.FAILED, R.FATAL, R.READY, R.CANCELLED},
    R.FINISHED: {R.DONE, R.CANCELLED},
    R.DONE: {R.MERGED, R.DISCARDED},
    R.MERGED: set(),
    R.FAILED: {R.READY},
    R.FATAL: set(),
    R.CANCELLED: set(),
    R.DISCARDED: {R.READY},
}

# defined → activated → sent → starting → running → (transferring) → final.
# A pilot may skip starting/running; transferring may fall back to running.
_FINAL_JOB = {J.FINISHED, J.FAILED, J.CLOSED, J.CANCELLED}
EXPECTED_JOB: dict[JobState, set[JobState]] = {
    J.DEFINED: {J.ACTIVATED, J.CLOSED, J.CANCELLED},
    J.ACTIVATED: {J.SENT, J.CLOSED, J.CANCELLED},
    J.SENT: {J.STARTING, J.RUNNING, J.TRANSFERRING} | _FINAL_JOB,
    J.STARTING: {J.RUNNING, J.TRANSFERRING} | _FINAL_JOB,
    J.RUNNING: {J.TRANSFERRING} | _FINAL_JOB,
    J.TRANSFERRING: {J.RUNNING} | _FINAL_JOB,
    J.FINISHED: set(),
    J.FAILED: set(),
    J.CLOSED: set(),
    J.CANCELLED: set(),
}

# defined → running → merging → done | finished (partial) | failed; merging may go back
# to running when a merge gives up and the events are processed again.
EXPECTED_TASK: dict[TaskState, set[TaskState]] = {
    T.DEFINED: {T.RUNNING, T.FAILED},
    T.RUNNING: {T.MERGING, T.DONE, T.FINISHED, T.FAILED},
    T.MERGING: {T.RUNNING, T.DONE, T.FINISHED, T.FAILED},
    T.DONE: set(),
    T.FINISHED: set(),
    T.FAILED: set(),
}

MACHINES = {
    "range": (RangeState, EXPECTED_RANGE),
    "job": (JobState, EXPECTED_JOB),
    "task": (TaskState, EXPECTED_TASK),
}


def _pairs(machine: str) -> list[tuple[str, object, object]]:
    enum, _ = MACHINES[machine]
    return [(machine, a, b) for a, b in itertools.product(enum, enum)]


ALL_PAIRS = _pairs("range") + _pairs("job") + _pairs("task")


def test_expected_tables_cover_every_state() -> None:
    for enum, expected in MACHINES.values():
        assert set(expected) == set(enum)


def test_code_tables_cover_every_state() -> None:
    assert set(RANGE_TRANSITIONS) == set(RangeState)
    assert set(JOB_TRANSITIONS) == set(JobState)
    assert set(TASK_TRANSITIONS) == set(TaskState)


@pytest.mark.parametrize(
    ("machine", "current", "new"), ALL_PAIRS, ids=lambda v: getattr(v, "value", v)
)
def test_check_transition_agrees_with_design(machine: str, current, new) -> None:
    allowed = new in MACHINES[machine][1][current]
    if allowed:
        check_transition(machine, current, new)  # must not raise
    else:
        with pytest.raises(IllegalTransition) as info:
            check_transition(machine, current, new)
        assert current.value in str(info.value)
        assert new.value in str(info.value)
        assert isinstance(info.value, Conflict)


@pytest.mark.parametrize(("current", "new"), list(itertools.product(RangeState, RangeState)))
def test_range_transition_allowed_agrees(current: RangeState, new: RangeState) -> None:
    assert range_transition_allowed(current, new) == (new in EXPECTED_RANGE[current])


@pytest.mark.parametrize(("current", "new"), list(itertools.product(JobState, JobState)))
def test_job_transition_allowed_agrees(current: JobState, new: JobState) -> None:
    assert job_transition_allowed(current, new) == (new in EXPECTED_JOB[current])


def test_no_self_transitions() -> None:
    for _machine, current, new in ALL_PAIRS:
        if current == new:
            with pytest.raises(IllegalTransition):
                check_transition(_machine, current, new)


def test_terminal_states_have_no_exit() -> None:
    for state in (R.MERGED, R.FATAL, R.CANCELLED):
        assert not RANGE_TRANSITIONS[state]
    for state in _FINAL_JOB:
        assert not JOB_TRANSITIONS[state]
    for state in (T.DONE, T.FINISHED, T.FAILED):
        assert not TASK_TRANSITIONS[state]


def test_unknown_machine_is_refused() -> None:
    with pytest.raises(KeyError):
        check_transition("jobset", R.READY, R.SENT)
