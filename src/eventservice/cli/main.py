"""The ``eventservice`` command: one Typer app, each area adds its commands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="eventservice",
    help="Event Service: dispatcher, pilots, payloads, storage and merge.",
    no_args_is_help=True,
    add_completion=False,
)


def _register() -> None:
    # Each module adds its own commands; imported here so `eventservice --help` lists all.
    from eventservice.cli import (
        demo_commands,
        dispatcher_commands,
        payload_commands,
        pilot_commands,
    )

    dispatcher_commands.register(app)
    payload_commands.register(app)
    pilot_commands.register(app)
    demo_commands.register(app)


def main() -> None:
    """Console-script entry point."""
    _register()
    app()


if __name__ == "__main__":
    main()
