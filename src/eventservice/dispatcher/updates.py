"""Applying a validated updateEventRanges batch: guarded per-range transitions."""

from __future__ import annotations

import functools
import json
from typing import Any, NamedTuple

from sqlalchemy import Float, Integer, String, insert, select
from sqlalchemy.engine import Connection

from eventservice.dispatcher import floors, history, lifecycle
from eventservice.dispatcher.ranges import _STATUS_TO_STATE, PREEMPTED_ERROR_CODE, RangeReport
from eventservice.domain.states import Command, RangeState, range_transition_allowed
from eventservice.errors import Conflict
from eventservice.store.driver import Driver
from eventservice.store.schema import event_ranges, jobs, zip_files


class _Range(NamedTuple):
    """The columns of a reported range that the guards and transitions read."""

    range_id: int
    task_id: int
    jobset_id: int
    file_id: int
    start_event: int
    state: str
    attempt_nr: int
    failures: int
    panda_id: int | None


_RANGE_COLUMNS = ", ".join(_Range._fields)
_HISTORY_COLUMNS = ", ".join(history.COLUMNS)
#: One history row per change: (range_id, from, to, attempt_nr, panda_id, reason).
Change = history.Change


class Outcome(NamedTuple):
    """What :func:`apply_reports` did."""

    #: per report: whether it applied (or repeated what already holds)
    applied: list[bool]
    #: per report: why it was refused, or ``None``
    errors: list[str | None]
    #: per consumer named in the batch: its pending command, or ``None``
    commands: dict[str, str | None]
    #: jobsets whose ranges ended with none of theirs ready from the floor on: once the
    #: transaction has committed, :func:`lifecycle.conclude_jobset` checks each
    drained: list[int]


def apply_reports(conn: Connection, reports: list[RangeReport], now: float) -> Outcome:
    """Apply each report that the range's state, attempt and holder allow.

    Jobsets that got ranges back are refreshed in the same transaction; jobsets that may
    have run out of ranges are named in :attr:`Outcome.drained`, for a check after the
    commit (see :func:`lifecycle.conclude_jobset`).
    """
    db = Driver(conn)
    # Lock order everywhere: jobs, then ranges, then jobsets (the reaper does the same),
    # so concurrent dispatcher processes cannot deadlock on PostgreSQL.
    commands = _commands(db, sorted({r.range_id.panda_id for r in reports}), now)
    rows = _lock_rows(db, reports)
    zip_ids: dict[tuple[int, str], int] = {}
    applied: list[bool] = []
    errors: list[str | None] = []
    changes: list[Change] = []
    pending: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
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
            (row.range_id, row.state, row.attempt_nr, *(values[c] for c in sorted(values)))
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
    # Consumers and merge only change when ranges came back or none are left ready.
    with_ready = _write(conn, db, pending, changes, now, sorted(touched - returned))
    for jobset_id in sorted(returned):
        lifecycle.refresh_jobset(conn, jobset_id, now)
    return Outcome(applied, errors, commands, sorted(touched - returned - with_ready))


def _pg_array(numbers: list[int]) -> str:
    """An array literal: psycopg builds array parameters element by element in Python."""
    return "{" + ",".join(map(str, numbers)) + "}"


def _placeholders(n: int) -> str:
    return ", ".join("?" for _ in range(n))


def _lock_rows(db: Driver, reports: list[RangeReport]) -> dict[tuple[int, int, int], _Range]:
    """The reported ranges, locked; looked up through the (task, file, start) index."""
    starts: dict[tuple[int, int], set[int]] = {}
    for report in reports:
        rid = report.range_id
        starts.setdefault((rid.task_id, rid.file_id), set()).add(rid.start_event)
    rows: dict[tuple[int, int, int], _Range] = {}
    for (task_id, file_id), events in starts.items():
        ordered = sorted(events)
        if db.is_postgresql:
            # No ORDER BY: for it PostgreSQL may prefer reading the whole file's ranges in
            # index order and filtering (its cached generic plan did, on a fresh table).
            # An index scan takes the locks in start_event order anyway; the bounds keep
            # even a poor plan to the reported stretch.
            found = db.rows(
                f"SELECT {_RANGE_COLUMNS} FROM event_ranges WHERE task_id = %s::bigint"
                " AND file_id = %s::bigint AND start_event BETWEEN %s::bigint AND %s::bigint"
                " AND start_event = ANY(%s::bigint[]) FOR UPDATE",
                (task_id, file_id, ordered[0], ordered[-1], _pg_array(ordered)),
            )
        else:
            # Not a row-value IN: SQLite would scan the whole table for it.
            found = db.rows(
                f"SELECT {_RANGE_COLUMNS} FROM event_ranges WHERE task_id = ?"
                f" AND file_id = ? AND start_event IN ({_placeholders(len(ordered))})",
                (task_id, file_id, *ordered),
            )
        for values in found:
            row = _Range(*values)
            rows[(row.task_id, row.file_id, row.start_event)] = row
    return rows


def _write(
    conn: Connection,
    db: Driver,
    pending: dict[tuple[str, ...], list[tuple[Any, ...]]],
    changes: list[Change],
    now: float,
    jobsets: list[int],
) -> set[int]:
    """The guarded range updates, one statement per set of columns, and their history;
    returns which of ``jobsets`` still have ready ranges (on PostgreSQL: from their
    floor on; a jobset not named is refreshed, which looks from its start).

    The rows are locked, so every update must match; if one does not, nothing changes.
    """
    expected = sum(len(params) for params in pending.values())
    changed = 0
    with_ready: set[int] = set()
    if db.is_postgresql:
        history_json = json.dumps(changes) if changes else None
        last = len(pending) - 1
        for index, (columns, params) in enumerate(pending.items()):
            args: list[Any] = [now, history_json] if history_json is not None else []
            args += [json.dumps(params), _pg_array([p[0] for p in params])]
            check = index == last and bool(jobsets)
            sql = _pg_update(columns, history_json is not None, check)
            history_json = None  # the history goes with the first update
            if check:
                from_events = [floors.floor(conn.engine, j) for j in jobsets]
                ((count, found),) = db.rows(
                    sql, [*args, _pg_array(jobsets), _pg_array(from_events)]
                )
                changed += count
                with_ready.update(found)
            else:
                changed += db.run(sql, args)
    else:
        for columns, params in pending.items():
            changed += db.many(_sqlite_update(columns), params)
        history.record_ranges(db, changes, now)
        with_ready.update(j for j in jobsets if lifecycle.has_ready_ranges(db, j))
    if changed not in (-1, expected):
        # Cannot happen while the rows are locked; if it does, change nothing at all.
        raise Conflict(f"{expected - changed} range(s) changed meanwhile; report again")
    return with_ready


@functools.lru_cache(maxsize=64)
def _sqlite_update(columns: tuple[str, ...]) -> str:
    """The guarded UPDATE for executemany; parameters: range_id, state, attempt, values."""
    sets = ", ".join(f"{column} = ?{i}" for i, column in enumerate(columns, start=4))
    return f"UPDATE event_ranges SET {sets} WHERE range_id = ?1 AND state = ?2 AND attempt_nr = ?3"


@functools.lru_cache(maxsize=64)
def _pg_update(columns: tuple[str, ...], with_history: bool, with_ready_check: bool) -> str:
    """One guarded UPDATE for a whole batch, its rows given as one JSON array of arrays.

    JSON rather than one array parameter per column: psycopg builds arrays element by
    element in Python, ``json.dumps`` in C. The range_ids again as an array condition:
    on a table not analyzed yet the planner otherwise hashes the JSON rows and reads the
    whole table to join them.
    """
    names = ["b_range_id", "b_state", "b_attempt", *columns]
    types = [_pg_type(c) for c in ("range_id", "state", "attempt_nr", *columns)]
    fields = ", ".join(
        f"(e->>{i})::{t} AS {n}" for i, (n, t) in enumerate(zip(names, types, strict=True))
    )
    sets = ", ".join(f"{column} = v.{column}" for column in columns)
    update_sql = (
        f"UPDATE event_ranges r SET {sets}"
        f" FROM (SELECT {fields} FROM json_array_elements(%s::json) AS e) AS v"
        " WHERE r.range_id = ANY(%s::bigint[]) AND r.range_id = v.b_range_id"
        " AND r.state = v.b_state AND r.attempt_nr = v.b_attempt"
    )
    ctes = []
    if with_history:
        ctes.append(
            f"logged AS (INSERT INTO history ({_HISTORY_COLUMNS})"
            " SELECT 'range', (e->>0)::bigint, e->>1, e->>2, (e->>3)::bigint, (e->>4)::bigint,"
            " %s, e->>5 FROM json_array_elements(%s::json) AS e)"
        )
    if not with_ready_check:
        return (f"WITH {ctes[0]} " if ctes else "") + update_sql
    # Which jobsets still have a ready range, in the same round trip. The statement's
    # snapshot predates its own update, which only moves held ranges, except failed
    # ranges going back to ready: their jobsets are refreshed without this check.
    ctes.append(f"updated AS ({update_sql} RETURNING 1)")
    return (
        f"WITH {', '.join(ctes)} SELECT (SELECT count(*) FROM updated),"
        " ARRAY(SELECT j FROM unnest(%s::bigint[], %s::bigint[]) AS t(j, f)"
        " WHERE (SELECT 1 FROM event_ranges x WHERE x.jobset_id = j AND x.state = 'ready'"
        " AND x.start_event >= f ORDER BY x.start_event LIMIT 1) IS NOT NULL)"
    )


def _pg_type(column: str) -> str:
    """The widest type of the column's kind: the column's own type then refuses what does
    not fit (a cast to varchar(n) would silently truncate)."""
    kind = event_ranges.c[column].type
    if isinstance(kind, Integer):
        return "bigint"
    if isinstance(kind, Float):
        return "float8"
    if isinstance(kind, String):
        return "text"
    raise TypeError(f"no type for event_ranges.{column}")


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


def _commands(db: Driver, panda_ids: list[int], now: float) -> dict[str, str | None]:
    """Heartbeat the consumers named in a batch and collect their pending commands."""
    if not panda_ids:
        return {}
    if db.is_postgresql:
        sql = "UPDATE jobs SET heartbeat_at = %s WHERE panda_id = ANY(%s::bigint[])"
        params: tuple[Any, ...] = (now, _pg_array(panda_ids))
    else:
        sql = (
            f"UPDATE jobs SET heartbeat_at = ? WHERE panda_id IN ({_placeholders(len(panda_ids))})"
        )
        params = (now, *panda_ids)
    found: dict[int, str] = dict(db.rows(sql + " RETURNING panda_id, command", params))
    return {
        str(pid): (None if found.get(pid, Command.NONE.value) == Command.NONE.value else found[pid])
        for pid in panda_ids
    }
