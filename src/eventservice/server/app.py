"""The ASGI application: PanDA paths, /api/v1, error mapping, the lease reaper and the
jobset concluder."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from eventservice import __version__
from eventservice.dispatcher import Dispatcher, DispatcherSettings
from eventservice.errors import EventServiceError
from eventservice.server import api, panda
from eventservice.server.errors import api_status
from eventservice.server.fastpath import PandaFastPath
from eventservice.server.scheduling import WorkFirstExecutor
from eventservice.store import Database

log = logging.getLogger(__name__)
#: Threads running PanDA requests on PostgreSQL, per process: enough to keep the database
#: busy while others wait on the network, few enough that each request is answered
#: quickly and a request for work does not queue behind many others (see scheduling).
PANDA_THREADS = 3
#: Seconds a stopping dispatcher gives its concluder to conclude the jobsets it was
#: given; past that the consumers' end or the reaper concludes them (see concluder).
CONCLUDER_STOP_SECONDS = 10.0


def create_app(dispatcher: Dispatcher, reaper: bool = True) -> PandaFastPath:
    """Build the dispatcher's web application; ``reaper`` runs lease expiry in background.

    The PanDA paths are answered by :class:`PandaFastPath`; everything else (``/api/v1``,
    the OpenAPI description, lifespan) goes on to the FastAPI application it wraps.
    """

    # SQLite runs one transaction at a time: the PanDA methods run on the event loop.
    executor = (
        None if dispatcher.database.is_sqlite else WorkFirstExecutor(PANDA_THREADS, name="panda")
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if executor is not None:
            # One connection for each thread: the reaper and the concluder have theirs.
            dispatcher.database.warm_up(PANDA_THREADS + 2)
        # Everything imported and built so far lives as long as the process: out of the
        # collector's sight, a full collection no longer walks it (tens of ms each, a
        # pause for every request in flight).
        gc.collect()
        gc.freeze()
        thread = dispatcher.start_reaper() if reaper else None
        # Off the request path where requests run in threads of their own (PostgreSQL);
        # SQLite runs one transaction at a time, so a report concludes as before.
        if executor is not None:
            dispatcher.start_concluder()
        try:
            yield
        finally:
            if thread is not None:
                thread.stop()
            if executor is not None:
                executor.shutdown(wait=False)
                dispatcher.stop_concluder(CONCLUDER_STOP_SECONDS)

    app = FastAPI(title="Event Service dispatcher", version=__version__, lifespan=lifespan)
    app.state.dispatcher = dispatcher
    app.include_router(panda.build_router(dispatcher))
    app.include_router(api.build_router(dispatcher))

    @app.exception_handler(EventServiceError)
    async def _domain_error(_request: Request, error: EventServiceError) -> JSONResponse:
        return JSONResponse(
            {"detail": str(error), "error": type(error).__name__}, status_code=api_status(error)
        )

    # In front of FastAPI, not inside it: its middleware stack (error pages, telemetry,
    # body limits) wraps every message of every request, and the PanDA paths handle all
    # of that themselves.
    return PandaFastPath(app, methods=panda.panda_methods(dispatcher), executor=executor)


def app_from_environment() -> PandaFastPath:
    """Factory for ``uvicorn --factory`` with several worker processes.

    Reads ``EVENTSERVICE_DB`` and ``EVENTSERVICE_LEASE_SECONDS``.
    """
    database = Database(os.environ.get("EVENTSERVICE_DB", "eventservice.sqlite"))
    settings = DispatcherSettings(
        lease_seconds=float(os.environ.get("EVENTSERVICE_LEASE_SECONDS", "300"))
    )
    return create_app(Dispatcher(database, settings))
