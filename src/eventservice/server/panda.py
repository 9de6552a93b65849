"""The PanDA dispatcher paths ``/server/panda/<method>`` (DESIGN §5)."""

from __future__ import annotations

import binascii
import json
import re
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from eventservice import __version__
from eventservice.dispatcher import Dispatcher
from eventservice.errors import EventServiceError, InvalidInput, MissingKey
from eventservice.server.errors import NO_JOBS, OK, panda_status

MAX_BODY_BYTES = 32 << 20
MAX_INFLATED_BYTES = 64 << 20
MAX_JOBS_PER_CALL = 100


def parse_fields(body: bytes, content_type: str, query: str = "") -> dict[str, Any]:
    """Form-urlencoded or JSON fields; JSON may be gzipped with no Content-Encoding."""
    if len(body) > MAX_BODY_BYTES:
        raise InvalidInput(f"request body over {MAX_BODY_BYTES} bytes")
    if body[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, MAX_INFLATED_BYTES)
        except zlib.error:
            raise InvalidInput("body looks gzip-compressed but does not inflate") from None
        if inflater.unconsumed_tail:
            raise InvalidInput(f"inflated body over {MAX_INFLATED_BYTES} bytes")
    if "json" in content_type or body.lstrip()[:1] == b"{":
        try:
            value = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInput("body is not valid JSON") from None
        if not isinstance(value, dict):
            raise InvalidInput("JSON body must be an object")
        return value
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise InvalidInput("form body is not UTF-8") from None
    fields = decode_form(text)
    if query:
        fields.update({k: v for k, v in decode_form(query).items() if k not in fields})
    return fields


def decode_form(text: str) -> dict[str, str]:
    """The fields of a urlencoded form, the last value of a repeated one winning: what
    ``parse_qs(text, keep_blank_values=True)`` gives (its last values), faster."""
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            fields[_unquote_plus(name)] = _unquote_plus(value)
    return fields


#: A ``%`` that starts no escape: the C decoder below would read it differently.
_BARE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unquote_plus(value: str) -> str:
    """``urllib.parse.unquote_plus``; well-formed ASCII decoded in C.

    A JSON value (eventRanges) is a third percent escapes, and the pure-Python decoder
    took a tenth of the dispatcher's CPU. Quoted-printable decoding is the same
    transformation once ``%`` is ``=`` and ``+`` is ``=20`` (space), as long as the text
    has no ``=`` or whitespace of its own and every ``%`` starts an escape.
    """
    if "%" not in value:
        return value.replace("+", " ")
    if (
        not value.isascii()
        or not value.isprintable()  # control characters, whitespace other than space
        or "=" in value
        or " " in value
        or _BARE_PERCENT.search(value)
    ):
        return unquote_plus(value)
    plain = binascii.a2b_qp(value.replace("%", "=").replace("+", "=20"))
    return plain.decode("utf-8", "replace")


async def read_fields(request: Request) -> dict[str, Any]:
    """The fields of a PanDA request (see :func:`parse_fields`)."""
    return parse_fields(
        await request.body(),
        request.headers.get("content-type", ""),
        request.url.query,
    )


def encode_answer(data: dict[str, Any], accept: str) -> tuple[bytes, str]:
    """``(body, media type)``: JSON when the client accepts it, else urlencoded with
    nested values as JSON."""
    if "application/json" in accept:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode(), "application/json"
    flat = {
        k: v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else json.dumps(v)
        for k, v in data.items()
    }
    return urlencode(flat).encode(), "application/x-www-form-urlencoded"


def answer(request: Request, data: dict[str, Any], http_status: int = 200) -> Response:
    """The answer to a PanDA request (see :func:`encode_answer`)."""
    body, media_type = encode_answer(data, request.headers.get("accept", ""))
    return Response(body, status_code=http_status, media_type=media_type)


def error_answer(error: EventServiceError) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, answer)`` for a refused PanDA request."""
    http_status, code = panda_status(error)
    return http_status, {"StatusCode": code, "errorDialog": str(error)}


def integer(
    fields: dict[str, Any], key: str, default: int | None = None, required: bool = False
) -> int | None:
    """An integer field sent as a string or a number."""
    value = fields.get(key)
    if value in (None, "", "None", "NULL"):
        if required:
            raise MissingKey(f"missing required field {key}")
        return default
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise InvalidInput(f"{key} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{key} must be an integer, got {value!r}") from None


def required_integer(fields: dict[str, Any], key: str) -> int:
    """An integer field that must be present (StatusCode 80 when it is not)."""
    value = integer(fields, key, required=True)
    assert value is not None
    return value


def integer_or(fields: dict[str, Any], key: str, default: int) -> int:
    """An optional integer field with a default."""
    value = integer(fields, key, default=default)
    return default if value is None else value


def text(fields: dict[str, Any], key: str) -> str:
    value = fields.get(key)
    if value in (None, ""):
        raise MissingKey(f"missing required field {key}")
    if not isinstance(value, (str, int)):
        raise InvalidInput(f"{key} must be a string")
    return str(value)


#: A PanDA method: request fields in, answer out (blocking: it runs a transaction).
Method = Callable[[dict[str, Any]], dict[str, Any]]


def panda_methods(dispatcher: Dispatcher) -> dict[str, Method]:
    """The PanDA methods by name, as served under ``/server/panda/<name>``."""

    def get_job(fields: dict[str, Any]) -> dict[str, Any]:
        queue = text(fields, "siteName")
        node = str(fields.get("node") or fields.get("computingElement") or "unknown")
        n_jobs = integer(fields, "nJobs")
        if n_jobs is None:
            job = dispatcher.get_job(queue, node)
            return {"StatusCode": OK, **job} if job else {"StatusCode": NO_JOBS}
        if not 1 <= n_jobs <= MAX_JOBS_PER_CALL:
            raise InvalidInput(f"nJobs must be between 1 and {MAX_JOBS_PER_CALL}")
        found = []
        for _ in range(n_jobs):
            job = dispatcher.get_job(queue, node)
            if job is None:
                break
            found.append(job)
        return {"StatusCode": OK, "jobs": found} if found else {"StatusCode": NO_JOBS}

    def update_job(fields: dict[str, Any]) -> dict[str, Any]:
        panda_id = required_integer(fields, "jobId")
        command = dispatcher.update_job(panda_id, text(fields, "state"), fields)
        return {"StatusCode": OK, "command": command}

    def ids(fields: dict[str, Any]) -> tuple[int, int | None, int | None]:
        return (
            required_integer(fields, "pandaID"),
            integer(fields, "jobsetID"),
            integer(fields, "taskID"),
        )

    def get_event_ranges(fields: dict[str, Any]) -> dict[str, Any]:
        n_ranges = integer_or(fields, "nRanges", 10)
        ranges = dispatcher.get_event_ranges(*ids(fields), n_ranges)
        return {"StatusCode": OK, "eventRanges": ranges}

    def update_event_ranges(fields: dict[str, Any]) -> dict[str, Any]:
        raw = fields.get("eventRanges")
        if raw is None:
            raise MissingKey("missing required field eventRanges")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raise InvalidInput("eventRanges is not valid JSON") from None
        result = dispatcher.update_event_ranges(raw, integer_or(fields, "version", 0))
        return {"StatusCode": OK, **result}

    def update_event_range(fields: dict[str, Any]) -> dict[str, Any]:
        entry = {k: v for k, v in fields.items() if k not in ("version",)}
        for key in ("eventRangeID", "eventStatus"):
            text(fields, key)
        result = dispatcher.update_event_ranges([entry], 0)
        return {"StatusCode": OK, **result}

    def check_events(fields: dict[str, Any]) -> dict[str, Any]:
        return {"StatusCode": OK, "nEventRanges": dispatcher.events_available(*ids(fields))}

    def get_status(fields: dict[str, Any]) -> dict[str, Any]:
        dispatcher.stats()  # proves the database answers
        return {
            "StatusCode": OK,
            "status": "ok",
            "version": __version__,
            "database": "sqlite" if dispatcher.database.is_sqlite else "postgresql",
        }

    return {
        "getJob": get_job,
        "updateJob": update_job,
        "getEventRanges": get_event_ranges,
        "updateEventRanges": update_event_ranges,
        "updateEventRange": update_event_range,
        "checkEventsAvailability": check_events,
        "getStatus": get_status,
    }


def build_router(dispatcher: Dispatcher) -> APIRouter:
    """The PanDA paths as FastAPI routes (also what /docs describes).

    :class:`eventservice.server.fastpath.PandaFastPath` answers these paths before
    FastAPI's routing; the routes serve whatever it leaves to them.
    """
    router = APIRouter(prefix="/server/panda", tags=["PanDA dispatcher"])

    async def call(request: Request, method: Method) -> Response:
        from starlette.concurrency import run_in_threadpool

        try:
            fields = await read_fields(request)
            return answer(request, await run_in_threadpool(method, fields))
        except EventServiceError as error:
            http_status, data = error_answer(error)
            return answer(request, data, http_status)

    methods = panda_methods(dispatcher)
    for name, method in methods.items():
        router.add_api_route(
            f"/{name}",
            _endpoint(call, method),
            methods=["POST", "GET"],
            name=name,
            summary=f"PanDA {name}",
        )
    return router


def _endpoint(call: Any, method: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        return await call(request, method)

    return endpoint
