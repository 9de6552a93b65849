"""Task and queue parameters with the defaults of DESIGN §10."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from eventservice.errors import InvalidInput

#: Transfer activities (DESIGN §2, §8).
ACTIVITIES = ("pr", "es_events", "es_failover", "es_events_read", "pw", "pl")

JOBSEEDS = ("es", "std", "all", "eshigh")

#: Default command templates. Placeholders in ``{braces}`` are filled by the
#: dispatcher (event numbers) or by the pilot (local paths); see README "Tasks".
DEFAULT_TRANSFORMATION = "eventservice payload simulate"
DEFAULT_NORMAL_JOB_PARAMETERS = (
    "eventservice payload simulate --sequential --input {input} --out {output}"
    " --first-event {first_event} --last-event {last_event}"
)
DEFAULT_MERGE_JOB_PARAMETERS = "eventservice payload merge --out {output} {inputs}"


@dataclass(frozen=True)
class TaskParams:
    """Per-task parameters (DESIGN §10); names as in PanDA task parameters."""

    esFraction: float = 1.0
    nEventsPerJob: int = 1000
    nEventsPerWorker: int = 1
    nEsConsumers: int = 1
    maxAttempt: int = 20
    maxFailure: int = 10
    esMaxAttempt: int = 10
    esMaxAttemptJob: int = 100
    coreCount: int = 0
    ramCount: int = 0
    mergeEsOnOS: str = "yes"
    skipScout: str = "yes"
    prodSourceLabel: str = "managed"

    def __post_init__(self) -> None:
        if not 0.0 <= self.esFraction <= 1.0:
            raise InvalidInput("esFraction must be between 0 and 1")
        for name in (
            "nEventsPerJob",
            "nEventsPerWorker",
            "nEsConsumers",
            "maxAttempt",
            "esMaxAttempt",
            "esMaxAttemptJob",
        ):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1")
        for name in ("maxFailure", "coreCount", "ramCount"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must not be negative")
        if self.nEventsPerWorker > self.nEventsPerJob:
            raise InvalidInput("nEventsPerWorker must not exceed nEventsPerJob")
        for name in ("mergeEsOnOS", "skipScout"):
            if getattr(self, name) not in ("yes", "no"):
                raise InvalidInput(f"{name} must be 'yes' or 'no'")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> TaskParams:
        """Build from a mapping, converting strings and refusing unknown names."""
        return _from_mapping(cls, data)

    def asdict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueParams:
    """Per-queue parameters (DESIGN §10); ``storages`` maps activity → ordered URLs."""

    corecount: int = 1
    jobseed: str = "all"
    pledgedcpu: int = 0
    zip_time_gap: int | None = None
    not_es_to_zip: bool = False
    maxtime: int = 0
    heartbeat: int = 60
    storages: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.corecount < 1:
            raise InvalidInput("corecount must be at least 1")
        if self.jobseed not in JOBSEEDS:
            raise InvalidInput(f"jobseed must be one of {', '.join(JOBSEEDS)}")
        if self.zip_time_gap is not None and self.zip_time_gap < 0:
            raise InvalidInput("zip_time_gap must not be negative")
        if self.maxtime < 0 or self.heartbeat < 1:
            raise InvalidInput("maxtime must not be negative and heartbeat at least 1 s")
        if not isinstance(self.storages, dict):
            raise InvalidInput("storages must map an activity to a list of URLs")
        for activity, urls in self.storages.items():
            if activity not in ACTIVITIES:
                raise InvalidInput(
                    f"unknown storage activity {activity!r}; known: {', '.join(ACTIVITIES)}"
                )
            if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
                raise InvalidInput(f"storages[{activity!r}] must be a list of URL strings")

    @property
    def opportunistic(self) -> bool:
        """Opportunistic queues (``pledgedcpu == -1``) never get merge jobs."""
        return self.pledgedcpu == -1

    @property
    def effective_zip_time_gap(self) -> int:
        """``zip_time_gap`` or its default: 600 s if opportunistic, else 7200 s."""
        if self.zip_time_gap is not None:
            return self.zip_time_gap
        return 600 if self.opportunistic else 7200

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> QueueParams:
        """Build from a mapping, converting strings and refusing unknown names."""
        return _from_mapping(cls, data)

    def asdict(self) -> dict[str, Any]:
        result = asdict(self)
        result["effective_zip_time_gap"] = self.effective_zip_time_gap
        return result


def _convert(name: str, kind: Any, value: Any) -> Any:
    text = str(kind)
    if value is None and text != "int | None":
        # Only optional parameters may be null; a None would fail later with a TypeError.
        raise InvalidInput(f"{name}: must not be null")
    try:
        if text in ("int", "int | None") and value is not None:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if text == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if text == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError
                return lowered in ("true", "yes", "1")
            if not isinstance(value, (bool, int)):
                raise ValueError
            return bool(value)
        if text == "str":
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}: {value!r} is not a valid {text}") from None
    return value


def _from_mapping(cls: Any, data: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        raise InvalidInput("parameters must be an object")
    known = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InvalidInput(f"unknown parameter(s): {', '.join(unknown)}")
    values = {name: _convert(name, known[name], value) for name, value in data.items()}
    return cls(**values)
