"""Executors: how a job is run, chosen from its fields (DESIGN §6)."""

from __future__ import annotations

from collections.abc import Callable

from eventservice.pilot.executors.base import JobContext, JobResult
from eventservice.pilot.job import ExecutorKind

Executor = Callable[[JobContext], JobResult]


def executor_for(kind: ExecutorKind) -> Executor:
    """The function that runs jobs of this kind."""
    if kind == ExecutorKind.EVENTSERVICE:
        from eventservice.pilot.executors.eventservice import run_eventservice

        return run_eventservice
    if kind == ExecutorKind.MERGE:
        from eventservice.pilot.executors.merge import run_merge

        return run_merge
    from eventservice.pilot.executors.generic import run_generic

    return run_generic


__all__ = ["Executor", "JobContext", "JobResult", "executor_for"]
