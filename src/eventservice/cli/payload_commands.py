"""CLI for the reference payload: ``make-input``, ``payload ...`` and ``verify``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from eventservice.errors import EventServiceError

payload_app = typer.Typer(
    help="The reference payload, the per-range wrapper and the merge.",
    no_args_is_help=True,
)


@contextmanager
def _errors() -> Iterator[None]:
    """Turn expected failures into one readable line and exit status 1."""
    try:
        yield
    except (EventServiceError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _exit_for_workers(codes: list[int]) -> None:
    failed = [f"worker {i} exited {code}" for i, code in enumerate(codes) if code != 0]
    if failed:
        typer.echo(f"error: {'; '.join(failed)}", err=True)
        raise typer.Exit(1)


def _need_channel() -> None:
    from eventservice.payload.channel import ENV_CHANNEL

    if not os.environ.get(ENV_CHANNEL):
        raise EventServiceError(f"{ENV_CHANNEL} is not set: run under a pilot, or use --sequential")


def make_input(
    events: Annotated[int, typer.Option("--events", "-n", help="Number of events.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output ROOT file.")],
    seed: Annotated[int, typer.Option(help="Generator seed: same seed, same particles.")] = 0,
    guid: Annotated[str | None, typer.Option(help="GUID to store (default: a new one).")] = None,
    first_event_number: Annotated[int, typer.Option(help="eventNumber of the first event.")] = 0,
) -> None:
    """Write an EVNT-like input file and print its GUID."""
    from eventservice.payload.inputs import make_input as write

    with _errors():
        typer.echo(write(out, events, seed=seed, guid=guid, first_event_number=first_event_number))


@payload_app.command()
def simulate(
    sequential: Annotated[
        bool, typer.Option(help="Process --input in this process, without a pilot.")
    ] = False,
    input_url: Annotated[
        str | None, typer.Option("--input", help="Input path or URL (--sequential).")
    ] = None,
    out: Annotated[str | None, typer.Option(help="Output ROOT file (--sequential).")] = None,
    first_event: Annotated[int | None, typer.Option(help="First entry (--sequential).")] = None,
    last_event: Annotated[
        int | None, typer.Option(help="Last entry, inclusive (--sequential).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: ATHENA_PROC_NUMBER or 1).")
    ] = None,
    cpu_per_event: Annotated[
        float, typer.Option(help="CPU seconds per event; about 5% of events cost 10x.")
    ] = 0.002,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for the pilot's answers.")
    ] = None,
) -> None:
    """Toy detector simulation: per range over the pilot channel, or --sequential."""
    from eventservice.payload.simulate import run_sequential, simulate_worker
    from eventservice.payload.workers import run_workers, worker_count

    with _errors():
        if sequential:
            if not input_url or not out:
                raise EventServiceError("--sequential needs --input and --out")
            path, n = run_sequential(input_url, out, first_event, last_event, cpu_per_event)
            typer.echo(f"wrote {n} events to {path}")
            return
        _need_channel()
        codes = run_workers(
            worker_count(workers), simulate_worker, (cpu_per_event, os.getcwd(), timeout)
        )
    _exit_for_workers(codes)


def _parse_expect(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        first, last = (int(part) for part in text.split(":"))
    except ValueError:
        raise EventServiceError(f"--expect-events must be FIRST:LAST, got {text!r}") from None
    if last < first:
        raise EventServiceError(f"--expect-events {text}: LAST is before FIRST")
    return first, last


@payload_app.command()
def merge(
    inputs: Annotated[list[str], typer.Argument(help="Per-range outputs or tars of them.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Merged ROOT file.")],
    tree: Annotated[str, typer.Option(help="Tree to merge.")] = "hits",
    checksums: Annotated[
        str | None, typer.Option(help="JSON file {path: adler32} to check inputs against.")
    ] = None,
    expect_events: Annotated[
        str | None, typer.Option(help="FIRST:LAST event numbers that must all be present.")
    ] = None,
    range_ids: Annotated[
        str | None,
        typer.Option(
            envvar="ES_MERGE_RANGE_IDS",
            help="Comma-separated range IDs: merge only files named <ID>.<name>.",
        ),
    ] = None,
) -> None:
    """Merge per-range outputs into one file ordered by event number."""
    from eventservice.payload.merge import load_checksums, merge_outputs

    with _errors():
        result = merge_outputs(
            inputs,
            out,
            tree=tree,
            checksums=load_checksums(checksums) if checksums else None,
            expect=_parse_expect(expect_events),
            range_ids={i for i in range_ids.split(",") if i} if range_ids else None,
        )
        span = f" ({result.first_event}-{result.last_event})" if result.n_events else ""
        typer.echo(
            f"merged {result.n_events} events{span} from {result.n_files} files into {result.path}"
        )


@payload_app.command(
    "per-range", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def per_range(
    command: Annotated[list[str], typer.Argument(help="Command to run once per range.")],
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: ATHENA_PROC_NUMBER or 1).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for the pilot's answers.")
    ] = None,
) -> None:
    """Run `-- CMD ARGS...` once per range, the range given in ES_* variables."""
    from eventservice.payload.per_range import per_range_worker
    from eventservice.payload.workers import run_workers, worker_count

    with _errors():
        _need_channel()
        codes = run_workers(
            worker_count(workers), per_range_worker, (tuple(command), os.getcwd(), timeout)
        )
    _exit_for_workers(codes)


def verify(
    candidate: Annotated[str, typer.Argument(help="File to check, e.g. the merged output.")],
    reference: Annotated[str, typer.Argument(help="Reference, e.g. the sequential output.")],
    tree: Annotated[str | None, typer.Option(help="Tree to compare (default: hits).")] = None,
) -> None:
    """Compare every branch of every event; exit 1 with a summary if anything differs."""
    from eventservice.payload.verify import verify_files

    with _errors():
        report = verify_files(candidate, reference, tree)
    typer.echo(report.summary())
    if not report.identical:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``make-input``, ``payload`` and ``verify`` to the ``eventservice`` app."""
    app.command("make-input")(make_input)
    app.add_typer(payload_app, name="payload")
    app.command("verify")(verify)
