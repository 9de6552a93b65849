"""``eventservice demo``."""

from __future__ import annotations

from pathlib import Path

import typer

from eventservice.cli.output import console


def demo(
    events: int = typer.Option(2000, "--events", min=1, help="Events in the generated input."),
    pilots: int = typer.Option(4, "--pilots", min=1, help="Pilots alive at a time."),
    cores: int = typer.Option(2, "--cores", min=1, help="Payload workers per pilot."),
    preempt_every: float | None = typer.Option(
        None, "--preempt-every", min=0.1, help="SIGKILL a random pilot at this mean interval (s)."
    ),
    db: str | None = typer.Option(None, "--db", help="Dispatcher database (default: SQLite)."),
    storage: str | None = typer.Option(None, "--storage", help="Object store URL for outputs."),
    keep: Path | None = typer.Option(None, "--keep", help="Work in DIR and keep it."),
    cpu_per_event: float = typer.Option(
        0.01,
        "--cpu-per-event",
        min=0.0,
        help="CPU seconds the payload spends on an event; about 5 % of events cost 10 times it.",
    ),
    events_per_range: int = typer.Option(
        10, "--events-per-range", min=1, help="nEventsPerWorker: events in one event range."
    ),
    files: int = typer.Option(1, "--files", min=1, help="Input files (one jobset each)."),
    consumers: int | None = typer.Option(
        None, "--consumers", min=1, help="nEsConsumers of the task (default: --pilots)."
    ),
    zip_every: int | None = typer.Option(
        None,
        "--zip-every",
        min=1,
        help="Bundle outputs every N seconds (default: ship each output at once).",
    ),
    mode: str = typer.Option("es", "--mode", help="es (event service) or file (normal jobs)."),
    pilot_lifetime: float | None = typer.Option(
        None, "--pilot-lifetime", min=0.1, help="SIGKILL each pilot after Exp(mean) seconds."
    ),
    crash_dispatcher_at: float | None = typer.Option(
        None, "--crash-dispatcher-at", min=0.0, help="SIGKILL and restart the dispatcher then."
    ),
    storage_outage: str | None = typer.Option(
        None, "--storage-outage", help="START:DURATION seconds the es_events store is down."
    ),
    timeout: float = typer.Option(900.0, "--timeout", min=1.0, help="Give up after (s)."),
    no_live: bool = typer.Option(
        False, "--no-live", help="No live view (for logs and CI); reads the task once a second."
    ),
) -> None:
    """Run dispatcher, pilots, payload, storage and merge on this machine, then verify."""
    from eventservice.demo import DemoConfig, run_demo

    outage = None
    if storage_outage is not None:
        try:
            start, duration = (float(x) for x in storage_outage.split(":"))
        except ValueError:
            console().print(
                f"[red]error:[/red] --storage-outage {storage_outage!r}: "
                "expected START:DURATION in seconds"
            )
            raise typer.Exit(2) from None
        outage = (start, duration)
    if mode not in ("es", "file"):
        console().print(f"[red]error:[/red] --mode must be es or file, not {mode!r}")
        raise typer.Exit(2)
    if files > events:
        console().print("[red]error:[/red] --files must not exceed --events")
        raise typer.Exit(2)
    config = DemoConfig(
        events=events,
        pilots=pilots,
        cores=cores,
        preempt_every=preempt_every,
        db=db,
        storage=storage,
        keep=keep.resolve() if keep else None,
        cpu_per_event=cpu_per_event,
        events_per_range=events_per_range,
        live=not no_live,
        files=files,
        consumers=consumers,
        zip_time_gap=zip_every,
        mode=mode,
        pilot_lifetime_mean=pilot_lifetime,
        crash_dispatcher_at=crash_dispatcher_at,
        storage_outage=outage,
        timeout=timeout,
    )
    result = run_demo(config)
    if config.live:
        console().print()  # the live view may leave its last line unterminated
    task = result.task
    if task:
        useful = task.get("cpuSecondsInOutput", 0.0)
        console().print(
            f"[bold]events[/bold] {task['nEvents']}  [bold]ranges[/bold] "
            f"{sum(task['ranges'].values())}  [bold]attempts[/bold] {task.get('attempts')}  "
            f"[bold]re-dispatched[/bold] {task.get('rangesRedispatched')}  "
            f"[bold]pilots[/bold] {result.pilots_started} started, {result.pilots_killed} killed"
        )
        share = f" ({useful / result.cpu_spent:.0%})" if result.cpu_spent else ""
        console().print(
            f"[bold]CPU spent[/bold] {result.cpu_spent:.1f} s (pilots and payloads)  "
            f"[bold]CPU in output[/bold] {useful:.1f} s{share}  "
            f"[bold]wall[/bold] {result.wall_seconds:.1f} s"
        )
        if result.steal_seconds:
            console().print(
                f"[bold]CPU steal[/bold] {result.steal_seconds:.1f} core-s: time this "
                f"virtual machine's host gave its cores to others while the task ran"
            )
    for note in result.notes:
        console().print(f"[dim]{note}[/dim]")
    if result.verify_summary:
        console().print(f"[bold]verification[/bold]: {result.verify_summary}")
    if result.sequential_cpu:
        console().print(
            f"[bold]a plain sequential run[/bold] of the same events (the verification's) "
            f"took {result.sequential_cpu:.1f} CPU s"
        )
    if result.workdir is not None:
        console().print(f"work directory kept: {result.workdir}")
    if result.error:
        console().print(f"[red]error:[/red] {result.error}")
    raise typer.Exit(0 if result.ok else 1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
