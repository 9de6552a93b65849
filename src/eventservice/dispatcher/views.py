"""Read-only views for /api/v1, the CLI and the monitor."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Connection

from eventservice.domain.ids import EventRangeID
from eventservice.domain.states import JobKind, JobState
from eventservice.errors import InvalidInput, NotFound
from eventservice.store.schema import event_ranges, history, jobs, jobsets, tasks

MAX_PAGE = 10_000
#: Range states whose output is stored (and will be, or has been, merged).
_OUTPUT_STORED = frozenset({"finished", "done", "merged"})


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def _counts(conn: Connection, column: Any, where: Any) -> dict[str, int]:
    return dict(conn.execute(select(column, func.count()).where(where).group_by(column)).all())


def task_summary(conn: Connection, task_id: int) -> dict[str, Any]:
    """A task with per-state counts of its ranges, jobs and jobsets, and its outputs."""
    task = conn.execute(select(tasks).where(tasks.c.task_id == task_id)).first()
    if task is None:
        raise NotFound(f"unknown taskID {task_id}")
    # One pass over the task's ranges (there may be millions) for every range figure.
    by_state = conn.execute(
        select(
            event_ranges.c.state,
            func.count().label("ranges"),
            func.sum(event_ranges.c.last_event - event_ranges.c.start_event + 1).label("events"),
            func.sum(event_ranges.c.cpu_seconds).label("cpu"),
            func.sum(event_ranges.c.attempt_nr).label("attempts"),
            func.sum(case((event_ranges.c.attempt_nr > 1, 1), else_=0)).label("redispatched"),
        )
        .where(event_ranges.c.task_id == task_id)
        .group_by(event_ranges.c.state)
    ).all()
    cpu_in_output = sum(float(r.cpu or 0.0) for r in by_state if r.state in _OUTPUT_STORED)
    outputs = [
        {
            "jobsetID": r.jobset_id,
            "state": r.state,
            "lfn": r.output_lfn,
            "path": r.output_path,
            "fsize": r.output_fsize,
            "adler32": r.output_adler32,
            "firstEvent": r.first_event,
            "lastEvent": r.last_event,
            "eventService": bool(r.event_service),
        }
        for r in conn.execute(
            select(jobsets).where(jobsets.c.task_id == task_id).order_by(jobsets.c.jobset_id)
        )
    ]
    cpu_in_output += conn.execute(
        select(func.coalesce(func.sum(jobs.c.cpu_seconds), 0.0))
        .select_from(jobs.join(jobsets, jobs.c.jobset_id == jobsets.c.jobset_id))
        .where(
            jobs.c.task_id == task_id,
            jobs.c.kind == int(JobKind.NORMAL),
            jobs.c.state == JobState.FINISHED.value,
            jobsets.c.state == "done",
        )
    ).scalar_one()
    return {
        "taskID": task.task_id,
        "name": task.name,
        "state": task.state,
        "nEvents": task.n_events,
        "params": json.loads(task.params),
        "transformation": task.transformation,
        "ranges": {r.state: int(r.ranges) for r in by_state},
        "events": {r.state: int(r.events or 0) for r in by_state},
        "rangesRedispatched": sum(int(r.redispatched or 0) for r in by_state),
        "attempts": sum(int(r.attempts or 0) for r in by_state),
        "cpuSecondsInOutput": cpu_in_output,
        "jobs": _counts(conn, jobs.c.state, jobs.c.task_id == task_id),
        "jobsets": _counts(conn, jobsets.c.state, jobsets.c.task_id == task_id),
        "outputs": outputs,
        "createdAt": task.created_at,
        "modifiedAt": task.modified_at,
    }


def list_tasks(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(tasks.c.task_id, tasks.c.name, tasks.c.state, tasks.c.n_events).order_by(
            tasks.c.task_id
        )
    ).all()
    return [
        {"taskID": r.task_id, "name": r.name, "state": r.state, "nEvents": r.n_events} for r in rows
    ]


def _job_dict(row: Any) -> dict[str, Any]:
    return {
        "PandaID": row.panda_id,
        "taskID": row.task_id,
        "jobsetID": row.jobset_id,
        "eventService": row.kind,
        "state": row.state,
        "attemptNr": row.attempt_nr,
        "queue": row.queue,
        "node": row.node,
        "command": row.command,
        "heartbeatAt": row.heartbeat_at,
        "createdAt": row.created_at,
        "startedAt": row.started_at,
        "endedAt": row.ended_at,
        "nEvents": row.n_events,
        "errorCode": row.error_code,
        "errorDiag": row.error_diag,
    }


def job_detail(conn: Connection, panda_id: int) -> dict[str, Any]:
    row = conn.execute(select(jobs).where(jobs.c.panda_id == panda_id)).first()
    if row is None:
        raise NotFound(f"unknown PandaID {panda_id}")
    detail = _job_dict(row)
    detail["ranges"] = _counts(
        conn,
        event_ranges.c.state,
        and_(event_ranges.c.jobset_id == row.jobset_id, event_ranges.c.panda_id == panda_id),
    )
    return detail


def list_jobs(
    conn: Connection, task_id: int | None = None, state: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    query = select(jobs).order_by(jobs.c.panda_id).limit(_limit(limit))
    if task_id is not None:
        query = query.where(jobs.c.task_id == task_id)
    if state is not None:
        query = query.where(jobs.c.state == state)
    return [_job_dict(r) for r in conn.execute(query)]


def list_ranges(
    conn: Connection,
    task_id: int | None = None,
    jobset_id: int | None = None,
    state: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    if offset < 0:
        raise InvalidInput("offset must not be negative")
    query = select(event_ranges).order_by(event_ranges.c.range_id).limit(_limit(limit))
    query = query.offset(offset)
    for column, value in (
        (event_ranges.c.task_id, task_id),
        (event_ranges.c.jobset_id, jobset_id),
        (event_ranges.c.state, state),
    ):
        if value is not None:
            query = query.where(column == value)
    return [
        {
            "eventRangeID": str(
                EventRangeID(r.task_id, r.panda_id or 0, r.file_id, r.start_event, r.attempt_nr)
            ),
            "taskID": r.task_id,
            "jobsetID": r.jobset_id,
            "fileID": r.file_id,
            "startEvent": r.start_event,
            "lastEvent": r.last_event,
            "state": r.state,
            "attemptNr": r.attempt_nr,
            "failures": r.failures,
            "PandaID": r.panda_id,
            "path": r.output_path,
            "fsize": r.output_fsize,
            "adler32": r.output_adler32,
            "errorCode": r.error_code,
            "errorDiag": r.error_diag,
        }
        for r in conn.execute(query)
    ]


def list_history(
    conn: Connection,
    entity: str | None = None,
    entity_id: int | None = None,
    limit: int = 1000,
    after: int = 0,
) -> list[dict[str, Any]]:
    query = (
        select(history)
        .where(history.c.history_id > after)
        .order_by(history.c.history_id)
        .limit(_limit(limit))
    )
    if entity is not None:
        query = query.where(history.c.entity == entity)
    if entity_id is not None:
        query = query.where(history.c.entity_id == entity_id)
    return [
        {
            "id": r.history_id,
            "entity": r.entity,
            "entityID": r.entity_id,
            "from": r.from_state,
            "to": r.to_state,
            "attemptNr": r.attempt_nr,
            "PandaID": r.panda_id,
            "at": r.at,
            "reason": r.reason,
        }
        for r in conn.execute(query)
    ]


def stats(conn: Connection) -> dict[str, Any]:
    """Global per-state counts."""
    return {
        "tasks": dict(
            conn.execute(select(tasks.c.state, func.count()).group_by(tasks.c.state)).all()
        ),
        "jobs": dict(conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()),
        "ranges": dict(
            conn.execute(
                select(event_ranges.c.state, func.count()).group_by(event_ranges.c.state)
            ).all()
        ),
    }
