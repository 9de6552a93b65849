"""What follows a state change: releasing ranges, making consumers, merging, task progress.

All functions run inside the caller's transaction.
"""

from __future__ import annotations

import json
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import BigInteger, Float, and_, func, insert, literal, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from eventservice.dispatcher import floors, history
from eventservice.dispatcher.tasks import new_job_row
from eventservice.domain.params import TaskParams
from eventservice.domain.states import (
    ACTIVE_JOB_STATES,
    HELD_RANGE_STATES,
    QUEUED_JOB_STATES,
    JobKind,
    JobState,
    RangeState,
    TaskState,
)
from eventservice.store.driver import Driver
from eventservice.store.schema import event_ranges, jobs, jobsets, tasks
from eventservice.store.schema import history as history_table

#: Task parameters never change after submission; cached per engine (so a new
#: Database, e.g. on a recreated database, starts with an empty cache).
_params_cache: WeakKeyDictionary[Engine, dict[int, TaskParams]] = WeakKeyDictionary()
_HELD = sorted(s.value for s in HELD_RANGE_STATES)
_LIVE_JOB_STATES = [s.value for s in ACTIVE_JOB_STATES | QUEUED_JOB_STATES]
_QUEUED_JOB_STATES = [s.value for s in QUEUED_JOB_STATES]


def task_params(conn: Connection, task_id: int) -> TaskParams:
    """A task's parameters (immutable after submission, so cached per engine)."""
    cache = _params_cache.setdefault(conn.engine, {})
    if task_id not in cache:
        text = conn.execute(select(tasks.c.params).where(tasks.c.task_id == task_id)).scalar_one()
        cache[task_id] = TaskParams.from_mapping(json.loads(text))
    return cache[task_id]


def release_ranges(
    conn: Connection,
    where: Any,
    *,
    count_failure: bool,
    reason: str,
    now: float,
    error_code: int | None = None,
) -> set[int]:
    """Return held ranges matching ``where`` to ``ready`` as attempt+1.

    With ``count_failure`` the try counts against esMaxAttempt, and a range that has
    used its budget becomes ``failed`` instead. Returns the jobsets touched.
    """
    rows = conn.execute(
        select(
            event_ranges.c.range_id,
            event_ranges.c.task_id,
            event_ranges.c.jobset_id,
            event_ranges.c.state,
            event_ranges.c.attempt_nr,
            event_ranges.c.failures,
            event_ranges.c.panda_id,
        ).where(where, event_ranges.c.state.in_(_HELD))
    ).all()
    changes = []
    for row in rows:
        failures = row.failures + int(count_failure)
        exhausted = failures >= task_params(conn, row.task_id).esMaxAttempt
        new_state = RangeState.FAILED if exhausted else RangeState.READY
        values: dict[str, Any] = {
            "state": new_state.value,
            "failures": failures,
            "modified_at": now,
            "error_diag": reason,
        }
        if error_code is not None:
            values["error_code"] = error_code
        if not exhausted:
            values["attempt_nr"] = row.attempt_nr + 1
        conn.execute(
            update(event_ranges)
            .where(
                event_ranges.c.range_id == row.range_id,
                event_ranges.c.state == row.state,
                event_ranges.c.attempt_nr == row.attempt_nr,
            )
            .values(**values)
        )
        changes.append(
            (
                row.range_id,
                row.state,
                new_state.value,
                values.get("attempt_nr", row.attempt_nr),
                row.panda_id,
                reason,
            )
        )
    history.record(conn, "range", changes, now)
    return {row.jobset_id for row in rows}


def move_ranges(
    conn: Connection,
    jobset_id: int,
    old: RangeState,
    new: RangeState,
    now: float,
    reason: str,
    *,
    by: int | None = None,
    **values: Any,
) -> int:
    """Move every range of a jobset in state ``old`` to ``new``, with a history row each.

    ``by`` is the job the change is recorded for (default: each range's holder). Returns
    how many ranges moved. A jobset may hold tens of thousands of ranges and other
    requests wait on its lock meanwhile: on PostgreSQL the update and its history are one
    statement, on SQLite (in process) the history is one ``executemany``.
    """
    moved = (
        update(event_ranges)
        .where(event_ranges.c.jobset_id == jobset_id, event_ranges.c.state == old.value)
        .values(state=new.value, modified_at=now, **values)
        .returning(event_ranges.c.range_id, event_ranges.c.attempt_nr, event_ranges.c.panda_id)
    )
    holder = literal(by, BigInteger) if by is not None else None
    if conn.dialect.name == "postgresql":
        cte = moved.cte("moved")
        logged = insert(history_table).from_select(
            list(history.COLUMNS),
            select(
                literal("range"),
                cte.c.range_id,
                literal(old.value),
                literal(new.value),
                cte.c.attempt_nr,
                cte.c.panda_id if holder is None else holder,
                literal(now, Float),
                literal(reason),
            ),
        )
        return int(
            conn.execute(
                select(func.count()).select_from(cte).add_cte(logged.cte("logged"))
            ).scalar_one()
        )
    rows = conn.execute(moved).all()
    history.record_ranges(
        Driver(conn),
        [
            (
                r.range_id,
                old.value,
                new.value,
                r.attempt_nr,
                r.panda_id if by is None else by,
                reason,
            )
            for r in rows
        ],
        now,
    )
    return len(rows)


def has_ranges(conn: Connection, jobset_id: int, states: list[str]) -> bool:
    """Whether any range of the jobset is in one of ``states`` (stops at the first)."""
    return (
        conn.execute(
            select(event_ranges.c.range_id)
            .where(event_ranges.c.jobset_id == jobset_id, event_ranges.c.state.in_(states))
            .limit(1)
        ).first()
        is not None
    )


def _has_range_sql(db: Driver, state: str, newest_first: bool) -> str:
    """``SELECT 1`` for a jobset's first range in ``state`` (a constant of ours, inlined).

    ORDER BY: without it PostgreSQL expects such rows everywhere and scans the jobset
    from its start, past the index entries that earlier claims and reports left behind
    (see floors); with it, the index (jobset_id, state, start_event) leads straight to
    the first one from the chosen end.
    """
    return (
        "SELECT 1 FROM event_ranges WHERE jobset_id = {p} AND state = '{state}'"
        " ORDER BY start_event{order} LIMIT 1"
    ).format(
        p="%s" if db.is_postgresql else "?", state=state, order=" DESC" if newest_first else ""
    )


def has_ready_ranges(db: Driver, jobset_id: int) -> bool:
    """Whether any range of the jobset is ready (the hot paths' check, in plain SQL)."""
    return bool(db.rows(_has_range_sql(db, RangeState.READY.value, False), (jobset_id,)))


def has_held_ranges(db: Driver, jobset_id: int) -> bool:
    """Whether any range of the jobset is sent or running (a consumer holds it).

    Newest first: ranges are handed out in start_event order, so at a jobset's end the
    ranges still held are mostly its last ones.
    """
    return any(db.rows(_has_range_sql(db, state, True), (jobset_id,)) for state in _HELD)


def refresh_jobset(
    conn: Connection, jobset_id: int, now: float, *, wait: bool = True, finish: bool = True
) -> None:
    """Bring an ES jobset's consumers and merge in line with its ranges.

    ``wait=False`` skips the refresh while another transaction holds the jobset, and
    ``finish=False`` leaves a jobset with no range ready or held as it is: both for
    callers that only took ranges. Every change that returns or ends ranges refreshes
    the jobset itself (updates, job ends, the reaper), so a skipped refresh is only
    postponed, getEventRanges never queues behind a large jobset's move to merging, and
    never makes that move itself (it ends no range: the report that ended the last one
    has the jobset concluded, see :func:`conclude_jobset`).
    """
    # Ranges may have come back to ready below this process's floor, or run out.
    floors.forget(conn.engine, jobset_id)
    # Lock the jobset: two requests must not both add the missing consumers.
    jobset = conn.execute(
        select(jobsets)
        .where(jobsets.c.jobset_id == jobset_id)
        .with_for_update(skip_locked=not wait)
    ).one_or_none()
    if jobset is None or not jobset.event_service or jobset.state != "running":
        return
    ready = has_ready_ranges(Driver(conn), jobset_id)
    params = task_params(conn, jobset.task_id)
    consumers = conn.execute(
        select(jobs.c.panda_id, jobs.c.state).where(
            jobs.c.jobset_id == jobset_id,
            jobs.c.kind == int(JobKind.EVENT_SERVICE),
            jobs.c.state.in_(_LIVE_JOB_STATES),
        )
    ).all()
    if ready:
        missing = min(
            params.nEsConsumers - len(consumers), params.esMaxAttemptJob - jobset.consumers_made
        )
        if missing > 0:
            conn.execute(
                insert(jobs),
                [
                    new_job_row(
                        jobset.task_id,
                        jobset_id,
                        JobKind.EVENT_SERVICE,
                        now,
                        consumers_before=len(consumers) + i,
                    )
                    for i in range(missing)
                ],
            )
            conn.execute(
                update(jobsets)
                .where(jobsets.c.jobset_id == jobset_id)
                .values(consumers_made=jobset.consumers_made + missing)
            )
        elif not consumers:
            # No consumer may be made any more: what is left can never run.
            reason = "esMaxAttemptJob consumers used up"
            move_ranges(
                conn, jobset_id, RangeState.READY, RangeState.FAILED, now, reason, error_diag=reason
            )
            refresh_jobset(conn, jobset_id, now)
        return
    close_queued_consumers(conn, jobset_id, now)
    if finish and not has_held_ranges(Driver(conn), jobset_id):
        finish_processing(conn, jobset, now)


def conclude_jobset(conn: Connection, jobset_id: int, now: float) -> None:
    """Refresh a jobset that may have run out of ranges, if it really has.

    Called after a report that ended ranges of a jobset with none ready from this
    process's floor on, in a transaction of its own, once the report's has committed.

    While other ranges are still held, the jobset needs nothing but its queued consumers
    closed; waiting for the jobset's lock each time made the last reports of a large
    jobset queue behind each other. Whoever ends the last held range sees every earlier
    report committed, since its check starts after its own commit, and refreshes under
    the lock, which decides once. A dispatcher that dies between a report's commit and
    this check leaves the refresh to the consumers' end (updateJob) or to the reaper.
    """
    floors.forget(conn.engine, jobset_id)
    if not has_held_ranges(Driver(conn), jobset_id):
        refresh_jobset(conn, jobset_id, now)  # which looks for ready ranges itself
    elif _has_queued_consumers(conn, jobset_id):
        # Under the lock, or not at all: a refresh that holds it decides for both.
        refresh_jobset(conn, jobset_id, now, wait=False)


def _queued_consumers(jobset_id: int) -> tuple[ColumnElement[bool], ...]:
    """The ES jobs of a jobset that no pilot has picked up yet."""
    return (
        jobs.c.jobset_id == jobset_id,
        jobs.c.kind == int(JobKind.EVENT_SERVICE),
        jobs.c.state.in_(_QUEUED_JOB_STATES),
    )


def _has_queued_consumers(conn: Connection, jobset_id: int) -> bool:
    found = select(jobs.c.panda_id).where(*_queued_consumers(jobset_id)).limit(1)
    return conn.execute(found).first() is not None


def close_queued_consumers(conn: Connection, jobset_id: int, now: float) -> None:
    """Close consumers not yet picked up: there is nothing left for them."""
    closed = (
        conn.execute(
            update(jobs)
            .where(*_queued_consumers(jobset_id))
            .values(state=JobState.CLOSED.value, ended_at=now)
            .returning(jobs.c.panda_id)
        )
        .scalars()
        .all()
    )
    history.record(
        conn,
        "job",
        [
            (pid, JobState.ACTIVATED.value, JobState.CLOSED.value, None, pid, "no events left")
            for pid in closed
        ],
        now,
    )


def finish_processing(conn: Connection, jobset: Any, now: float) -> None:
    """Every range of the jobset has ended: merge what finished, or fail the jobset."""
    if not has_ranges(conn, jobset.jobset_id, [RangeState.FINISHED.value]):
        set_jobset_state(conn, jobset.jobset_id, "running", "failed", now, "no range finished")
        update_task_progress(conn, jobset.task_id, now)
        return
    if not set_jobset_state(conn, jobset.jobset_id, "running", "merging", now, "ranges ended"):
        return
    move_ranges(
        conn, jobset.jobset_id, RangeState.FINISHED, RangeState.DONE, now, "accepted for merge"
    )
    create_merge_job(conn, jobset.task_id, jobset.jobset_id, 1, now)
    update_task_progress(conn, jobset.task_id, now)


def create_job(
    conn: Connection,
    task_id: int,
    jobset_id: int,
    kind: JobKind,
    attempt: int,
    now: float,
    reason: str,
) -> int:
    """Queue a new activated job of a jobset, with its history row; returns its PandaID."""
    panda_id = conn.execute(
        insert(jobs)
        .values(**new_job_row(task_id, jobset_id, kind, now, attempt))
        .returning(jobs.c.panda_id)
    ).scalar_one()
    history.record_one(
        conn,
        "job",
        panda_id,
        None,
        JobState.ACTIVATED.value,
        attempt_nr=attempt,
        panda_id=panda_id,
        now=now,
        reason=reason,
    )
    return panda_id


def create_merge_job(
    conn: Connection, task_id: int, jobset_id: int, attempt: int, now: float
) -> int:
    """Queue a merge job (eventService=2) for a jobset's done ranges."""
    return create_job(conn, task_id, jobset_id, JobKind.ES_MERGE, attempt, now, "merge job created")


def set_jobset_state(
    conn: Connection, jobset_id: int, expected: str, new: str, now: float, reason: str
) -> bool:
    """Guarded jobset transition; ``False`` when another request got there first."""
    changed = conn.execute(
        update(jobsets)
        .where(jobsets.c.jobset_id == jobset_id, jobsets.c.state == expected)
        .values(state=new, modified_at=now)
    ).rowcount
    if changed:
        history.record_one(conn, "jobset", jobset_id, expected, new, now=now, reason=reason)
    return bool(changed)


def merge_succeeded(conn: Connection, job: Any, output: dict[str, Any], now: float) -> None:
    """A merge job finished: its ranges are merged and the final output is recorded."""
    conn.execute(
        update(jobsets)
        .where(jobsets.c.jobset_id == job.jobset_id)
        .values(
            output_path=output.get("path"),
            output_fsize=output.get("fsize"),
            output_adler32=output.get("adler32"),
        )
    )
    if not set_jobset_state(conn, job.jobset_id, "merging", "merged", now, "merge finished"):
        return
    move_ranges(
        conn, job.jobset_id, RangeState.DONE, RangeState.MERGED, now, "merged", by=job.panda_id
    )
    update_task_progress(conn, job.task_id, now)


def merge_failed(conn: Connection, job: Any, max_attempts: int, now: float) -> None:
    """A merge job failed: retry it, or discard the outputs and process the events again."""
    if job.attempt_nr < max_attempts:
        create_merge_job(conn, job.task_id, job.jobset_id, job.attempt_nr + 1, now)
        return
    jobset = conn.execute(select(jobsets).where(jobsets.c.jobset_id == job.jobset_id)).one()
    params = task_params(conn, job.task_id)
    if jobset.attempt_nr >= params.maxAttempt:
        set_jobset_state(conn, job.jobset_id, "merging", "failed", now, "merge attempts used up")
        update_task_progress(conn, job.task_id, now)
        return
    move_ranges(
        conn,
        job.jobset_id,
        RangeState.DONE,
        RangeState.DISCARDED,
        now,
        "merge failed: output discarded",
        by=job.panda_id,
        output_path=None,
        output_fsize=None,
        output_adler32=None,
        zip_id=None,
        objstore_id=None,
    )
    move_ranges(
        conn,
        job.jobset_id,
        RangeState.DISCARDED,
        RangeState.READY,
        now,
        "re-processing",
        attempt_nr=event_ranges.c.attempt_nr + 1,
    )
    conn.execute(
        update(jobsets)
        .where(jobsets.c.jobset_id == job.jobset_id)
        .values(attempt_nr=jobset.attempt_nr + 1, consumers_made=0)
    )
    set_jobset_state(conn, job.jobset_id, "merging", "running", now, "re-processing")
    refresh_jobset(conn, job.jobset_id, now)
    update_task_progress(conn, job.task_id, now)  # merging -> running again


def normal_job_ended(
    conn: Connection, job: Any, succeeded: bool, output: dict[str, Any] | None, now: float
) -> None:
    """A normal job ended: record its output, or retry it within maxAttempt."""
    if succeeded:
        conn.execute(
            update(jobsets)
            .where(jobsets.c.jobset_id == job.jobset_id)
            .values(
                output_path=(output or {}).get("path"),
                output_fsize=(output or {}).get("fsize"),
                output_adler32=(output or {}).get("adler32"),
            )
        )
        set_jobset_state(conn, job.jobset_id, "running", "done", now, "normal job finished")
    elif job.attempt_nr < task_params(conn, job.task_id).maxAttempt:
        create_job(
            conn, job.task_id, job.jobset_id, JobKind(job.kind), job.attempt_nr + 1, now, "retry"
        )
        return
    else:
        set_jobset_state(conn, job.jobset_id, "running", "failed", now, "job attempts used up")
    update_task_progress(conn, job.task_id, now)


def update_task_progress(conn: Connection, task_id: int, now: float) -> None:
    """Move the task on once its jobsets have all ended (done, partial or failed)."""
    states: dict[str, int] = dict(
        conn.execute(
            select(jobsets.c.state, func.count())
            .where(jobsets.c.task_id == task_id)
            .group_by(jobsets.c.state)
        ).all()
    )
    open_count = states.get("running", 0) + states.get("merging", 0)
    current = conn.execute(select(tasks.c.state).where(tasks.c.task_id == task_id)).scalar_one()
    if open_count:
        new = (
            TaskState.MERGING
            if states.get("merging") and not states.get("running")
            else TaskState.RUNNING
        )
    elif not states.get("failed"):
        new = TaskState.DONE
    elif states.get("merged") or states.get("done"):
        new = TaskState.FINISHED
    else:
        new = TaskState.FAILED
    if new.value == current:
        return
    changed = conn.execute(
        update(tasks)
        .where(and_(tasks.c.task_id == task_id, tasks.c.state == current))
        .values(state=new.value, modified_at=now)
    ).rowcount
    if changed:
        history.record_one(conn, "task", task_id, current, new.value, now=now, reason="progress")
