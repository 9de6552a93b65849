"""A client for the dispatcher's PanDA paths (DESIGN §5, docs/protocol.md).

Requests are form-urlencoded POSTs to ``/server/panda/<method>`` with
``Accept: application/json``. Network errors and 5xx answers are retried with
exponential backoff (the dispatcher may restart under a pilot); anything else is
translated once, here, into the project's exception tree.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx

from eventservice.errors import (
    Conflict,
    DispatcherUnavailable,
    EventServiceError,
    InvalidInput,
    MissingKey,
    NotFound,
)
from eventservice.tls import tls_context

log = logging.getLogger(__name__)

STATUS_OK = 0
STATUS_TIMEOUT = 10
STATUS_NO_JOBS = 20
STATUS_FAILED = 30
STATUS_INVALID = 50
STATUS_NOT_ALLOWED = (60, 70)
STATUS_MISSING_KEY = 80


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: ``base * factor**n`` capped at ``max_delay``, for ``retry_for`` s."""

    retry_for: float = 300.0
    base: float = 0.5
    factor: float = 2.0
    max_delay: float = 15.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based), with 10 % jitter."""
        delay = min(self.max_delay, self.base * self.factor**attempt)
        return delay * (1.0 + 0.1 * random.random())


@dataclass
class RangeUpdateResult:
    """The dispatcher's answer to ``updateEventRanges``.

    ``returns[i]`` is ``True`` when range ``i`` was applied, ``False`` (reason in
    ``errors[i]``) when refused; ``commands`` maps PandaID → command or ``None``.
    """

    returns: list[bool | None] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    commands: dict[str, str | None] = field(default_factory=dict)

    def command_for(self, panda_id: int | str) -> str | None:
        """The command for one job, ``None`` when there is none."""
        value = self.commands.get(str(panda_id))
        return None if value in (None, "NULL", "") else str(value)


def _form(data: Mapping[str, Any]) -> dict[str, str]:
    """PanDA form values are strings; nested values are JSON-encoded."""
    out: dict[str, str] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "True" if value else "False"
        elif isinstance(value, (dict, list, tuple)):
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    return out


def _decode(response: httpx.Response) -> dict[str, Any]:
    """Decode a JSON or urlencoded answer into a dict."""
    text = response.text
    if "json" in response.headers.get("content-type", "") or text.lstrip().startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise InvalidInput(f"dispatcher answered a {type(value).__name__}, not an object")
        return value
    result: dict[str, Any] = {}
    for key, raw in parse_qsl(text, keep_blank_values=True):
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    return result


def _raise_for_status_code(method: str, answer: Mapping[str, Any]) -> None:
    code = answer.get("StatusCode", STATUS_OK)
    try:
        code = int(code)
    except (TypeError, ValueError):
        raise InvalidInput(f"{method}: StatusCode {code!r} is not an integer") from None
    if code == STATUS_OK:
        return
    detail = answer.get("errorDialog") or answer.get("Error") or ""
    message = f"{method}: StatusCode {code}: {detail}"
    if code == STATUS_MISSING_KEY:
        raise MissingKey(message)
    if code == STATUS_INVALID:
        raise InvalidInput(message)
    if code in STATUS_NOT_ALLOWED:
        raise Conflict(message)
    raise EventServiceError(message)


class PandaClient:
    """Talks to one dispatcher over the PanDA paths; thread-safe (one shared httpx pool)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        #: When set and true, retrying stops at once (a pilot past its drain grace).
        self.give_up_retrying: Callable[[], bool] | None = None
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"Accept": "application/json"},
            verify=tls_context(self.base_url),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PandaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------

    def _request(self, method: str, path: str, data: Mapping[str, Any] | None) -> httpx.Response:
        """One request with retries on network errors, 5xx and StatusCode 10 (timeout)."""
        deadline = time.monotonic() + self.retry.retry_for
        attempt = 0
        while True:
            try:
                if data is None:
                    response = self._http.get(path)
                else:
                    response = self._http.post(path, data=_form(data))
                if response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            delay = self.retry.delay(attempt)
            if time.monotonic() + delay > deadline or self._giving_up():
                raise DispatcherUnavailable(
                    f"{method} {self.base_url}{path}: {problem}; gave up after {attempt + 1} tries"
                )
            log.warning("dispatcher %s failed (%s); retry in %.1f s", method, problem, delay)
            self._wait(delay)
            attempt += 1

    def _giving_up(self) -> bool:
        return self.give_up_retrying is not None and self.give_up_retrying()

    def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds in short steps, so giving up is noticed quickly."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0 and not self._giving_up():
            self._sleep(min(left, 0.2))
            if self._sleep is not time.sleep:  # an injected sleep does not pass real time
                break

    def call(self, method: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """POST one PanDA method; return the decoded answer (StatusCode not yet checked)."""
        response = self._request(method, f"/server/panda/{method}", data)
        if response.status_code >= 400:
            raise InvalidInput(f"{method}: HTTP {response.status_code}: {response.text[:300]}")
        answer = _decode(response)
        if int(answer.get("StatusCode", 0) or 0) == STATUS_TIMEOUT:
            # The dispatcher timed out internally: the same as a 5xx, try again once.
            response = self._request(method, f"/server/panda/{method}", data)
            answer = _decode(response)
        return answer

    # -- PanDA methods -------------------------------------------------------------

    def get_status(self) -> dict[str, Any]:
        """``getStatus``: the dispatcher's health."""
        answer = self.call("getStatus", {})
        _raise_for_status_code("getStatus", answer)
        return answer

    def get_job(self, site_name: str, **fields: Any) -> dict[str, Any] | None:
        """``getJob``: a job's fields, or ``None`` when the dispatcher has no job."""
        answer = self.call("getJob", {"siteName": site_name, **fields})
        if int(answer.get("StatusCode", 0)) == STATUS_NO_JOBS:
            return None
        _raise_for_status_code("getJob", answer)
        return answer

    def update_job(self, panda_id: int | str, state: str, **fields: Any) -> str | None:
        """``updateJob`` (also the heartbeat); return the command, ``None`` for none."""
        answer = self.call("updateJob", {"jobId": panda_id, "state": state, **fields})
        _raise_for_status_code("updateJob", answer)
        command = answer.get("command")
        return None if command in (None, "NULL", "") else str(command)

    def get_event_ranges(
        self, panda_id: int | str, jobset_id: int | str, task_id: int | str, n_ranges: int
    ) -> list[dict[str, Any]]:
        """``getEventRanges``: up to ``n_ranges`` ranges; empty when there are no more."""
        answer = self.call(
            "getEventRanges",
            {"pandaID": panda_id, "jobsetID": jobset_id, "taskID": task_id, "nRanges": n_ranges},
        )
        _raise_for_status_code("getEventRanges", answer)
        ranges = answer.get("eventRanges") or []
        if isinstance(ranges, str):
            ranges = json.loads(ranges)
        if not isinstance(ranges, list):
            raise InvalidInput("getEventRanges: eventRanges is not a list")
        return ranges

    def update_event_ranges(
        self, reports: Sequence[Mapping[str, Any]], version: int = 0
    ) -> RangeUpdateResult:
        """``updateEventRanges`` with a version 0 or 1 list (DESIGN §5)."""
        if version not in (0, 1):
            raise InvalidInput(f"updateEventRanges version must be 0 or 1, got {version}")
        answer = self.call(
            "updateEventRanges", {"eventRanges": json.dumps(list(reports)), "version": version}
        )
        _raise_for_status_code("updateEventRanges", answer)
        command = answer.get("Command") or {}
        return RangeUpdateResult(
            returns=list(answer.get("Returns") or []),
            errors=list(answer.get("Errors") or []),
            commands={str(k): v for k, v in command.items()} if isinstance(command, dict) else {},
        )

    def check_events_availability(
        self, panda_id: int | str, jobset_id: int | str, task_id: int | str
    ) -> int:
        """``checkEventsAvailability``: how many ranges are still ready for this jobset."""
        answer = self.call(
            "checkEventsAvailability",
            {"pandaID": panda_id, "jobsetID": jobset_id, "taskID": task_id},
        )
        _raise_for_status_code("checkEventsAvailability", answer)
        return int(answer.get("nEventRanges", 0))

    # -- our JSON API (the one exception the lead agreed to) ------------------------

    def get_queue(self, name: str) -> dict[str, Any]:
        """``GET /api/v1/queues/{name}``: the queue definition."""
        response = self._request("getQueue", f"/api/v1/queues/{name}", None)
        if response.status_code == 404:
            raise NotFound(f"queue {name!r} is not defined at {self.base_url}")
        if response.status_code >= 400:
            raise InvalidInput(
                f"queue {name!r}: HTTP {response.status_code}: {response.text[:300]}"
            )
        value = response.json()
        if not isinstance(value, dict):
            raise InvalidInput(f"queue {name!r}: answer is not an object")
        return value
