"""Dispatcher commands: ``server``, ``db upgrade``, ``queue ...``, ``task ...``, ``job ...``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from eventservice.cli.output import console, err_console
from eventservice.errors import EventServiceError

DEFAULT_SERVER = "http://127.0.0.1:8080"

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
queue_app = typer.Typer(help="Queues: where pilots run.", no_args_is_help=True)
task_app = typer.Typer(help="Tasks: what to process.", no_args_is_help=True)
job_app = typer.Typer(help="Jobs: commands for running jobs.", no_args_is_help=True)

ServerOption = typer.Option(
    DEFAULT_SERVER, "--server", envvar="EVENTSERVICE_SERVER", help="Dispatcher base URL."
)


def fail(message: str) -> typer.Exit:
    err_console().print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def request(server: str, method: str, path: str, **kwargs: Any) -> Any:
    """Call /api/v1 and return the JSON answer; exit with the server's message on errors."""
    import httpx

    try:
        response = httpx.request(
            method, server.rstrip("/") + "/api/v1" + path, timeout=60, **kwargs
        )
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the dispatcher at {server}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise fail(f"{response.status_code}: {detail}")
    return response.json()


def server(
    db: str = typer.Option(
        "eventservice.sqlite",
        "--db",
        envvar="EVENTSERVICE_DB",
        help="sqlite:///PATH, a plain path, or postgresql://USER:PASS@HOST/DB",
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port"),
    lease_seconds: float = typer.Option(
        300.0, "--lease-seconds", help="Silent consumers lose their ranges after this."
    ),
    workers: int = typer.Option(1, "--workers", help="Processes (PostgreSQL only)."),
    log_level: str = typer.Option("warning", "--log-level"),
) -> None:
    """Run the dispatcher (schema is created or migrated on start)."""
    import os

    import uvicorn

    from eventservice.dispatcher import Dispatcher, DispatcherSettings
    from eventservice.server.app import create_app
    from eventservice.store import Database

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        database = Database(db)
        database.upgrade()
    except EventServiceError as exc:
        raise fail(str(exc)) from None
    if workers > 1:
        if database.is_sqlite:
            raise fail("--workers > 1 needs PostgreSQL; SQLite has one writer")
        from eventservice.server.workers import Workers

        env = {
            **os.environ,
            "EVENTSERVICE_DB": db,
            "EVENTSERVICE_LEASE_SECONDS": str(lease_seconds),
        }
        try:
            status = Workers(workers, host, port, log_level, env).run()
        except EventServiceError as exc:
            raise fail(str(exc)) from None
        raise typer.Exit(status)
    dispatcher = Dispatcher(database, DispatcherSettings(lease_seconds=lease_seconds))
    uvicorn.run(create_app(dispatcher), host=host, port=port, log_level=log_level)


@db_app.command("upgrade")
def db_upgrade(db: str = typer.Option(..., "--db", envvar="EVENTSERVICE_DB")) -> None:
    """Create or migrate the dispatcher's schema."""
    from eventservice.store import Database

    try:
        Database(db).upgrade()
    except EventServiceError as exc:
        raise fail(str(exc)) from None
    console().print("schema is up to date")


@queue_app.command("add")
def queue_add(
    name: str,
    corecount: int = typer.Option(1, "--corecount"),
    jobseed: str = typer.Option("all", "--jobseed", help="es, std, all or eshigh"),
    pledgedcpu: int = typer.Option(0, "--pledgedcpu", help="-1 = opportunistic (no merges)"),
    zip_time_gap: int | None = typer.Option(None, "--zip-time-gap"),
    not_es_to_zip: bool = typer.Option(False, "--not-es-to-zip"),
    maxtime: int = typer.Option(0, "--maxtime"),
    heartbeat: int = typer.Option(60, "--heartbeat"),
    storage: list[str] = typer.Option([], "--storage", help="ACTIVITY=URL, repeatable, in order"),
    replace: bool = typer.Option(False, "--replace"),
    server_url: str = ServerOption,
) -> None:
    """Define a queue."""
    storages: dict[str, list[str]] = {}
    for item in storage:
        activity, sep, url = item.partition("=")
        if not sep or not url:
            raise fail(f"--storage {item!r}: expected ACTIVITY=URL")
        storages.setdefault(activity, []).append(url)
    body = {
        "name": name,
        "corecount": corecount,
        "jobseed": jobseed,
        "pledgedcpu": pledgedcpu,
        "zip_time_gap": zip_time_gap,
        "not_es_to_zip": not_es_to_zip,
        "maxtime": maxtime,
        "heartbeat": heartbeat,
        "storages": storages,
    }
    result = request(
        server_url, "POST", "/queues", json=body, params={"replace": str(replace).lower()}
    )
    console().print_json(json.dumps(result))


@queue_app.command("show")
def queue_show(name: str, server_url: str = ServerOption) -> None:
    """Print a queue's definition."""
    console().print_json(json.dumps(request(server_url, "GET", f"/queues/{name}")))


@queue_app.command("list")
def queue_list(server_url: str = ServerOption) -> None:
    """List queues."""
    from rich.table import Table

    table = Table("name", "corecount", "jobseed", "pledgedcpu", "storages")
    for q in request(server_url, "GET", "/queues"):
        table.add_row(
            q["name"],
            str(q["corecount"]),
            q["jobseed"],
            str(q["pledgedcpu"]),
            ", ".join(f"{a}={'|'.join(u)}" for a, u in q["storages"].items()),
        )
    console().print(table)


@task_app.command("submit")
def task_submit(
    inputs: list[str] = typer.Option([], "--input", help="Input path or URL, repeatable."),
    n_events: int | None = typer.Option(
        None, "--nevents", help="Events per input, when not readable from it."
    ),
    name: str = typer.Option("task", "--name"),
    transformation: str | None = typer.Option(None, "--transformation", help="ES payload command."),
    normal_transformation: str | None = typer.Option(None, "--normal-transformation"),
    merge_transformation: str | None = typer.Option(None, "--merge-transformation"),
    output_name: str | None = typer.Option(None, "--output-name"),
    param: list[str] = typer.Option([], "--param", help="Task parameter KEY=VALUE, repeatable."),
    spec_file: Path | None = typer.Option(None, "--json", help="Whole task as a JSON file."),
    server_url: str = ServerOption,
) -> None:
    """Submit a task; prints its taskID."""
    body: dict[str, Any] = {}
    if spec_file is not None:
        try:
            body = json.loads(spec_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise fail(f"cannot read {spec_file}: {exc}") from None
    if inputs:
        body["inputs"] = [
            {"url": url, **({"nEvents": n_events} if n_events else {})} for url in inputs
        ]
    for key, value in (
        ("name", name),
        ("transformation", transformation),
        ("normalTransformation", normal_transformation),
        ("mergeTransformation", merge_transformation),
        ("outputName", output_name),
    ):
        if value is not None and (key != "name" or "name" not in body):
            body[key] = value
    params = dict(body.get("params") or {})
    for item in param:
        key, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--param {item!r}: expected KEY=VALUE")
        params[key] = value
    if params:
        body["params"] = params
    result = request(server_url, "POST", "/tasks", json=body)
    console().print(result["taskID"])


@task_app.command("status")
def task_status(
    task_id: int, as_json: bool = typer.Option(False, "--json"), server_url: str = ServerOption
) -> None:
    """Per-state counts of a task's ranges, jobs and jobsets."""
    summary = request(server_url, "GET", f"/tasks/{task_id}")
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    console().print(
        f"task {summary['taskID']} [bold]{summary['name']}[/bold]: "
        f"{summary['state']}, {summary['nEvents']} events"
    )
    from rich.table import Table

    for what in ("ranges", "jobs", "jobsets"):
        table = Table(title=what, show_header=True)
        counts = summary[what]
        for state in counts:
            table.add_column(state)
        table.add_row(*(str(v) for v in counts.values()))
        console().print(table)


@task_app.command("list")
def task_list(server_url: str = ServerOption) -> None:
    """List tasks."""
    from rich.table import Table

    table = Table("taskID", "name", "state", "events")
    for t in request(server_url, "GET", "/tasks"):
        table.add_row(str(t["taskID"]), t["name"], t["state"], str(t["nEvents"]))
    console().print(table)


@job_app.command("kill")
def job_kill(
    panda_id: int,
    soft: bool = typer.Option(False, "--soft", help="Drain instead."),
    server_url: str = ServerOption,
) -> None:
    """Tell a job's pilot to stop (or drain with --soft) at its next contact."""
    command = "softkill" if soft else "tobekilled"
    request(server_url, "POST", f"/jobs/{panda_id}/command", json={"command": command})
    console().print(f"job {panda_id}: {command}")


def register(app: typer.Typer) -> None:
    """Add the dispatcher commands to the main app."""
    app.command("server")(server)
    app.add_typer(db_app, name="db")
    app.add_typer(queue_app, name="queue")
    app.add_typer(task_app, name="task")
    app.add_typer(job_app, name="job")
