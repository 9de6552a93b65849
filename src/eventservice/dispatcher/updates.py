"""Applying a validated updateEventRanges batch: guarded per-range transitions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from eventservice.dispatcher import history, lifecycle
from eventservice.dispatcher.ranges import _STATUS_TO_STATE, PREEMPTED_ERROR_CODE, RangeReport
from eventservice.domain.states import Command, RangeState, range_transition_allowed
from eventservice.errors import Conflict
from eventservice.store.schema import event_ranges, jobs, zip_files


def apply_reports(
    conn: Connection, reports: list[RangeReport], now: float
) -> tuple[list[bool], list[str | None], dict[str, str | None]]:
    """Apply each report that the range's state, attempt and holder allow.

    Returns per-report ``applied`` flags and refusal reasons, and the command for
    each consumer named in the batch.
    """
    # Lock order everywhere: jobs, then ranges, then jobsets (the reaper does the same),
    # so concurrent dispatcher processes cannot deadlock on PostgreSQL.
    commands = _commands(conn, sorted({r.range_id.panda_id for r in reports}), now)
    rows = _lock_rows(conn, reports)
    zip_ids: dict[tuple[int, str], int] = {}
    applied: list[bool] = []
    errors: list[str | None] = []
    changes: list[tuple[int, str | None, str, int | None, int | None, str | None]] = []
    pending: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    touched: set[int] = set()
    returned: set[int] = set()
    for report in reports:
        rid = report.range_id
        row = rows.get((rid.task_id, rid.file_id, rid.start_event))
        reason = _refusal(report, row)
        if reason is not None:
            applied.append(reason == "")
            errors.append(reason or None)
            continue
        assert row is not None  # _refusal names a missing range
        values, new_state = _new_values(conn, report, row, now)
        if report.zip_file is not None and new_state == RangeState.FINISHED:
            values["zip_id"] = _zip_id(conn, report, zip_ids)
        pending.setdefault(tuple(sorted(values)), []).append(
            {
                "b_range_id": row.range_id,
                "b_state": row.state,
                "b_attempt": row.attempt_nr,
                **{f"v_{column}": value for column, value in values.items()},
            }
        )
        applied.append(True)
        errors.append(None)
        attempt = values.get("attempt_nr", row.attempt_nr)
        if report.status == "failed" and new_state == RangeState.READY:
            # Retried at once: the audit trail still shows the failure, then the retry.
            changes.append(
                (
                    row.range_id,
                    row.state,
                    RangeState.FAILED.value,
                    row.attempt_nr,
                    rid.panda_id,
                    report.error_diag,
                )
            )
            changes.append(
                (
                    row.range_id,
                    RangeState.FAILED.value,
                    RangeState.READY.value,
                    attempt,
                    rid.panda_id,
                    "retry",
                )
            )
        else:
            changes.append(
                (row.range_id, row.state, new_state.value, attempt, rid.panda_id, report.error_diag)
            )
        if new_state != RangeState.RUNNING:
            touched.add(row.jobset_id)
        if new_state == RangeState.READY:
            returned.add(row.jobset_id)
    for columns, params in pending.items():
        _update_many(conn, columns, params)
    history.record(conn, "range", changes, now)
    for jobset_id in sorted(touched):
        # Consumers and merge only change when ranges came back or none are left ready.
        if jobset_id in returned or not lifecycle.has_ranges(
            conn, jobset_id, [RangeState.READY.value]
        ):
            lifecycle.refresh_jobset(conn, jobset_id, now)
    return applied, errors, commands


def _lock_rows(conn: Connection, reports: list[RangeReport]) -> dict[tuple[int, int, int], Any]:
    """The reported ranges, locked; looked up through the (task, file, start) index."""
    starts: dict[tuple[int, int], set[int]] = {}
    for report in reports:
        rid = report.range_id
        starts.setdefault((rid.task_id, rid.file_id), set()).add(rid.start_event)
    rows: dict[tuple[int, int, int], Any] = {}
    for (task_id, file_id), events in starts.items():
        # Not a row-value IN: SQLite would scan the whole table for it.
        query = (
            select(event_ranges)
            .where(
                event_ranges.c.task_id == task_id,
                event_ranges.c.file_id == file_id,
                event_ranges.c.start_event.in_(sorted(events)),
            )
            .with_for_update()
        )
        for row in conn.execute(query):
            rows[(row.task_id, row.file_id, row.start_event)] = row
    return rows


def _update_many(conn: Connection, columns: tuple[str, ...], params: list[dict[str, Any]]) -> None:
    """One guarded UPDATE executed for many ranges (rows are locked, so all must match)."""
    statement = (
        update(event_ranges)
        .where(
            event_ranges.c.range_id == bindparam("b_range_id"),
            event_ranges.c.state == bindparam("b_state"),
            event_ranges.c.attempt_nr == bindparam("b_attempt"),
        )
        .values({column: bindparam(f"v_{column}") for column in columns})
    )
    changed = conn.execute(statement, params).rowcount
    if changed not in (-1, len(params)):
        # Cannot happen while the rows are locked; if it does, change nothing at all.
        raise Conflict(f"{len(params) - changed} range(s) changed meanwhile; report again")


def _refusal(report: RangeReport, row: Any) -> str | None:
    """Why this report cannot apply; ``""`` for an already-applied repeat; ``None`` if OK."""
    rid = report.range_id
    if row is None:
        return f"unknown event range {rid}"
    if row.attempt_nr != rid.attempt_nr:
        return f"stale attempt {rid.attempt_nr}: the range is at attempt {row.attempt_nr}"
    if row.panda_id != rid.panda_id:
        return f"range is held by PandaID {row.panda_id}, not {rid.panda_id}"
    target = _STATUS_TO_STATE[report.status]
    current = RangeState(row.state)
    # A repeat of the state the range already has (same attempt and holder) is answered
    # true with no change; "failed" included: a range still at the reported attempt and
    # failed has used up esMaxAttempt (a retryable one is already at attempt+1).
    if current == target and target in (
        RangeState.RUNNING,
        RangeState.FINISHED,
        RangeState.FAILED,
        RangeState.FATAL,
    ):
        return ""
    if current in (RangeState.DONE, RangeState.MERGED) and target == RangeState.FINISHED:
        return ""
    if not range_transition_allowed(current, target):
        return f"illegal transition {current.value} -> {target.value}"
    if target == RangeState.FINISHED and report.path is None and report.zip_file is None:
        return "finished without output location: give path (version 0) or zipFile (version 1)"
    return None


def _new_values(
    conn: Connection, report: RangeReport, row: Any, now: float
) -> tuple[dict[str, Any], RangeState]:
    target = _STATUS_TO_STATE[report.status]
    values: dict[str, Any] = {"modified_at": now}
    if report.error_code is not None:
        values["error_code"] = report.error_code
    if report.error_diag is not None:
        values["error_diag"] = report.error_diag
    if target == RangeState.FINISHED:
        values |= {
            "output_path": report.path,
            "output_fsize": report.fsize,
            "output_adler32": report.adler32,
            "objstore_id": report.objstore_id or (report.zip_file or {}).get("objstore_id"),
            "cpu_seconds": report.cpu,
            "wall_seconds": report.wall,
        }
    if target == RangeState.FAILED:
        preempted = report.error_code == PREEMPTED_ERROR_CODE
        failures = row.failures + (0 if preempted else 1)
        values["failures"] = failures
        if failures < lifecycle.task_params(conn, row.task_id).esMaxAttempt:
            values["attempt_nr"] = row.attempt_nr + 1
            target = RangeState.READY  # failed, and straight back for another attempt
    values["state"] = target.value
    return values, target


def _zip_id(conn: Connection, report: RangeReport, cache: dict[tuple[int, str], int]) -> int:
    assert report.zip_file is not None
    zip_file = report.zip_file
    key = (report.range_id.panda_id, zip_file["lfn"])
    if key not in cache:
        existing = conn.execute(
            select(zip_files.c.zip_id).where(
                zip_files.c.panda_id == key[0], zip_files.c.lfn == key[1]
            )
        ).scalar()
        if existing is None:
            job_jobset = conn.execute(
                select(jobs.c.jobset_id).where(jobs.c.panda_id == key[0])
            ).scalar()
            existing = conn.execute(
                insert(zip_files)
                .values(
                    task_id=report.range_id.task_id,
                    jobset_id=job_jobset or 0,
                    panda_id=key[0],
                    lfn=zip_file["lfn"],
                    path=zip_file["path"],
                    fsize=zip_file["fsize"],
                    adler32=zip_file["adler32"],
                    objstore_id=zip_file["objstore_id"],
                    num_events=zip_file["num_events"],
                )
                .returning(zip_files.c.zip_id)
            ).scalar_one()
        cache[key] = existing
    return cache[key]


def _commands(conn: Connection, panda_ids: list[int], now: float) -> dict[str, str | None]:
    """Heartbeat the consumers named in a batch and collect their pending commands."""
    if not panda_ids:
        return {}
    found: dict[int, str] = dict(
        conn.execute(
            update(jobs)
            .where(jobs.c.panda_id.in_(panda_ids))
            .values(heartbeat_at=now)
            .returning(jobs.c.panda_id, jobs.c.command)
        ).all()
    )
    return {
        str(pid): (None if found.get(pid, Command.NONE.value) == Command.NONE.value else found[pid])
        for pid in panda_ids
    }
