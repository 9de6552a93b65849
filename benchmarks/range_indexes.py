"""How much would partial indexes on ``event_ranges`` save the database? (issue 2)

Every range transition changes ``state``, which is indexed, so PostgreSQL cannot update
in place (no HOT update): each new row version is inserted into every index of the
table (three since migration 0004, four before). A partial index gets an entry only for rows that
match its predicate. This compares, in raw SQL on PostgreSQL, the claim + finish cycle
of the dispatcher with

- ``current``: the indexes of the schema (``(jobset_id, state, start_event)``, the
  primary key and the unique position);
- ``holder-index``: those and ``(panda_id, state)``, which the schema had until
  migration 0004;
- ``ready-partial``: ``(jobset_id, start_event) WHERE state = 'ready'`` instead of the
  first, and ``(panda_id, state)``;
- ``both-partial``: that, with ``(panda_id) WHERE state IN ('sent', 'running')`` instead
  of ``(panda_id, state)``.

Each variant gets a fresh table of ``--jobsets`` x ``--per-jobset`` ready ranges; then
``pgbench`` runs, from ``--clients`` connections for ``--seconds`` s, a function that
claims 16 ranges as ``getEventRanges`` does (``FOR UPDATE SKIP LOCKED``, ordered by
``start_event``) and finishes them by ``range_id`` as ``updateEventRanges`` does, in one
transaction. Printed: ranges/s per variant and round, and the ratio of each variant's
median to ``current``'s. The database named by ``--pg-url`` is WIPED (its name must
contain ``bench``).

Run: ``python benchmarks/range_indexes.py``; needs PostgreSQL and its ``pgbench``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from dispatch import DEFAULT_PG_URL  # the benchmarks' own database, named once

RANGES_PER_CYCLE = 16

TABLE = """
DROP TABLE IF EXISTS event_ranges CASCADE;
CREATE TABLE event_ranges (
  range_id bigserial PRIMARY KEY,
  task_id bigint NOT NULL, jobset_id bigint NOT NULL, file_id bigint NOT NULL,
  start_event bigint NOT NULL, last_event bigint NOT NULL,
  state varchar(16) NOT NULL, attempt_nr integer NOT NULL, failures integer NOT NULL,
  panda_id bigint, output_path text, output_fsize bigint, output_adler32 varchar(8),
  objstore_id varchar(100), zip_id bigint, error_code integer, error_diag text,
  cpu_seconds double precision, wall_seconds double precision,
  modified_at double precision NOT NULL,
  CONSTRAINT uq_event_ranges_position UNIQUE (task_id, file_id, start_event));
INSERT INTO event_ranges (task_id, jobset_id, file_id, start_event, last_event, state,
                          attempt_nr, failures, modified_at)
SELECT 1, j, j, i, i, 'ready', 1, 0, 0
  FROM generate_series(1, {jobsets}) j, generate_series(0, {per_jobset} - 1) i;
"""

VARIANTS = {
    "current": [
        "CREATE INDEX ON event_ranges (jobset_id, state, start_event)",
    ],
    "holder-index": [
        "CREATE INDEX ON event_ranges (jobset_id, state, start_event)",
        "CREATE INDEX ON event_ranges (panda_id, state)",
    ],
    "ready-partial": [
        "CREATE INDEX ON event_ranges (jobset_id, start_event) WHERE state = 'ready'",
        "CREATE INDEX ON event_ranges (panda_id, state)",
    ],
    "both-partial": [
        "CREATE INDEX ON event_ranges (jobset_id, start_event) WHERE state = 'ready'",
        "CREATE INDEX ON event_ranges (panda_id) WHERE state IN ('sent', 'running')",
    ],
}

CYCLE = f"""
CREATE OR REPLACE FUNCTION bench_cycle(j bigint, pid bigint) RETURNS void AS $$
DECLARE ids bigint[];
BEGIN
  WITH claimed AS (
    UPDATE event_ranges SET state = 'sent', panda_id = pid, modified_at = 1
     WHERE range_id IN (SELECT range_id FROM event_ranges
                         WHERE jobset_id = j AND state = 'ready'
                         ORDER BY start_event LIMIT {RANGES_PER_CYCLE}
                         FOR UPDATE SKIP LOCKED)
    RETURNING range_id)
  SELECT array_agg(range_id) INTO ids FROM claimed;
  UPDATE event_ranges SET state = 'finished', output_path = 'file:///os/x',
         output_fsize = 100, output_adler32 = '0a0b0c0d', objstore_id = '1',
         cpu_seconds = 0.5, modified_at = 2
   WHERE range_id = ANY(ids) AND state = 'sent';
END $$ LANGUAGE plpgsql;
"""


def pgbench_binary() -> str:
    """``pgbench`` on PATH, else in Debian's PostgreSQL directories."""
    found = shutil.which("pgbench")
    if found:
        return found
    for version in ("17", "16", "15", "14", "13"):
        path = Path(f"/usr/lib/postgresql/{version}/bin/pgbench")
        if path.exists():
            return str(path)
    raise SystemExit("pgbench not found: install PostgreSQL's client tools")


def prepare(url: str, variant: str, jobsets: int, per_jobset: int) -> None:
    """A fresh table of ready ranges with the variant's indexes, analysed."""
    with psycopg.connect(url, autocommit=True) as conn:
        # Several statements in one call take no bound parameters: the sizes go in the text.
        conn.execute(TABLE.format(jobsets=int(jobsets), per_jobset=int(per_jobset)))
        for statement in VARIANTS[variant]:
            conn.execute(statement)
        conn.execute(CYCLE)
        conn.execute("VACUUM ANALYZE event_ranges")


def run_pgbench(url: str, jobsets: int, clients: int, seconds: int) -> float:
    """Cycles per second pgbench reaches (without connection time)."""
    parts = urlsplit(url)
    script = f"\\set j random(1, {jobsets})\nSELECT bench_cycle(:j, :client_id + 1000);\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as handle:
        handle.write(script)
        handle.flush()
        command = [
            pgbench_binary(),
            "-h", parts.hostname or "127.0.0.1",
            "-p", str(parts.port or 5432),
            "-U", parts.username or "postgres",
            "-n", "-c", str(clients), "-j", str(clients), "-T", str(seconds),
            "-f", handle.name,
            parts.path.lstrip("/"),
        ]  # fmt: skip
        env = os.environ | ({"PGPASSWORD": parts.password} if parts.password else {})
        output = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output.stdout)
    if not match:
        raise SystemExit(f"cannot read pgbench's result:\n{output.stdout}{output.stderr}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=os.environ.get("EVENTSERVICE_BENCH_PG", DEFAULT_PG_URL))
    parser.add_argument("--jobsets", type=int, default=16)
    parser.add_argument("--per-jobset", type=int, default=80_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if "bench" not in urlsplit(args.pg_url).path:
        raise SystemExit("refusing to wipe a database whose name does not contain 'bench'")
    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_nr in range(1, args.rounds + 1):
        for variant in VARIANTS:
            prepare(args.pg_url, variant, args.jobsets, args.per_jobset)
            per_s = run_pgbench(args.pg_url, args.jobsets, args.clients, args.seconds)
            rates[variant].append(per_s * RANGES_PER_CYCLE)
            print(f"round {round_nr} {variant:>13}: {per_s * RANGES_PER_CYCLE:9,.0f} ranges/s")
    reference = statistics.median(rates["current"])
    for variant, values in rates.items():
        median = statistics.median(values)
        print(f"{variant:>13}: median {median:9,.0f} ranges/s, {median / reference:.2f}x current")


if __name__ == "__main__":
    main()
