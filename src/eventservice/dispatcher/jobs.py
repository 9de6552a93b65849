"""getJob and updateJob: claiming jobs per queue, describing them, and job state changes."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection

from eventservice.dispatcher import fields, history, lifecycle
from eventservice.dispatcher.tasks import load_queue
from eventservice.domain.ids import EventRangeID
from eventservice.domain.params import QueueParams
from eventservice.domain.states import (
    FINAL_JOB_STATES,
    PILOT_JOB_STATES,
    QUEUED_JOB_STATES,
    Command,
    JobKind,
    JobState,
    RangeState,
    job_transition_allowed,
)
from eventservice.errors import IllegalTransition, InvalidInput, NotFound
from eventservice.store.schema import event_ranges, input_files, jobs, jobsets, tasks, zip_files


def eligible_kinds(queue: QueueParams) -> list[int]:
    """Job kinds a queue's ``jobseed`` admits; merge jobs never go to opportunistic queues."""
    kinds = {
        "es": [JobKind.EVENT_SERVICE],
        "eshigh": [JobKind.EVENT_SERVICE],
        "std": [JobKind.NORMAL, JobKind.ES_MERGE],
        "all": [JobKind.EVENT_SERVICE, JobKind.NORMAL, JobKind.ES_MERGE],
    }[queue.jobseed]
    return [int(k) for k in kinds if not (k == JobKind.ES_MERGE and queue.opportunistic)]


def claim_job(conn: Connection, queue_name: str, node: str, now: float) -> dict[str, Any] | None:
    """Hand the best activated job this queue may run to a pilot, in one statement."""
    queue = load_queue(conn, queue_name)
    # Pick the candidate in its own statement: inside ``UPDATE ... WHERE id IN (SELECT ...
    # LIMIT 1 FOR UPDATE SKIP LOCKED)`` PostgreSQL may plan a semi-join that re-runs the
    # subquery per outer row, so one getJob could claim (and lose) several jobs.
    candidate = conn.execute(
        select(jobs.c.panda_id)
        .where(jobs.c.state == JobState.ACTIVATED.value, jobs.c.kind.in_(eligible_kinds(queue)))
        .order_by(jobs.c.priority.desc(), jobs.c.panda_id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).scalar()
    if candidate is None:
        return None
    job = conn.execute(
        update(jobs)
        .where(jobs.c.panda_id == candidate, jobs.c.state == JobState.ACTIVATED.value)
        .values(
            state=JobState.SENT.value,
            queue=queue_name,
            node=node[:200],
            heartbeat_at=now,
            started_at=now,
        )
        .returning(*jobs.c)
    ).first()
    if job is None:
        return None
    history.record_one(
        conn,
        "job",
        job.panda_id,
        JobState.ACTIVATED.value,
        JobState.SENT.value,
        attempt_nr=job.attempt_nr,
        panda_id=job.panda_id,
        now=now,
        reason=f"to {node}",
    )
    return describe_job(conn, job, queue)


def describe_job(conn: Connection, job: Any, queue: QueueParams) -> dict[str, Any]:
    """The getJob answer fields of a job (DESIGN §5, docs/protocol.md)."""
    task = conn.execute(select(tasks).where(tasks.c.task_id == job.task_id)).one()
    jobset = conn.execute(select(jobsets).where(jobsets.c.jobset_id == job.jobset_id)).one()
    infile = conn.execute(select(input_files).where(input_files.c.file_id == jobset.file_id)).one()
    params = lifecycle.task_params(conn, job.task_id)
    fields: dict[str, Any] = {
        "PandaID": job.panda_id,
        "jobsetID": job.jobset_id,
        "taskID": job.task_id,
        "attemptNr": job.attempt_nr,
        "coreCount": params.coreCount or queue.corecount,
        "maxWalltime": queue.maxtime,
        "jobPars": "",
        "prodSourceLabel": params.prodSourceLabel,
        "outFiles": jobset.output_lfn,
        "scopeOut": infile.scope,
        "scopeLog": infile.scope,
        "logFile": f"{job.task_id}.{job.panda_id}.log.tgz",
        "destinationSE": job.queue or "",
        "eventService": "False",
        "cloneJob": "",
        "nEventsPerWorker": params.nEventsPerWorker,
        "firstEvent": jobset.first_event,
        "lastEvent": jobset.last_event,
    }
    if job.kind == JobKind.ES_MERGE:
        fields |= merge_inputs(conn, job, jobset)
        fields |= {"eventServiceMerge": "True", "transformation": task.merge_transformation}
        return fields
    fields |= {
        "inFiles": infile.lfn,
        "inFilesURL": infile.url,
        "GUID": infile.guid,
        "scopeIn": infile.scope,
        "fsize": str(infile.fsize or 0),
        "checksum": infile.checksum or "",
        "realDatasetsIn": "",
    }
    if job.kind == JobKind.EVENT_SERVICE:
        fields |= {"eventService": "True", "transformation": task.transformation}
    else:
        fields["transformation"] = task.normal_transformation.replace(
            "{first_event}", str(jobset.first_event)
        ).replace("{last_event}", str(jobset.last_event))
    return fields


def merge_inputs(conn: Connection, job: Any, jobset: Any) -> dict[str, Any]:
    """A merge job's inputs: per-range outputs and bundles of the jobset's done ranges."""
    rows = conn.execute(
        select(
            event_ranges.c.file_id,
            event_ranges.c.start_event,
            event_ranges.c.attempt_nr,
            event_ranges.c.panda_id,
            event_ranges.c.output_path,
            event_ranges.c.output_fsize,
            event_ranges.c.output_adler32,
            event_ranges.c.zip_id,
        )
        .where(
            event_ranges.c.jobset_id == jobset.jobset_id,
            event_ranges.c.state == RangeState.DONE.value,
        )
        .order_by(event_ranges.c.start_event)
    ).all()
    zips = {
        z.zip_id: z
        for z in conn.execute(select(zip_files).where(zip_files.c.jobset_id == jobset.jobset_id))
    }
    files: dict[str, tuple[str, int, str]] = {}
    range_ids = []
    for r in rows:
        range_ids.append(
            str(EventRangeID(job.task_id, r.panda_id, r.file_id, r.start_event, r.attempt_nr))
        )
        if r.zip_id is not None and r.zip_id in zips:
            z = zips[r.zip_id]
            files.setdefault(z.lfn, (z.path, z.fsize, z.adler32))
        elif r.output_path:
            lfn = r.output_path.rstrip("/").rsplit("/", 1)[-1]
            files.setdefault(lfn, (r.output_path, r.output_fsize or 0, r.output_adler32 or ""))
    lfns = list(files)
    return {
        "inFiles": ",".join(lfns),
        "inFilesURL": ",".join(files[lfn][0] for lfn in lfns),
        "fsize": ",".join(str(files[lfn][1]) for lfn in lfns),
        "checksum": ",".join(f"ad:{files[lfn][2]}" for lfn in lfns),
        "GUID": "",
        "scopeIn": ",".join("events" for _ in lfns),
        "writeToFile": f"inputFor_{jobset.output_lfn}:{','.join(lfns)}",
        "eventRangeIDs": ",".join(range_ids),
    }


def parse_output_files(raw: Any) -> list[dict[str, Any]]:
    """Validate the ``outputFiles`` field of updateJob (JSON list of file records)."""
    if raw in (None, ""):
        return []
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise InvalidInput("outputFiles is not valid JSON") from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidInput("outputFiles must be a JSON list of objects")
    for item in value:
        if not isinstance(item.get("path"), str):
            raise InvalidInput("every outputFiles entry needs a 'path' string")
        if "fsize" in item and (not isinstance(item["fsize"], int) or item["fsize"] < 0):
            raise InvalidInput("outputFiles fsize must be a non-negative integer")
    return value


def load_job(conn: Connection, panda_id: int) -> Any:
    job = conn.execute(select(jobs).where(jobs.c.panda_id == panda_id)).first()
    if job is None:
        raise NotFound(f"unknown PandaID {panda_id}")
    return job


def update_job(
    conn: Connection,
    panda_id: int,
    state: str,
    details: dict[str, Any],
    now: float,
    merge_max_attempts: int,
) -> str:
    """Apply a pilot's job report (also its heartbeat); return the command for it."""
    try:
        new = JobState(state)
    except ValueError:
        raise InvalidInput(f"unknown job state {state!r}") from None
    if new not in PILOT_JOB_STATES:
        raise InvalidInput(f"a pilot cannot set job state {state!r}")
    outputs = parse_output_files(details.get("outputFiles"))
    job = load_job(conn, panda_id)
    current = JobState(job.state)
    if current == new:
        conn.execute(update(jobs).where(jobs.c.panda_id == panda_id).values(heartbeat_at=now))
        return job.command
    if current in FINAL_JOB_STATES or not job_transition_allowed(current, new):
        raise IllegalTransition(f"job {panda_id} is {current.value}; cannot become {new.value}")
    values: dict[str, Any] = {"state": new.value, "heartbeat_at": now}
    for key, column in (
        ("nEvents", "n_events"),
        ("pilotErrorCode", "error_code"),
        ("exeErrorCode", "error_code"),
    ):
        if details.get(key) not in (None, ""):
            try:
                values[column] = int(details[key])
            except (TypeError, ValueError):
                raise InvalidInput(f"{key} must be an integer") from None
    cpu = fields.seconds(details.get("cpuConsumptionTime"), "cpuConsumptionTime")
    if cpu is not None:
        values["cpu_seconds"] = cpu
    diag = details.get("pilotErrorDiag") or details.get("exeErrorDiag")
    if diag:
        values["error_diag"] = str(diag)[:2000]
    if new in FINAL_JOB_STATES:
        values["ended_at"] = now
    changed = conn.execute(
        update(jobs)
        .where(jobs.c.panda_id == panda_id, jobs.c.state == current.value)
        .values(**values)
    ).rowcount
    if not changed:
        raise IllegalTransition(f"job {panda_id} changed state meanwhile; report again")
    history.record_one(
        conn,
        "job",
        panda_id,
        current.value,
        new.value,
        attempt_nr=job.attempt_nr,
        panda_id=panda_id,
        now=now,
        reason=values.get("error_diag"),
    )
    if new in FINAL_JOB_STATES:
        job_ended(conn, job, new == JobState.FINISHED, outputs, now, merge_max_attempts)
    return job.command


def job_ended(
    conn: Connection,
    job: Any,
    succeeded: bool,
    outputs: list[dict[str, Any]],
    now: float,
    merge_max_attempts: int,
    reason: str = "consumer ended",
) -> None:
    """Consequences of a job reaching a final state (report, kill or lost lease)."""
    kind = JobKind(job.kind)
    if kind == JobKind.EVENT_SERVICE:
        # A consumer holds ranges of its own jobset only: through the jobset's index the
        # look reads that jobset's held ranges, not a per-holder index every claim and
        # report would have to keep up (migration 0004).
        touched = lifecycle.release_ranges(
            conn,
            and_(
                event_ranges.c.jobset_id == job.jobset_id,
                event_ranges.c.panda_id == job.panda_id,
            ),
            count_failure=True,
            reason=reason,
            now=now,
        )
        for jobset_id in touched | {job.jobset_id}:
            lifecycle.refresh_jobset(conn, jobset_id, now)
    elif kind == JobKind.ES_MERGE:
        if succeeded:
            lifecycle.merge_succeeded(conn, job, outputs[0] if outputs else {}, now)
        else:
            lifecycle.merge_failed(conn, job, merge_max_attempts, now)
    else:
        lifecycle.normal_job_ended(conn, job, succeeded, outputs[0] if outputs else None, now)


def set_command(
    conn: Connection, panda_id: int, command: Command, now: float, merge_max_attempts: int
) -> dict[str, Any]:
    """Tell a job to die (``tobekilled``) or drain (``softkill``) at its next contact.

    A job not yet picked up is closed at once, with its consequences.
    """
    job = load_job(conn, panda_id)
    if JobState(job.state) in FINAL_JOB_STATES:
        raise IllegalTransition(f"job {panda_id} already ended ({job.state})")
    conn.execute(update(jobs).where(jobs.c.panda_id == panda_id).values(command=command.value))
    if JobState(job.state) in QUEUED_JOB_STATES and command == Command.KILL:
        conn.execute(
            update(jobs)
            .where(jobs.c.panda_id == panda_id)
            .values(state=JobState.CLOSED.value, ended_at=now)
        )
        history.record_one(
            conn,
            "job",
            panda_id,
            job.state,
            JobState.CLOSED.value,
            panda_id=panda_id,
            now=now,
            reason="killed before start",
        )
        job_ended(conn, job, False, [], now, merge_max_attempts, reason="killed")
    return {"PandaID": panda_id, "command": command.value}
