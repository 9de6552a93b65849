"""Alembic environment: runs migrations on the connection handed in by ``migrate.py``."""

from __future__ import annotations

from alembic import context

from eventservice.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def run() -> None:
    if connection is None:
        raise RuntimeError("eventservice migrations run through eventservice.store.migrate")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


run()
