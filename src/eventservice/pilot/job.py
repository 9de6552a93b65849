"""What a pilot knows about its job and its queue, parsed from the dispatcher's answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from eventservice.errors import InvalidInput


class ExecutorKind(str, Enum):
    """Which executor runs a job (DESIGN §6)."""

    GENERIC = "generic"
    EVENTSERVICE = "eventservice"
    MERGE = "eventservicemerge"


def _split(value: Any) -> list[str]:
    """PanDA comma-joined list (``"a,b"``), or a JSON list, as a list of strings."""
    if value is None or value == "" or value == "NULL":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [part.strip() for part in str(value).split(",")]


def _true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _int(fields: dict[str, Any], name: str, default: int = 0) -> int:
    value = fields.get(name, default)
    if value in (None, "", "NULL"):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"job field {name}={value!r} is not an integer") from None


def parse_checksum(text: str) -> str | None:
    """``ad:0a1b2c3d`` (or a bare 8-digit hex) → ``0a1b2c3d``; ``None`` when absent."""
    text = text.strip().lower()
    if not text or text == "null":
        return None
    if text.startswith("ad:"):
        text = text[3:]
    return text if ":" not in text else None


@dataclass(frozen=True)
class InputFile:
    """One input of a job: its LFN, where to read it, and what it should look like."""

    lfn: str
    url: str
    size: int | None = None
    adler32: str | None = None
    guid: str = ""


@dataclass(frozen=True)
class Job:
    """A job as handed out by ``getJob`` (DESIGN §5)."""

    panda_id: int
    jobset_id: int
    task_id: int
    attempt_nr: int
    core_count: int
    max_walltime: int
    transformation: str
    inputs: tuple[InputFile, ...]
    out_files: tuple[str, ...]
    log_file: str
    kind: ExecutorKind
    write_to_file: dict[str, list[str]] = field(default_factory=dict)
    event_range_ids: frozenset[str] = frozenset()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> Job:
        """Build from a ``getJob`` answer (strings, comma-joined lists)."""
        if "PandaID" not in fields:
            raise InvalidInput("job has no PandaID")
        lfns = _split(fields.get("inFiles"))
        urls = _split(fields.get("inFilesURL")) or list(lfns)
        sizes = _split(fields.get("fsize"))
        sums = _split(fields.get("checksum"))
        guids = _split(fields.get("GUID"))
        inputs = []
        for i, lfn in enumerate(lfns):
            size = sizes[i] if i < len(sizes) else ""
            inputs.append(
                InputFile(
                    lfn=lfn,
                    url=urls[i] if i < len(urls) else lfn,
                    size=int(size) if size.isdigit() else None,
                    adler32=parse_checksum(sums[i]) if i < len(sums) else None,
                    guid=guids[i] if i < len(guids) else "",
                )
            )
        if _true(fields.get("eventServiceMerge")):
            kind = ExecutorKind.MERGE
        elif _true(fields.get("eventService")):
            kind = ExecutorKind.EVENTSERVICE
        else:
            kind = ExecutorKind.GENERIC
        panda_id = _int(fields, "PandaID")
        return cls(
            panda_id=panda_id,
            jobset_id=_int(fields, "jobsetID"),
            task_id=_int(fields, "taskID"),
            attempt_nr=_int(fields, "attemptNr", 1),
            core_count=_int(fields, "coreCount", 0),
            max_walltime=_int(fields, "maxWalltime", 0),
            transformation=str(fields.get("transformation") or ""),
            inputs=tuple(inputs),
            out_files=tuple(_split(fields.get("outFiles"))),
            log_file=str(fields.get("logFile") or f"{panda_id}.log.tgz"),
            kind=kind,
            write_to_file=parse_write_to_file(str(fields.get("writeToFile") or "")),
            event_range_ids=frozenset(_split(fields.get("eventRangeIDs"))),
            raw=dict(fields),
        )

    @property
    def n_events(self) -> int | None:
        """Events of the job's chunk (``firstEvent``..``lastEvent``), when given."""
        first, last = self.raw.get("firstEvent"), self.raw.get("lastEvent")
        if first is None or last is None:
            return None
        try:
            return int(last) - int(first) + 1
        except (TypeError, ValueError):
            return None

    def ranges_after(self, event_range: dict[str, Any]) -> int | None:
        """At most how many ranges of the job's chunk lie beyond ``event_range``.

        The dispatcher hands a jobset's ranges out in event order, so this bounds what is
        left for every consumer of the chunk once ``event_range`` was handed out. From
        ``lastEvent`` and ``nEventsPerWorker`` (our dispatcher sends both; a server that
        does not gets ``None``).
        """
        try:
            chunk_last = int(self.raw["lastEvent"])
            per_range = int(self.raw.get("nEventsPerWorker") or range_events(event_range))
            beyond = chunk_last - int(event_range["lastEvent"])
        except (KeyError, TypeError, ValueError):
            return None
        return max(0, -(-beyond // max(1, per_range)))

    def input_url(self, lfn: str) -> str | None:
        """Where to read the input named ``lfn`` (the range's ``PFN``)."""
        for item in self.inputs:
            if item.lfn == lfn:
                return item.url
        return None


def parse_write_to_file(text: str) -> dict[str, list[str]]:
    """``inputFor_<out>:<in1>,<in2>^...`` → ``{out: [in1, in2], ...}``."""
    result: dict[str, list[str]] = {}
    for part in text.split("^"):
        if not part.strip() or ":" not in part:
            continue
        head, _, tail = part.partition(":")
        name = head.strip()
        if name.startswith("inputFor_"):
            name = name[len("inputFor_") :]
        result[name] = [item.strip() for item in tail.split(",") if item.strip()]
    return result


@dataclass(frozen=True)
class QueueConfig:
    """The queue definition a pilot reads from ``GET /api/v1/queues/{name}``."""

    name: str
    corecount: int = 1
    zip_time_gap: float = 7200.0
    not_es_to_zip: bool = False
    maxtime: int = 0
    heartbeat: float = 60.0
    storages: dict[str, list[str]] = field(default_factory=dict)
    object_stores: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> QueueConfig:
        """Build from the JSON API's queue object (docs/protocol.md)."""
        gap = data.get("effective_zip_time_gap")
        if gap is None:
            gap = data.get("zip_time_gap")
        if gap is None:
            gap = 600 if int(data.get("pledgedcpu", 0) or 0) == -1 else 7200
        return cls(
            name=str(data.get("name", "")),
            corecount=max(1, int(data.get("corecount", 1) or 1)),
            zip_time_gap=float(gap),
            not_es_to_zip=_true(data.get("not_es_to_zip", False)),
            maxtime=int(data.get("maxtime", 0) or 0),
            heartbeat=max(0.1, float(data.get("heartbeat", 60) or 60)),
            storages={k: list(v) for k, v in (data.get("storages") or {}).items()},
            object_stores={k: int(v) for k, v in (data.get("objectStores") or {}).items()},
        )

    def objstore_id(self, endpoint: str) -> int | None:
        """The ``objstoreID`` of a storage base URL, ``None`` when unknown."""
        value = self.object_stores.get(endpoint)
        if value is None:
            value = self.object_stores.get(endpoint.rstrip("/"))
        return value


def range_events(event_range: dict[str, Any]) -> int:
    """Number of events in a range (both ends inclusive); 1 when unknown."""
    try:
        return int(event_range["lastEvent"]) - int(event_range["startEvent"]) + 1
    except (KeyError, TypeError, ValueError):
        return 1


def cores_for(job: Job, queue: QueueConfig, override: int | None) -> int:
    """Cores to use: the CLI's ``--cores``, else the job's ``coreCount``, else the queue's."""
    for value in (override, job.core_count, queue.corecount):
        if value and value > 0:
            return int(value)
    return 1
