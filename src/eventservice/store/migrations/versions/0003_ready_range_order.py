"""Ranges of a jobset by state in range_id order: getEventRanges' claim reads them in order

PostgreSQL, unlike SQLite, does not keep index entries with equal keys in row-id order,
so ``WHERE jobset_id = ? AND state = 'ready' ORDER BY range_id LIMIT n`` either sorted
every ready range of the jobset or walked the primary key past every range already
handed out: the claim cost grew with the jobset (70 ms at 32,768 ranges), and that was
most of the database's CPU under load. With range_id in the index it reads n entries.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_event_ranges_jobset_state_range", "event_ranges", ["jobset_id", "state", "range_id"]
    )
    op.drop_index("ix_event_ranges_jobset_state", table_name="event_ranges")


def downgrade() -> None:
    op.create_index("ix_event_ranges_jobset_state", "event_ranges", ["jobset_id", "state"])
    op.drop_index("ix_event_ranges_jobset_state_range", table_name="event_ranges")
