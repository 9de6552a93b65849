"""A validated task submission: inputs, commands, output pattern and parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventservice.domain.params import (
    DEFAULT_MERGE_JOB_PARAMETERS,
    DEFAULT_NORMAL_JOB_PARAMETERS,
    DEFAULT_TRANSFORMATION,
    TaskParams,
)
from eventservice.errors import InvalidInput, MissingKey

DEFAULT_OUTPUT_NAME = "HITS.{taskID}._{jobsetID:06d}.root"
MAX_INPUT_FILES = 10_000
_SPEC_KEYS = {
    "name",
    "inputs",
    "transformation",
    "normalTransformation",
    "mergeTransformation",
    "outputName",
    "params",
}


@dataclass(frozen=True)
class InputFileSpec:
    """One input file; ``n_events``/``guid`` may be read from the file when absent."""

    url: str
    lfn: str
    scope: str = "user"
    guid: str | None = None
    n_events: int | None = None
    fsize: int | None = None
    checksum: str | None = None

    @classmethod
    def from_mapping(cls, data: Any, index: int) -> InputFileSpec:
        where = f"inputs[{index}]"
        if isinstance(data, str):
            data = {"url": data}
        if not isinstance(data, dict):
            raise InvalidInput(f"{where} must be an object or a path/URL string")
        unknown = set(data) - {
            "url",
            "path",
            "lfn",
            "scope",
            "guid",
            "nEvents",
            "fsize",
            "checksum",
        }
        if unknown:
            raise InvalidInput(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        url = data.get("url", data.get("path"))
        if not isinstance(url, str) or not url:
            raise MissingKey(f"{where} needs 'url' (a path or URL)")
        lfn = data.get("lfn") or url.rstrip("/").rsplit("/", 1)[-1]
        n_events = data.get("nEvents")
        if n_events is not None and (
            isinstance(n_events, bool) or not isinstance(n_events, int) or n_events < 1
        ):
            raise InvalidInput(f"{where}.nEvents must be a positive integer")
        fsize = data.get("fsize")
        if fsize is not None and (
            isinstance(fsize, bool) or not isinstance(fsize, int) or fsize < 0
        ):
            raise InvalidInput(f"{where}.fsize must be a non-negative integer")
        for key in ("lfn", "scope", "guid", "checksum"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise InvalidInput(f"{where}.{key} must be a string")
        return cls(
            url=url,
            lfn=str(lfn),
            scope=data.get("scope") or "user",
            guid=data.get("guid"),
            n_events=n_events,
            fsize=fsize,
            checksum=data.get("checksum"),
        )


@dataclass(frozen=True)
class TaskSpec:
    """Everything needed to create a task (DESIGN §10; see docs/protocol.md for commands)."""

    name: str
    inputs: tuple[InputFileSpec, ...]
    params: TaskParams
    transformation: str = DEFAULT_TRANSFORMATION
    normal_transformation: str = DEFAULT_NORMAL_JOB_PARAMETERS
    merge_transformation: str = DEFAULT_MERGE_JOB_PARAMETERS
    output_name: str = DEFAULT_OUTPUT_NAME

    @classmethod
    def from_mapping(cls, data: Any) -> TaskSpec:
        """Validate a submission; task parameters may be top-level or under ``params``."""
        if not isinstance(data, dict):
            raise InvalidInput("a task must be a JSON object")
        param_names = set(TaskParams.__dataclass_fields__)
        unknown = set(data) - _SPEC_KEYS - param_names
        if unknown:
            raise InvalidInput(f"unknown task field(s): {', '.join(sorted(unknown))}")
        if not isinstance(data.get("params", {}), dict):
            raise InvalidInput("params must be an object")
        params = dict(data.get("params") or {})
        params.update({k: v for k, v in data.items() if k in param_names})
        inputs = data.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise MissingKey("a task needs 'inputs': a non-empty list of files")
        if len(inputs) > MAX_INPUT_FILES:
            raise InvalidInput(f"at most {MAX_INPUT_FILES} input files per task")
        texts = {}
        for key, default in (
            ("transformation", DEFAULT_TRANSFORMATION),
            ("normalTransformation", DEFAULT_NORMAL_JOB_PARAMETERS),
            ("mergeTransformation", DEFAULT_MERGE_JOB_PARAMETERS),
            ("outputName", DEFAULT_OUTPUT_NAME),
            ("name", "task"),
        ):
            value = data.get(key, default)
            if not isinstance(value, str) or not value.strip():
                raise InvalidInput(f"{key} must be a non-empty string")
            texts[key] = value
        try:
            texts["outputName"].format(taskID=1, jobsetID=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise InvalidInput(
                f"outputName may use only {{taskID}} and {{jobsetID}}: {exc}"
            ) from None
        return cls(
            name=texts["name"],
            inputs=tuple(InputFileSpec.from_mapping(item, i) for i, item in enumerate(inputs)),
            params=TaskParams.from_mapping(params),
            transformation=texts["transformation"],
            normal_transformation=texts["normalTransformation"],
            merge_transformation=texts["mergeTransformation"],
            output_name=texts["outputName"],
        )


def is_event_service_jobset(index: int, es_fraction: float) -> bool:
    """Spread ES jobsets evenly: jobset ``index`` runs as ES for a share ``es_fraction``."""
    return int((index + 1) * es_fraction + 1e-9) > int(index * es_fraction + 1e-9)


def split(first: int, last: int, size: int) -> list[tuple[int, int]]:
    """Cut the inclusive span ``first..last`` into consecutive inclusive chunks of ``size``."""
    return [(start, min(start + size - 1, last)) for start in range(first, last + 1, size)]
