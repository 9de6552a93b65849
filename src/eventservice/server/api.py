"""Our own JSON API under ``/api/v1`` (tasks, queues, jobs, events, history, stats)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel

from eventservice.dispatcher import Dispatcher
from eventservice.domain.states import Command
from eventservice.errors import InvalidInput, MissingKey


class CommandRequest(BaseModel):
    """A command for a running job."""

    command: str


def build_router(dispatcher: Dispatcher) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["api"])

    @router.get("/tasks", summary="List tasks")
    def list_tasks() -> list[dict[str, Any]]:
        return dispatcher.tasks()

    @router.post("/tasks", status_code=201, summary="Submit a task")
    def submit_task(task: dict[str, Any] = Body(...)) -> dict[str, Any]:
        task_id = dispatcher.submit_task(task)
        return dispatcher.task(task_id)

    @router.get("/tasks/{task_id}", summary="A task with per-state counts")
    def get_task(task_id: int) -> dict[str, Any]:
        return dispatcher.task(task_id)

    @router.get("/queues", summary="List queues")
    def list_queues() -> list[dict[str, Any]]:
        return dispatcher.queues()

    @router.post("/queues", status_code=201, summary="Define a queue")
    def add_queue(
        queue: dict[str, Any] = Body(...), replace: bool = Query(False)
    ) -> dict[str, Any]:
        params = dict(queue)
        name = params.pop("name", None)
        if name is None:
            raise MissingKey("a queue needs a 'name'")
        if not isinstance(name, str):
            raise InvalidInput("queue name must be a string")
        params.pop("objectStores", None)
        params.pop("effective_zip_time_gap", None)
        return dispatcher.add_queue(name, params, replace=replace)

    @router.get("/queues/{name}", summary="A queue's definition, as pilots read it")
    def get_queue(name: str) -> dict[str, Any]:
        return dispatcher.queue(name)

    @router.get("/jobs", summary="List jobs")
    def list_jobs(
        task_id: int | None = None, state: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return dispatcher.jobs(task_id=task_id, state=state, limit=limit)

    @router.get("/jobs/{panda_id}", summary="A job")
    def get_job(panda_id: int) -> dict[str, Any]:
        return dispatcher.job(panda_id)

    @router.post("/jobs/{panda_id}/command", summary="Kill or soft-kill a job")
    def command_job(panda_id: int, request: CommandRequest) -> dict[str, Any]:
        if request.command not in (Command.KILL.value, Command.SOFTKILL.value):
            raise InvalidInput("command must be 'tobekilled' or 'softkill'")
        return dispatcher.set_command(panda_id, Command(request.command))

    @router.get("/events", summary="List event ranges")
    def list_events(
        task_id: int | None = None,
        jobset_id: int | None = None,
        state: str | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        return dispatcher.event_ranges(
            task_id=task_id, jobset_id=jobset_id, state=state, limit=limit, offset=offset
        )

    @router.get("/history", summary="State changes, oldest first")
    def list_history(
        entity: str | None = None, entity_id: int | None = None, after: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return dispatcher.history(entity=entity, entity_id=entity_id, after=after, limit=limit)

    @router.get("/stats", summary="Per-state counts of tasks, jobs and ranges")
    def stats() -> dict[str, Any]:
        return dispatcher.stats()

    return router
