"""Ranges of a jobset by state in event order: what getEventRanges' claim reads

``WHERE jobset_id = ? AND state = 'ready' ORDER BY range_id LIMIT n`` (and the check for
any ready range) had no index giving that order on PostgreSQL, which, unlike SQLite,
keeps no row-id order among equal index keys: it sorted every ready range of the
jobset, or walked the primary key or the table past every range already handed out
(72 ms at 32,768 ranges), and that was most of the database's CPU under load. The claim
now orders by start_event (the same order: a jobset's ranges are one input file's
events, created in order), which only this index provides without a sort, so the
planner takes it whatever the statistics say.

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
        "ix_event_ranges_jobset_state_start",
        "event_ranges",
        ["jobset_id", "state", "start_event"],
    )
    op.drop_index("ix_event_ranges_jobset_state", table_name="event_ranges")


def downgrade() -> None:
    op.create_index("ix_event_ranges_jobset_state", "event_ranges", ["jobset_id", "state"])
    op.drop_index("ix_event_ranges_jobset_state_start", table_name="event_ranges")
