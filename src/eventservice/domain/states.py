"""State machines of event ranges, jobs and tasks (DESIGN §3).

Each machine is an Enum plus one transition table; :func:`check_transition`
is the only place that decides whether a change is allowed.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from eventservice.errors import IllegalTransition


class RangeState(str, Enum):
    """State of one event range."""

    READY = "ready"
    SENT = "sent"
    RUNNING = "running"
    FINISHED = "finished"
    DONE = "done"
    MERGED = "merged"
    FAILED = "failed"
    FATAL = "fatal"
    CANCELLED = "cancelled"
    DISCARDED = "discarded"


class JobState(str, Enum):
    """State of a job (consumer, normal, or merge)."""

    DEFINED = "defined"
    ACTIVATED = "activated"
    SENT = "sent"
    STARTING = "starting"
    RUNNING = "running"
    TRANSFERRING = "transferring"
    FINISHED = "finished"
    FAILED = "failed"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class TaskState(str, Enum):
    """State of a task."""

    DEFINED = "defined"
    RUNNING = "running"
    MERGING = "merging"
    DONE = "done"
    FINISHED = "finished"
    FAILED = "failed"


class JobKind(int, Enum):
    """PanDA ``eventService`` value of a job."""

    NORMAL = 0
    EVENT_SERVICE = 1
    ES_MERGE = 2
    CLONE = 3
    JUMBO = 4
    CO_JUMBO = 5


class Command(str, Enum):
    """What the dispatcher tells a pilot in answer to a heartbeat."""

    NONE = "NULL"
    KILL = "tobekilled"
    SOFTKILL = "softkill"


#: Statuses a pilot may report for a range (``eventStatus`` on the wire).
REPORTABLE_RANGE_STATUSES = frozenset({"running", "transferring", "finished", "failed", "fatal"})

#: A consumer holds a range while it is in one of these states.
HELD_RANGE_STATES = frozenset({RangeState.SENT, RangeState.RUNNING})

RANGE_TRANSITIONS: dict[RangeState, frozenset[RangeState]] = {
    RangeState.READY: frozenset({RangeState.SENT, RangeState.CANCELLED}),
    RangeState.SENT: frozenset(
        {
            RangeState.RUNNING,
            RangeState.FINISHED,
            RangeState.FAILED,
            RangeState.FATAL,
            RangeState.READY,  # lease expired or released: re-dispatch as attempt+1
            RangeState.CANCELLED,
        }
    ),
    RangeState.RUNNING: frozenset(
        {
            RangeState.FINISHED,
            RangeState.FAILED,
            RangeState.FATAL,
            RangeState.READY,
            RangeState.CANCELLED,
        }
    ),
    RangeState.FAILED: frozenset({RangeState.READY}),  # retry while attempts remain
    RangeState.FINISHED: frozenset({RangeState.DONE, RangeState.CANCELLED}),
    RangeState.DONE: frozenset({RangeState.MERGED, RangeState.DISCARDED}),
    RangeState.DISCARDED: frozenset({RangeState.READY}),  # re-processed after merge gave up
    RangeState.MERGED: frozenset(),
    RangeState.FATAL: frozenset(),
    RangeState.CANCELLED: frozenset(),
}

ACTIVE_JOB_STATES = frozenset(
    {JobState.SENT, JobState.STARTING, JobState.RUNNING, JobState.TRANSFERRING}
)
QUEUED_JOB_STATES = frozenset({JobState.DEFINED, JobState.ACTIVATED})
FINAL_JOB_STATES = frozenset(
    {JobState.FINISHED, JobState.FAILED, JobState.CLOSED, JobState.CANCELLED}
)

JOB_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.DEFINED: frozenset({JobState.ACTIVATED, JobState.CLOSED, JobState.CANCELLED}),
    JobState.ACTIVATED: frozenset({JobState.SENT, JobState.CLOSED, JobState.CANCELLED}),
    JobState.SENT: frozenset(
        {
            JobState.STARTING,
            JobState.RUNNING,
            JobState.TRANSFERRING,
            JobState.FINISHED,
            JobState.FAILED,
            JobState.CLOSED,
            JobState.CANCELLED,
        }
    ),
    JobState.STARTING: frozenset(
        {
            JobState.RUNNING,
            JobState.TRANSFERRING,
            JobState.FINISHED,
            JobState.FAILED,
            JobState.CLOSED,
            JobState.CANCELLED,
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.TRANSFERRING,
            JobState.FINISHED,
            JobState.FAILED,
            JobState.CLOSED,
            JobState.CANCELLED,
        }
    ),
    JobState.TRANSFERRING: frozenset(
        {JobState.RUNNING, JobState.FINISHED, JobState.FAILED, JobState.CLOSED, JobState.CANCELLED}
    ),
    JobState.FINISHED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CLOSED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

#: States a pilot may announce through ``updateJob``.
PILOT_JOB_STATES = frozenset(
    {JobState.STARTING, JobState.RUNNING, JobState.TRANSFERRING, JobState.FINISHED, JobState.FAILED}
)

TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.DEFINED: frozenset({TaskState.RUNNING, TaskState.FAILED}),
    TaskState.RUNNING: frozenset(
        {TaskState.MERGING, TaskState.DONE, TaskState.FINISHED, TaskState.FAILED}
    ),
    TaskState.MERGING: frozenset(
        {TaskState.RUNNING, TaskState.DONE, TaskState.FINISHED, TaskState.FAILED}
    ),
    TaskState.DONE: frozenset(),
    TaskState.FINISHED: frozenset(),
    TaskState.FAILED: frozenset(),
}


def range_transition_allowed(current: RangeState, new: RangeState) -> bool:
    """Whether an event range may go from ``current`` to ``new``."""
    return new in RANGE_TRANSITIONS[current]


def job_transition_allowed(current: JobState, new: JobState) -> bool:
    """Whether a job may go from ``current`` to ``new``."""
    return new in JOB_TRANSITIONS[current]


def check_transition(machine: str, current: Enum, new: Enum) -> None:
    """Raise :class:`IllegalTransition` unless ``current → new`` is allowed.

    ``machine`` is ``"range"``, ``"job"`` or ``"task"``.
    """
    tables: dict[str, Any] = {
        "range": RANGE_TRANSITIONS,
        "job": JOB_TRANSITIONS,
        "task": TASK_TRANSITIONS,
    }
    table = tables[machine]
    if new not in table[current]:
        raise IllegalTransition(f"{machine} cannot go from {current.value} to {new.value}")
