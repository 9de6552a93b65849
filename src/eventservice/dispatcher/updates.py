"""Applying a validated updateEventRanges batch: guarded per-range transitions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, insert, select, tuple_, update
from sqlalchemy.engine import Connection

from eventservice.dispatcher import history, lifecycle
from eventservice.dispatcher.ranges import _STATUS_TO_STATE, PREEMPTED_ERROR_CODE, RangeReport
from eventservice.domain.states import Command, RangeState, range_transition_allowed
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
    keys = [(r.range_id.task_id, r.range_id.file_id, r.range_id.start_event) for r in reports]
    rows: dict[tuple[int, int, int], Any] = {}
    if keys:
        query = (
            select(event_ranges)
            .where(
                tuple_(
                    event_ranges.c.task_id, event_ranges.c.file_id, event_ranges.c.start_event
                ).in_(keys)
            )
            .with_for_update()
        )
        for row in conn.execute(query):
            rows[(row.task_id, row.file_id, row.start_event)] = row
    zip_ids: dict[tuple[int, str], int] = {}
    applied: list[bool] = []
    errors: list[str | None] = []
    changes = []
    touched_jobsets: set[int] = set()
    for report, key in zip(reports, keys, strict=True):
        row = rows.get(key)
        reason = _refusal(report, row)
        if reason is not None:
            applied.append(reason == "")
            errors.append(reason or None)
            continue
        values, new_state = _new_values(conn, report, row, now)
        if report.zip_file is not None and new_state == RangeState.FINISHED:
            values["zip_id"] = _zip_id(conn, report, zip_ids)
        changed = conn.execute(
            update(event_ranges)
            .where(
                and_(
                    event_ranges.c.range_id == row.range_id,
                    event_ranges.c.state == row.state,
                    event_ranges.c.attempt_nr == row.attempt_nr,
                    event_ranges.c.panda_id == row.panda_id,
                )
            )
            .values(**values)
        ).rowcount
        if not changed:  # only possible if the row moved under us; nothing was changed
            applied.append(False)
            errors.append("range changed meanwhile; report again")
            continue
        applied.append(True)
        errors.append(None)
        if report.status == "failed" and new_state == RangeState.READY:
            # Retried at once: the audit trail still shows the failure, then the retry.
            changes.append(
                (
                    row.range_id,
                    row.state,
                    RangeState.FAILED.value,
                    row.attempt_nr,
                    report.range_id.panda_id,
                    report.error_diag,
                )
            )
            changes.append(
                (
                    row.range_id,
                    RangeState.FAILED.value,
                    RangeState.READY.value,
                    values["attempt_nr"],
                    report.range_id.panda_id,
                    "retry",
                )
            )
        else:
            changes.append(
                (
                    row.range_id,
                    row.state,
                    new_state.value,
                    values.get("attempt_nr", row.attempt_nr),
                    report.range_id.panda_id,
                    report.error_diag,
                )
            )
        if new_state in (
            RangeState.READY,
            RangeState.FINISHED,
            RangeState.FAILED,
            RangeState.FATAL,
        ):
            touched_jobsets.add(row.jobset_id)
    history.record(conn, "range", changes, now)
    for jobset_id in sorted(touched_jobsets):
        lifecycle.refresh_jobset(conn, jobset_id, now)
    return applied, errors, commands


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
    found = dict(
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
