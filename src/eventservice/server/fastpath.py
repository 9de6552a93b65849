"""The PanDA paths answered as plain ASGI, in front of the FastAPI application.

Pilots call getEventRanges and updateEventRanges many times per second each. Through
FastAPI every call passed its middleware stack, the router, the endpoint machinery and
Starlette's thread pool helper: about a third of the dispatcher's CPU. This application
answers ``POST|GET /server/panda/<method>`` itself, with the same parsing, the same
methods and the same answers as the FastAPI routes in :mod:`eventservice.server.panda`
(which still describe the paths in /docs), and hands everything else to FastAPI.

Every answer says how long the dispatcher took over it in a ``Server-Timing`` header
(``dispatch;dur=<ms>``): from the request's headers to its answer, the wait for a thread
included. A pilot's own timing adds the network and its own waits; the dispatcher
benchmark reports both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventservice.errors import EventServiceError, InvalidInput
from eventservice.server.panda import (
    MAX_BODY_BYTES,
    Method,
    encode_answer,
    error_answer,
    parse_fields,
)
from eventservice.server.scheduling import InlineWorkFirst, WorkFirstExecutor

PREFIX = "/server/panda/"
#: Requests for work: a pilot waits for their answer with idle cores (see scheduling).
WORK_REQUESTS = frozenset({"getJob", "getEventRanges"})


class PandaFastPath:
    """ASGI application: PanDA methods answered here, everything else on to ``app``.

    ``executor`` runs the (blocking) methods, requests for work first; ``None`` runs them
    on the event loop itself, in the same order, which suits SQLite, where one
    transaction runs at a time anyway.
    """

    def __init__(
        self, app: ASGIApp, methods: dict[str, Method], executor: WorkFirstExecutor | None
    ) -> None:
        self.app = app
        self.methods = methods
        self.executor = executor
        self.inline = InlineWorkFirst()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "GET")
            or not scope["path"].startswith(PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        method_name = scope["path"][len(PREFIX) :]
        method = self.methods.get(method_name)
        if method is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        content_type, accept = "", ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
        status = 200
        data: dict[str, Any]
        try:
            body = await _read_body(receive)
            if body is None:
                return  # the client went away
            fields = parse_fields(body, content_type, scope["query_string"].decode("latin-1"))
            if self.executor is None:
                data = await self.inline.call(method_name in WORK_REQUESTS, method, fields)
            else:
                submit = (
                    self.executor.submit_urgent
                    if method_name in WORK_REQUESTS
                    else self.executor.submit
                )
                data = await asyncio.wrap_future(submit(method, fields))
        except EventServiceError as error:
            status, data = error_answer(error)
        payload, media_type = encode_answer(data, accept)
        took_ms = (time.perf_counter() - started) * 1000.0
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", str(len(payload)).encode()),
                    (b"content-type", media_type.encode()),
                    (b"server-timing", f"dispatch;dur={took_ms:.2f}".encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Callable[[], Awaitable[Message]]) -> bytes | None:
    """The request body; ``None`` if the client disconnected first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidInput(f"request body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
