"""The dispatcher's tables (SQLAlchemy Core). Migrations in ``migrations/`` build them.

Times are UNIX seconds (float) so both backends compare them the same way.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for IDs.
ID = BigInteger().with_variant(Integer(), "sqlite")

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", ID, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("state", String(16), nullable=False),
    Column("params", Text, nullable=False),  # JSON of TaskParams
    Column("transformation", Text, nullable=False),
    Column("normal_transformation", Text, nullable=False),
    Column("merge_transformation", Text, nullable=False),
    Column("output_name", String(300), nullable=False),
    Column("n_events", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("modified_at", Float, nullable=False),
)

input_files = Table(
    "input_files",
    metadata,
    Column("file_id", ID, primary_key=True, autoincrement=True),
    Column("task_id", ID, ForeignKey("tasks.task_id"), nullable=False, index=True),
    Column("lfn", String(300), nullable=False),
    Column("guid", String(64), nullable=False),
    Column("scope", String(100), nullable=False),
    Column("url", Text, nullable=False),
    Column("n_events", BigInteger, nullable=False),
    Column("fsize", BigInteger),
    Column("checksum", String(40)),
)

queues = Table(
    "queues",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("params", Text, nullable=False),  # JSON of QueueParams
    Column("created_at", Float, nullable=False),
)

object_stores = Table(
    "object_stores",
    metadata,
    Column("objstore_id", ID, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False, unique=True),
)

jobsets = Table(
    "jobsets",
    metadata,
    Column("jobset_id", ID, primary_key=True, autoincrement=True),
    Column("task_id", ID, ForeignKey("tasks.task_id"), nullable=False, index=True),
    Column("file_id", ID, ForeignKey("input_files.file_id"), nullable=False),
    Column("first_event", BigInteger, nullable=False),
    Column("last_event", BigInteger, nullable=False),
    Column("event_service", Integer, nullable=False),  # 1 = ES consumers, 0 = one normal job
    Column("state", String(16), nullable=False),
    Column("attempt_nr", Integer, nullable=False),  # re-processings of the whole jobset
    Column("consumers_made", Integer, nullable=False),
    Column("job_failures", Integer, nullable=False),
    Column("output_lfn", String(300), nullable=False),
    Column("output_path", Text),
    Column("output_fsize", BigInteger),
    Column("output_adler32", String(8)),
    Column("modified_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("panda_id", ID, primary_key=True, autoincrement=True),
    Column("task_id", ID, ForeignKey("tasks.task_id"), nullable=False),
    Column("jobset_id", ID, ForeignKey("jobsets.jobset_id"), nullable=False),
    Column("kind", Integer, nullable=False),  # JobKind
    Column("state", String(16), nullable=False),
    Column("attempt_nr", Integer, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("queue", String(100)),
    Column("node", String(200)),
    Column("command", String(16), nullable=False),
    Column("heartbeat_at", Float),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("n_events", BigInteger),
    Column("error_code", Integer),
    Column("error_diag", Text),
    Column("cpu_seconds", Float),  # cpuConsumptionTime reported by the pilot
    Index("ix_jobs_state_kind", "state", "kind"),
    Index("ix_jobs_jobset_state", "jobset_id", "state"),
)

zip_files = Table(
    "zip_files",
    metadata,
    Column("zip_id", ID, primary_key=True, autoincrement=True),
    Column("task_id", ID, nullable=False),
    Column("jobset_id", ID, nullable=False, index=True),
    Column("panda_id", ID, nullable=False),
    Column("lfn", String(300), nullable=False),
    Column("path", Text, nullable=False),
    Column("fsize", BigInteger, nullable=False),
    Column("adler32", String(8), nullable=False),
    Column("objstore_id", String(100)),
    Column("num_events", BigInteger),
)

event_ranges = Table(
    "event_ranges",
    metadata,
    Column("range_id", ID, primary_key=True, autoincrement=True),
    Column("task_id", ID, nullable=False),
    Column("jobset_id", ID, ForeignKey("jobsets.jobset_id"), nullable=False),
    Column("file_id", ID, nullable=False),
    Column("start_event", BigInteger, nullable=False),
    Column("last_event", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempt_nr", Integer, nullable=False),
    Column("failures", Integer, nullable=False),  # what counts against esMaxAttempt
    Column("panda_id", ID),  # consumer holding (or that last held) the range
    Column("output_path", Text),
    Column("output_fsize", BigInteger),
    Column("output_adler32", String(8)),
    Column("objstore_id", String(100)),
    Column("zip_id", ID),
    Column("error_code", Integer),
    Column("error_diag", Text),
    Column("cpu_seconds", Float),  # payload CPU of the attempt that produced the output
    Column("wall_seconds", Float),
    Column("modified_at", Float, nullable=False),
    UniqueConstraint("task_id", "file_id", "start_event", name="uq_event_ranges_position"),
    Index("ix_event_ranges_jobset_state_start", "jobset_id", "state", "start_event"),
)

history = Table(
    "history",
    metadata,
    Column("history_id", ID, primary_key=True, autoincrement=True),
    Column("entity", String(8), nullable=False),  # range | job | jobset | task
    Column("entity_id", ID, nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("attempt_nr", Integer),
    Column("panda_id", ID),
    Column("at", Float, nullable=False),
    Column("reason", Text),
    Index("ix_history_entity", "entity", "entity_id"),
)
