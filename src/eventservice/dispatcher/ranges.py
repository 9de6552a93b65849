"""getEventRanges, updateEventRanges and checkEventsAvailability."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from eventservice.dispatcher import fields, floors, lifecycle
from eventservice.dispatcher.jobs import load_job
from eventservice.domain.ids import EventRangeID
from eventservice.domain.states import (
    ACTIVE_JOB_STATES,
    REPORTABLE_RANGE_STATUSES,
    Command,
    JobKind,
    JobState,
    RangeState,
)
from eventservice.errors import InvalidInput
from eventservice.store.driver import Driver
from eventservice.store.schema import event_ranges, input_files

#: Looks again for ready ranges locked by other transactions before answering empty.
LOCKED_RETRIES = 20
LOCKED_RETRY_DELAY = 0.005
#: errorCode with which a pilot hands back a range it could not finish (preempted, drained).
PREEMPTED_ERROR_CODE = 1700
_ADLER32 = re.compile(r"^[0-9a-f]{1,8}$")
_STATUS_TO_STATE = {
    "running": RangeState.RUNNING,
    "transferring": RangeState.RUNNING,
    "finished": RangeState.FINISHED,
    "failed": RangeState.FAILED,
    "fatal": RangeState.FATAL,
}
#: Input files never change after submission; cached per engine.
_file_cache: WeakKeyDictionary[Engine, dict[int, Any]] = WeakKeyDictionary()
#: Seconds between two refreshes of a jobset by this process's short answers.
SHORT_REFRESH_SECONDS = 1.0
#: Per engine: jobset -> when a short answer of this process last refreshed it.
_short_refreshes: WeakKeyDictionary[Engine, dict[int, float]] = WeakKeyDictionary()


def _input_file(conn: Connection, file_id: int) -> Any:
    cache = _file_cache.setdefault(conn.engine, {})
    if file_id not in cache:
        cache[file_id] = conn.execute(
            select(input_files.c.lfn, input_files.c.guid, input_files.c.scope).where(
                input_files.c.file_id == file_id
            )
        ).one()
    return cache[file_id]


def _consumer(conn: Connection, panda_id: int, jobset_id: int | None, task_id: int | None) -> Any:
    job = load_job(conn, panda_id)
    if jobset_id is not None and job.jobset_id != jobset_id:
        raise InvalidInput(f"PandaID {panda_id} belongs to jobset {job.jobset_id}, not {jobset_id}")
    if task_id is not None and job.task_id != task_id:
        raise InvalidInput(f"PandaID {panda_id} belongs to task {job.task_id}, not {task_id}")
    return job


def _may_consume(job: Any) -> bool:
    return (
        job.kind == JobKind.EVENT_SERVICE
        and JobState(job.state) in ACTIVE_JOB_STATES
        and job.command == Command.NONE.value
    )


_ACTIVE = tuple(sorted(s.value for s in ACTIVE_JOB_STATES))
_ES = int(JobKind.EVENT_SERVICE)
#: Heartbeat a consumer that may take ranges; no row for any other job.
_SQLITE_HEARTBEAT = (
    "UPDATE jobs SET heartbeat_at = ? WHERE panda_id = ? AND kind = ? AND command = ?"
    f" AND state IN ({', '.join('?' for _ in _ACTIVE)})"
    " AND (? IS NULL OR jobset_id = ?) AND (? IS NULL OR task_id = ?)"
    " RETURNING task_id, jobset_id"
)
#: SQLite has one writer at a time, so the LIMIT subquery cannot race. Order as on
#: PostgreSQL (below).
_SQLITE_CLAIM = (
    "UPDATE event_ranges SET state = 'sent', panda_id = ?, modified_at = ?"
    " WHERE range_id IN (SELECT range_id FROM event_ranges WHERE jobset_id = ?"
    " AND state = 'ready' ORDER BY start_event LIMIT ?) AND state = 'ready'"
    " RETURNING range_id, file_id, start_event, last_event, attempt_nr"
)
_SQLITE_SENT_HISTORY = (
    "INSERT INTO history (entity, entity_id, from_state, to_state, attempt_nr, panda_id, at)"
    " VALUES ('range', ?, 'ready', 'sent', ?, ?, ?)"
)
#: Claim and history in one statement. The candidates are a MATERIALIZED CTE: as a plain
#: subquery of the UPDATE, PostgreSQL may re-run the LIMIT/SKIP LOCKED scan per outer
#: row and hand out far more than ``n`` ranges. Lowest events first, in start_event
#: order (a jobset is one file's events): only ix_event_ranges_jobset_state_start gives
#: that order, so no plan walks past the ranges already handed out (migration 0003).
_PG_SEND = """
picked AS MATERIALIZED (
    SELECT r.range_id FROM event_ranges r
    WHERE r.jobset_id = {jobset} AND r.state = 'ready' AND r.start_event >= %(floor)s
    ORDER BY r.start_event LIMIT %(n)s
    FOR UPDATE OF r SKIP LOCKED
), sent AS (
    UPDATE event_ranges r SET state = 'sent', panda_id = %(pid)s, modified_at = %(now)s
    FROM picked WHERE r.range_id = picked.range_id AND r.state = 'ready'
    RETURNING r.range_id, r.file_id, r.start_event, r.last_event, r.attempt_nr
), logged AS (
    INSERT INTO history (entity, entity_id, from_state, to_state, attempt_nr, panda_id, at)
    SELECT 'range', range_id, 'ready', 'sent', attempt_nr, %(pid)s, %(now)s
    FROM sent ORDER BY file_id, start_event
)
"""
#: Heartbeat first (the job row is locked before any range: the lock order of the reaper
#: and of updateEventRanges), then the claim, in one round trip. It commits without
#: waiting for the WAL to reach disk (``synchronous_commit`` off for this statement
#: alone): a lease is soft state. A database crash can forget the last claims, which
#: then end as an expired lease would: the ranges are ready again and the holder's
#: reports are refused. Every report and every job change still commits durably.
_PG_CLAIM = (
    """
WITH job AS (
    UPDATE jobs SET heartbeat_at = %(now)s
    WHERE panda_id = %(pid)s AND kind = {kind} AND command = '{none}' AND state IN ({active})
        AND (%(jobset)s::bigint IS NULL OR jobset_id = %(jobset)s::bigint)
        AND (%(task)s::bigint IS NULL OR task_id = %(task)s::bigint)
    RETURNING task_id, jobset_id
),""".format(kind=_ES, none=Command.NONE.value, active=", ".join(f"'{s}'" for s in _ACTIVE))
    + _PG_SEND.format(jobset="(SELECT jobset_id FROM job)")
    + """, lease AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT job.task_id, job.jobset_id,
       sent.range_id, sent.file_id, sent.start_event, sent.last_event, sent.attempt_nr
FROM job CROSS JOIN lease LEFT JOIN sent ON true
"""
)
#: Looking again, without a second heartbeat: updating the job row twice in one
#: transaction makes PostgreSQL re-check its foreign keys (a KEY SHARE lock on the
#: jobset), and two such requests deadlock in refresh_jobset's FOR UPDATE.
_PG_CLAIM_MORE = (
    "WITH"
    + _PG_SEND.format(jobset="%(jobset)s")
    + "SELECT range_id, file_id, start_event, last_event, attempt_nr FROM sent"
)


def _position(row: Any) -> tuple[int, int]:
    return row[1], row[2]  # (file_id, start_event): the order ranges are answered in


class Claim(NamedTuple):
    """What one claim leased a consumer: its task and jobset, and the ranges as
    ``(range_id, file_id, start, last, attempt)`` in answer order."""

    task_id: int
    jobset_id: int
    rows: list[Any]
    #: the ``start_event`` the claim scanned from (see :mod:`floors`)
    floor: int


def first_claim(
    conn: Connection,
    panda_id: int,
    jobset_id: int | None,
    task_id: int | None,
    n_ranges: int,
    now: float,
) -> Claim | None:
    """Heartbeat a consumer and lease it up to ``n_ranges`` ready ranges (with history),
    on PostgreSQL from its jobset's floor on, in one statement.

    ``None``, with nothing changed, when the job is unknown, belongs to another jobset or
    task than the ones given, or may not take ranges now.
    """
    db = Driver(conn)
    if db.is_postgresql:
        floor = floors.floor(conn.engine, jobset_id)
        params = {
            "now": now,
            "pid": panda_id,
            "n": n_ranges,
            "floor": floor,
            "jobset": jobset_id,
            "task": task_id,
        }
        found = db.rows(_PG_CLAIM, params)
        if not found:
            return None
        rows = sorted((row[2:] for row in found if row[2] is not None), key=_position)
        return Claim(found[0][0], found[0][1], rows, floor)
    job = db.rows(
        _SQLITE_HEARTBEAT,
        (now, panda_id, _ES, Command.NONE.value, *_ACTIVE, jobset_id, jobset_id, task_id, task_id),
    )
    if not job:
        return None
    task, jobset = job[0]
    return Claim(task, jobset, _claim_more(db, panda_id, jobset, n_ranges, now), 0)


def _claim_more(db: Driver, panda_id: int, jobset_id: int, n_ranges: int, now: float) -> list[Any]:
    """Lease ready ranges of a jobset to a consumer already heartbeaten (with history)."""
    if db.is_postgresql:
        params = {"pid": panda_id, "jobset": jobset_id, "n": n_ranges, "now": now, "floor": 0}
        return sorted(db.rows(_PG_CLAIM_MORE, params), key=_position)
    rows = sorted(db.rows(_SQLITE_CLAIM, (panda_id, now, jobset_id, n_ranges)), key=_position)
    db.many(_SQLITE_SENT_HISTORY, [(r[0], r[4], panda_id, now) for r in rows])
    return rows


def get_event_ranges(
    conn: Connection,
    panda_id: int,
    jobset_id: int | None,
    task_id: int | None,
    n_ranges: int,
    now: float,
    first: Claim | None = None,
    tried: bool = False,
) -> list[dict[str, Any]]:
    """Lease up to ``n_ranges`` ready ranges of the consumer's jobset.

    ``tried``: :func:`first_claim` already ran, committed on its own, and leased
    ``first`` (``None``: nothing); this transaction completes a short answer.
    """
    db = Driver(conn)
    claim = first if tried else first_claim(conn, panda_id, jobset_id, task_id, n_ranges, now)
    if claim is None:
        # Unknown (NotFound), another jobset or task (InvalidInput), or a job that may not
        # take ranges now: answered as before, with nothing changed.
        job = _consumer(conn, panda_id, jobset_id, task_id)
        if not _may_consume(job):
            return []
        # It became a consumer meanwhile.
        claim = first_claim(conn, panda_id, jobset_id, task_id, n_ranges, now)
        if claim is None:
            return []
    rows, jobset, floor = claim.rows, claim.jobset_id, claim.floor
    if floor and len(rows) < n_ranges:
        # The floor is a hint: look below it before answering with fewer ranges.
        more = _claim_more(db, panda_id, jobset, n_ranges - len(rows), now)
        rows, floor = sorted(rows + more, key=_position), 0
    for _ in range(LOCKED_RETRIES):
        # SKIP LOCKED also skips ready ranges that other transactions hold right now; an
        # empty answer ends this consumer, so look again once those commit. (Waiting on
        # the row locks instead can deadlock with the reaper and report batches.)
        if rows or not lifecycle.has_ready_ranges(db, jobset):
            break
        time.sleep(LOCKED_RETRY_DELAY)
        rows = _claim_more(db, panda_id, jobset, n_ranges, now)
    if len(rows) < n_ranges:
        _refresh_after_short_answer(conn, jobset, now)
    return answer(conn, panda_id, Claim(claim.task_id, jobset, rows, floor), n_ranges)


def _refresh_after_short_answer(conn: Connection, jobset_id: int, now: float) -> None:
    """Refresh the jobset of a short answer, at most once a second per process.

    When a jobset runs dry, every consumer's next call is a short answer, all at about
    the same moment (64 at once in the benchmark), and a refresh cost each of them
    about 2 ms more than the answer itself. Skipping it is safe: a refresh that only
    follows ranges being taken is already optional (``wait=False``), and every change
    that returns or ends ranges refreshes the jobset itself. The floor goes either way.
    """
    refreshed = _short_refreshes.setdefault(conn.engine, {})
    clock = time.monotonic()
    if clock - refreshed.get(jobset_id, -SHORT_REFRESH_SECONDS) < SHORT_REFRESH_SECONDS:
        floors.forget(conn.engine, jobset_id)
        return
    if len(refreshed) > 1024:  # a long-lived process: keep only the recent ones
        for old in [j for j, at in refreshed.items() if clock - at >= SHORT_REFRESH_SECONDS]:
            del refreshed[old]
    refreshed[jobset_id] = clock
    lifecycle.refresh_jobset(conn, jobset_id, now, wait=False, finish=False)  # drops the floor


def answer(conn: Connection, panda_id: int, claim: Claim, n_ranges: int) -> list[dict[str, Any]]:
    """The getEventRanges answer for what a consumer leased. On PostgreSQL a whole
    answer's lowest range becomes the jobset's floor; a short one leaves the jobset with
    none (its refresh dropped it)."""
    rows = claim.rows
    if len(rows) == n_ranges and conn.dialect.name == "postgresql":
        floors.remember(conn.engine, claim.jobset_id, rows[0][2], claim.floor)
    result = []
    for _range_id, file_id, start_event, last_event, attempt_nr in rows:
        infile = _input_file(conn, file_id)
        result.append(
            {
                "eventRangeID": str(
                    EventRangeID(claim.task_id, panda_id, file_id, start_event, attempt_nr)
                ),
                "startEvent": start_event,
                "lastEvent": last_event,
                "LFN": infile.lfn,
                "GUID": infile.guid,
                "scope": infile.scope,
            }
        )
    return result


def count_available(
    conn: Connection, panda_id: int, jobset_id: int | None, task_id: int | None
) -> int:
    """How many ranges a consumer could still get (checkEventsAvailability)."""
    job = _consumer(conn, panda_id, jobset_id, task_id)
    if not _may_consume(job):
        return 0
    return conn.execute(
        select(func.count()).where(
            event_ranges.c.jobset_id == job.jobset_id,
            event_ranges.c.state == RangeState.READY.value,
        )
    ).scalar_one()


@dataclass
class RangeReport:
    """One validated entry of an updateEventRanges batch."""

    range_id: EventRangeID
    status: str
    error_code: int | None = None
    error_diag: str | None = None
    path: str | None = None
    fsize: int | None = None
    adler32: str | None = None
    objstore_id: str | None = None
    cpu: float | None = None
    wall: float | None = None
    zip_file: dict[str, Any] | None = None


def _int_field(item: dict[str, Any], key: str, where: str) -> int | None:
    value = item.get(key)
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise InvalidInput(f"{where}: {key} must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{where}: {key} must be an integer") from None
    if number < 0:
        raise InvalidInput(f"{where}: {key} must not be negative")
    return number


def _adler(item: dict[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not _ADLER32.match(value.lower()):
        raise InvalidInput(f"{where}: {key} must be an adler32 of 1-8 hex digits")
    return value.lower().zfill(8)


def parse_report(item: Any, where: str, zip_file: dict[str, Any] | None = None) -> RangeReport:
    """Validate one report entry; raise :class:`InvalidInput` naming the problem."""
    if not isinstance(item, dict):
        raise InvalidInput(f"{where} must be an object")
    if "eventRangeID" not in item or "eventStatus" not in item:
        raise InvalidInput(f"{where} needs eventRangeID and eventStatus")
    range_id = EventRangeID.parse(item["eventRangeID"])
    status = item["eventStatus"]
    if not isinstance(status, str) or status not in REPORTABLE_RANGE_STATUSES:
        raise InvalidInput(
            f"{where}: eventStatus must be one of "
            f"{', '.join(sorted(REPORTABLE_RANGE_STATUSES))}, got {status!r}"
        )
    path = item.get("path")
    if path is not None and not isinstance(path, str):
        raise InvalidInput(f"{where}: path must be a string")
    diag = item.get("errorDiag")
    objstore = item.get("objstoreID")
    return RangeReport(
        range_id=range_id,
        status=status,
        error_code=_int_field(item, "errorCode", where),
        error_diag=str(diag)[:2000] if diag is not None else None,
        path=path or None,
        fsize=_int_field(item, "fsize", where),
        adler32=_adler(item, "adler32", where),
        objstore_id=str(objstore) if objstore not in (None, "") else None,
        cpu=_seconds(item, "cpuConsumptionTime", where),
        wall=_seconds(item, "wallTime", where),
        zip_file=zip_file,
    )


def _seconds(item: dict[str, Any], key: str, where: str) -> float | None:
    """Payload CPU/wall seconds of a range (our extension)."""
    return fields.seconds(item.get(key), f"{where}: {key}")


def parse_zip_file(value: Any, where: str) -> dict[str, Any]:
    """Validate the ``zipFile`` record of a version 1 report."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}.zipFile must be an object")
    lfn, path = value.get("lfn"), value.get("path") or value.get("lfn")
    if not isinstance(lfn, str) or not lfn or not isinstance(path, str):
        raise InvalidInput(f"{where}.zipFile needs lfn (and path: the bundle's URL)")
    fsize = _int_field(value, "fsize", f"{where}.zipFile")
    adler = _adler(value, "adler32", f"{where}.zipFile")
    if fsize is None or adler is None:
        raise InvalidInput(f"{where}.zipFile needs fsize and adler32")
    objstore = value.get("objstoreID")
    return {
        "lfn": lfn,
        "path": path,
        "fsize": fsize,
        "adler32": adler,
        "objstore_id": str(objstore) if objstore not in (None, "") else None,
        "num_events": _int_field(value, "numEvents", f"{where}.zipFile"),
    }


def parse_batch(entries: Any, version: int, max_batch: int) -> list[RangeReport]:
    """Validate a whole batch before anything changes (versions 0 and 1)."""
    if not isinstance(entries, list):
        raise InvalidInput("eventRanges must be a JSON list")
    reports: list[RangeReport] = []
    for index, entry in enumerate(entries):
        where = f"eventRanges[{index}]"
        if version == 1:
            if not isinstance(entry, dict) or not isinstance(entry.get("eventRanges"), list):
                raise InvalidInput(f"{where} must be {{'zipFile':..., 'eventRanges':[...]}}")
            zip_file = parse_zip_file(entry["zipFile"], where) if entry.get("zipFile") else None
            reports += [
                parse_report(item, f"{where}.eventRanges[{i}]", zip_file)
                for i, item in enumerate(entry["eventRanges"])
            ]
        else:
            reports.append(parse_report(entry, where))
        if len(reports) > max_batch:
            raise InvalidInput(f"batch too large: at most {max_batch} ranges per call")
    seen: set[str] = set()
    for report in reports:
        key = str(report.range_id)
        if key in seen:
            raise InvalidInput(f"eventRangeID {key} appears twice in one batch")
        seen.add(key)
    return reports
