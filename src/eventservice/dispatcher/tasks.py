"""Task submission (split into jobsets, ranges and jobs) and queue definitions."""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from eventservice.dispatcher import history
from eventservice.domain.params import ACTIVITIES, QueueParams
from eventservice.domain.states import JobKind, JobState, RangeState, TaskState
from eventservice.domain.task_spec import InputFileSpec, TaskSpec, is_event_service_jobset, split
from eventservice.errors import Conflict, InvalidInput, NotFound
from eventservice.store.schema import (
    event_ranges,
    input_files,
    jobs,
    jobsets,
    object_stores,
    queues,
    tasks,
)

_INSERT_CHUNK = 5000
QUEUE_NAME_MAX = 100


def resolve_input(spec: InputFileSpec) -> InputFileSpec:
    """Fill ``n_events`` and ``guid`` from the file itself when the submission omits them."""
    if spec.n_events is not None and spec.guid is not None:
        return spec
    guid, n_events = spec.guid, spec.n_events
    try:
        from eventservice.payload.inputs import read_input_metadata

        file_guid, file_events = read_input_metadata(spec.url)
    except Exception as exc:  # any reader failure means: tell the user what to give instead
        if n_events is None:
            raise InvalidInput(
                f"cannot read the number of events from {spec.url!r} ({exc}); "
                "give nEvents for this input"
            ) from None
        file_guid, file_events = None, n_events
    return InputFileSpec(
        url=spec.url,
        lfn=spec.lfn,
        scope=spec.scope,
        guid=guid or file_guid or str(uuid.uuid4()),
        n_events=n_events if n_events is not None else file_events,
        fsize=spec.fsize,
        checksum=spec.checksum,
    )


def submit_task(conn: Connection, spec: TaskSpec, now: float) -> int:
    """Create a task with its files, jobsets, ranges and first jobs; return its taskID."""
    params = spec.params
    task_id = conn.execute(
        insert(tasks)
        .values(
            name=spec.name,
            state=TaskState.RUNNING.value,
            params=json.dumps(params.asdict()),
            transformation=spec.transformation,
            normal_transformation=spec.normal_transformation,
            merge_transformation=spec.merge_transformation,
            output_name=spec.output_name,
            n_events=sum(f.n_events or 0 for f in spec.inputs),
            created_at=now,
            modified_at=now,
        )
        .returning(tasks.c.task_id)
    ).scalar_one()
    history.record_one(
        conn, "task", task_id, None, TaskState.RUNNING.value, now=now, reason="submitted"
    )

    range_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    jobset_index = 0
    for spec_file in spec.inputs:
        assert spec_file.n_events is not None and spec_file.guid is not None
        file_id = conn.execute(
            insert(input_files)
            .values(
                task_id=task_id,
                lfn=spec_file.lfn,
                guid=spec_file.guid,
                scope=spec_file.scope,
                url=spec_file.url,
                n_events=spec_file.n_events,
                fsize=spec_file.fsize,
                checksum=spec_file.checksum,
            )
            .returning(input_files.c.file_id)
        ).scalar_one()
        for first, last in split(0, spec_file.n_events - 1, params.nEventsPerJob):
            event_service = is_event_service_jobset(jobset_index, params.esFraction)
            jobset_index += 1
            jobset_id = conn.execute(
                insert(jobsets)
                .values(
                    task_id=task_id,
                    file_id=file_id,
                    first_event=first,
                    last_event=last,
                    event_service=int(event_service),
                    state="running",
                    attempt_nr=1,
                    consumers_made=0,
                    job_failures=0,
                    output_lfn="",
                    modified_at=now,
                )
                .returning(jobsets.c.jobset_id)
            ).scalar_one()
            conn.execute(
                update(jobsets)
                .where(jobsets.c.jobset_id == jobset_id)
                .values(output_lfn=spec.output_name.format(taskID=task_id, jobsetID=jobset_id))
            )
            if event_service:
                n_consumers = min(params.nEsConsumers, params.esMaxAttemptJob)
                conn.execute(
                    update(jobsets)
                    .where(jobsets.c.jobset_id == jobset_id)
                    .values(consumers_made=n_consumers)
                )
                job_rows += [
                    new_job_row(task_id, jobset_id, JobKind.EVENT_SERVICE, now, consumers_before=i)
                    for i in range(n_consumers)
                ]
                range_rows += [
                    {
                        "task_id": task_id,
                        "jobset_id": jobset_id,
                        "file_id": file_id,
                        "start_event": start,
                        "last_event": stop,
                        "state": RangeState.READY.value,
                        "attempt_nr": 1,
                        "failures": 0,
                        "modified_at": now,
                    }
                    for start, stop in split(first, last, params.nEventsPerWorker)
                ]
            else:
                job_rows.append(new_job_row(task_id, jobset_id, JobKind.NORMAL, now))
    for offset in range(0, len(range_rows), _INSERT_CHUNK):
        conn.execute(insert(event_ranges), range_rows[offset : offset + _INSERT_CHUNK])
    if job_rows:
        conn.execute(insert(jobs), job_rows)
    return task_id


#: Merge jobs go first: their jobset's outputs wait for them.
MERGE_PRIORITY = 10


def new_job_row(
    task_id: int,
    jobset_id: int,
    kind: JobKind,
    now: float,
    attempt_nr: int = 1,
    *,
    consumers_before: int = 0,
) -> dict[str, Any]:
    """Values of a fresh, activated job.

    ``consumers_before``: for an ES consumer, how many live consumers its jobset already
    has. A jobset's second consumer ranks below every first consumer (and so on), so
    pilots spread over untouched jobsets before they share one: fewer consumer jobs,
    hence fewer payload starts, per jobset.
    """
    return {
        "task_id": task_id,
        "jobset_id": jobset_id,
        "kind": int(kind),
        "state": JobState.ACTIVATED.value,
        "attempt_nr": attempt_nr,
        "priority": MERGE_PRIORITY if kind == JobKind.ES_MERGE else -consumers_before,
        "command": "NULL",
        "created_at": now,
    }


def add_queue(
    conn: Connection, name: str, params: QueueParams, now: float, replace: bool = False
) -> None:
    """Define a queue (or redefine it with ``replace``); register its object stores."""
    if not isinstance(name, str) or not name or len(name) > QUEUE_NAME_MAX or "/" in name:
        raise InvalidInput(f"queue name must be 1-{QUEUE_NAME_MAX} characters without '/'")
    exists = conn.execute(select(queues.c.name).where(queues.c.name == name)).first()
    if exists and not replace:
        raise Conflict(f"queue {name!r} already exists")
    payload = json.dumps(dataclasses.asdict(params))  # stored without derived fields
    if exists:
        conn.execute(update(queues).where(queues.c.name == name).values(params=payload))
    else:
        conn.execute(insert(queues).values(name=name, params=payload, created_at=now))
    known = set(conn.execute(select(object_stores.c.url)).scalars())
    for activity in ACTIVITIES:
        for url in params.storages.get(activity, []):
            if url not in known:
                conn.execute(insert(object_stores).values(url=url))
                known.add(url)


def load_queue(conn: Connection, name: str) -> QueueParams:
    """A queue's parameters; :class:`NotFound` when there is no such queue."""
    row = conn.execute(select(queues.c.params).where(queues.c.name == name)).first()
    if row is None:
        raise NotFound(f"unknown queue {name!r}")
    return QueueParams.from_mapping(json.loads(row.params))


def describe_queue(conn: Connection, name: str) -> dict[str, Any]:
    """A queue's definition as pilots read it (docs/protocol.md)."""
    params = load_queue(conn, name)
    urls = {url for urls in params.storages.values() for url in urls}
    ids = {
        row.url: row.objstore_id for row in conn.execute(select(object_stores)) if row.url in urls
    }
    return {"name": name, **params.asdict(), "objectStores": ids}


def list_queues(conn: Connection) -> list[dict[str, Any]]:
    """Every queue's definition."""
    names = conn.execute(select(queues.c.name).order_by(queues.c.name)).scalars().all()
    return [describe_queue(conn, name) for name in names]
