"""``eventservice pilot``: run a pilot against a dispatcher, or one job offline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from eventservice.pilot.executors.base import PilotOptions
    from eventservice.pilot.forkserver import PayloadStarter


def register(app: typer.Typer) -> None:
    """Add the ``pilot`` command to ``app``."""
    app.command("pilot")(pilot)


def pilot(
    server: str | None = typer.Option(None, "--server", help="Dispatcher base URL."),
    queue: str | None = typer.Option(None, "--queue", help="Queue to pull jobs for."),
    cores: int | None = typer.Option(
        None, "--cores", min=1, help="Payload workers (default: job coreCount, else queue)."
    ),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Where jobs run and pending reports are kept."
    ),
    jobs: int | None = typer.Option(None, "--jobs", min=1, help="Stop after this many jobs."),
    lifetime: float | None = typer.Option(
        None, "--lifetime", min=0, help="Seconds; then drain and take no further job."
    ),
    wait_for_jobs: float = typer.Option(
        0.0,
        "--wait-for-jobs",
        min=0,
        help="Seconds to keep asking for a job when none is free before stopping.",
    ),
    grace: float = typer.Option(
        60.0, "--grace", min=0, help="Seconds in-flight ranges get after a signal or softkill."
    ),
    softkill_margin: float = typer.Option(
        600.0, "--softkill-margin", min=0, help="Soft-kill this long before the queue's maxtime."
    ),
    retry_for: float = typer.Option(
        300.0, "--retry-for", min=0, help="Seconds to keep retrying an unreachable dispatcher."
    ),
    storage_failures: int = typer.Option(
        3, "--storage-failures", min=1, help="Failed shipments before giving up on storage."
    ),
    storage_retry_delay: float = typer.Option(
        5.0, "--storage-retry-delay", min=0, help="Seconds between shipment retries."
    ),
    keep_payload: bool = typer.Option(
        True,
        "--keep-payload/--new-payload-per-job",
        help="Keep an idle ES payload for the next ES job with the same command.",
    ),
    fork_payloads: bool = typer.Option(
        True,
        "--fork-payloads/--start-payloads-afresh",
        help="Fork this installation's payload and merge commands from an interpreter that "
        "has imported them once, instead of starting each from scratch.",
    ),
    job_file: Path | None = typer.Option(
        None, "--job-file", help="Offline mode: run this job (getJob fields as JSON)."
    ),
    ranges_file: Path | None = typer.Option(
        None, "--ranges-file", help="Offline mode: event ranges (JSON list)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Pull jobs from a queue and run them until there are none (or a limit is reached).

    With --job-file, run one job offline with ranges from --ranges-file: no dispatcher.
    """
    from eventservice.client.panda import PandaClient, RetryPolicy
    from eventservice.errors import EventServiceError
    from eventservice.pilot.executors.base import PilotOptions
    from eventservice.pilot.forkserver import PayloadStarter
    from eventservice.pilot.logs import setup_logging
    from eventservice.pilot.main import Pilot, default_workdir

    options = PilotOptions(
        cores=cores,
        grace=grace,
        softkill_margin=softkill_margin,
        storage_max_failures=storage_failures,
        storage_retry_delay=storage_retry_delay,
        keep_payload=keep_payload,
        fork_payloads=fork_payloads,
    )
    workdir = workdir or default_workdir()
    if job_file is not None and (server or queue):
        raise typer.BadParameter("--job-file runs offline: leave out --server and --queue")
    if job_file is None and (not server or not queue):
        raise typer.BadParameter("give --server and --queue (or --job-file for offline mode)")
    # Before anything else starts: the standby fork server shares the imports so far,
    # and nothing the pilot opens or starts from here on.
    starter = PayloadStarter(fork_payloads)
    starter.fork_standby()
    setup_logging(verbose)
    if job_file is not None:
        raise typer.Exit(_offline(job_file, ranges_file, workdir, options, starter))
    assert server is not None and queue is not None
    try:
        with PandaClient(server, retry=RetryPolicy(retry_for=retry_for)) as client:
            summary = Pilot(
                client,
                queue,
                workdir,
                options=options,
                max_jobs=jobs,
                lifetime=lifetime,
                wait_for_jobs=wait_for_jobs,
                starter=starter,
            ).run()
    except EventServiceError as exc:
        typer.echo(f"pilot: {exc}", err=True)
        raise typer.Exit(2) from None
    for panda_id, state in summary.jobs:
        typer.echo(f"job {panda_id}: {state}")
    typer.echo(f"pilot stopped: {summary.stopped_because}")
    if summary.pending_reports:
        typer.echo(f"{summary.pending_reports} report(s) pending in {workdir}", err=True)
        raise typer.Exit(1)
    if summary.stopped_because.startswith("dispatcher unavailable"):
        raise typer.Exit(1)


def _offline(
    job_file: Path,
    ranges_file: Path | None,
    workdir: Path,
    options: PilotOptions,
    starter: PayloadStarter,
) -> int:
    from eventservice.errors import EventServiceError
    from eventservice.pilot.main import Pilot
    from eventservice.pilot.offline import OFFLINE_QUEUE, REPORT_FILE, OfflineClient

    try:
        client = OfflineClient.from_files(job_file, ranges_file, workdir)
        pilot = Pilot(
            client,
            OFFLINE_QUEUE,
            workdir,
            options=options,
            max_jobs=1,
            starter=starter,
        )
        pilot.run()
    except EventServiceError as exc:
        typer.echo(f"pilot: {exc}", err=True)
        return 2
    counts = ", ".join(f"{n} {status}" for status, n in sorted(client.counts().items()))
    typer.echo(f"job {client.final_state() or 'not run'}; ranges: {counts or 'none'}")
    typer.echo(f"report: {workdir / REPORT_FILE}")
    return 0 if client.final_state() == "finished" else 1
