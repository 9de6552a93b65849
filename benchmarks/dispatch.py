"""Dispatcher throughput benchmark (issue 2).

K simulated pilots (default 64) each take one event-service consumer with ``getJob``,
then loop ``getEventRanges(nRanges=16)`` + ``updateEventRanges`` (all ``finished``,
version 0 with ``path``/``fsize``/``adler32``) over HTTP against a dispatcher that this
script starts itself as a subprocess on a free loopback port.  The same transitions are
then done directly in SQL (claim ``UPDATE ... RETURNING`` + finish ``UPDATE``) on the same
database, and the end-to-end rate is compared with that raw rate.  Each combination of
backend and pre-fill level starts from an empty schema: the events table is first filled
with ``--prefill`` ranges of a background task (bulk SQL), then the benchmark task runs.

Usage::

    python benchmarks/dispatch.py --backend both --pilots 64 --prefill 0,10000,1000000
    python benchmarks/dispatch.py --quick          # small run to check that it works

Nothing is asserted about speed: the script prints a table and how the figures compare
with the targets of issue 2.  ``--json FILE`` also writes the results.

The PostgreSQL database named by ``--pg-url`` is WIPED (its dispatcher tables are dropped)
for every run; the script refuses a database whose name does not contain ``bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from eventservice.demo.processes import free_port

DEFAULT_PG_URL = "postgresql://eventservice:eventservice@127.0.0.1:5432/eventservice_bench"
QUEUE = "BENCH"
OBJECT_STORE = "file:///tmp/eventservice-bench-os"
#: Ranges per jobset of the background (pre-fill) task.
PREFILL_JOBSET_SIZE = 1000
#: Per-call HTTP timeout of a simulated pilot.
CALL_TIMEOUT = 120.0
#: A pilot gives up after this many failed calls (5xx, StatusCode != 0, transport errors).
MAX_PILOT_ERRORS = 200

TARGET_RATE = 5000.0
TARGET_RATIO = 0.3
TARGET_P99_MS = 50.0
TARGET_PREFILL_DRIFT = 0.2


# --- results --------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


@dataclass
class PilotStats:
    """What a group of simulated pilots measured (latencies in seconds)."""

    get_latency: list[float] = field(default_factory=list)
    #: Each pilot's first getEventRanges: all pilots start at one instant (a burst no
    #: real site makes), so these are reported apart from the steady state.
    first_get_latency: list[float] = field(default_factory=list)
    #: the dispatcher's own time for the same calls as ``get_latency`` (Server-Timing)
    get_dispatcher_latency: list[float] = field(default_factory=list)
    #: the same calls from the request's write to the answer's arrival in the pilot's
    #: socket (kernel timestamps), without the pilot's own wait to read it
    get_arrival_latency: list[float] = field(default_factory=list)
    update_latency: list[float] = field(default_factory=list)
    dispatched: int = 0
    finished: int = 0
    refused: int = 0
    errors: int = 0
    #: answers with more ranges than asked for
    oversized: int = 0
    #: empty answers while checkEventsAvailability still counted ready ranges
    early_empty: int = 0
    first_error: str | None = None
    start: float = float("inf")
    end: float = 0.0
    #: CPU seconds the simulated pilots' process(es) used while they ran
    cpu: float = 0.0
    #: how the pilots' process(es) were scheduled (see raise_pilot_priority)
    priority: str = ""

    def merge(self, other: PilotStats) -> None:
        if other.priority and other.priority not in self.priority.split("; "):
            self.priority = "; ".join(filter(None, (self.priority, other.priority)))
        self.get_latency += other.get_latency
        self.first_get_latency += other.first_get_latency
        self.get_dispatcher_latency += other.get_dispatcher_latency
        self.get_arrival_latency += other.get_arrival_latency
        self.update_latency += other.update_latency
        self.dispatched += other.dispatched
        self.finished += other.finished
        self.refused += other.refused
        self.errors += other.errors
        self.oversized += other.oversized
        self.early_empty += other.early_empty
        self.first_error = self.first_error or other.first_error
        self.start = min(self.start, other.start)
        self.end = max(self.end, other.end)
        self.cpu += other.cpu

    def error(self, message: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or message


@dataclass
class RunResult:
    """One row of the results table."""

    backend: str
    prefill: int
    pilots: int
    workers: int
    ranges: int
    think_ms: float
    rows_at_start: int
    e2e_seconds: float
    dispatched: int
    finished: int
    dispatched_per_s: float
    finished_per_s: float
    raw_seconds: float
    raw_finished: int
    raw_per_s: float
    raw_connections: int
    ratio: float
    get_p50_ms: float
    get_p99_ms: float
    #: the dispatcher's own p99 for the same calls: request headers to answer written
    get_dispatcher_p99_ms: float
    #: their p99 from the request's write to the answer's arrival at the pilot's socket
    get_arrival_p99_ms: float
    first_get_p99_ms: float
    update_p50_ms: float
    update_p99_ms: float
    raw_claim_p50_ms: float
    raw_claim_p99_ms: float
    raw_finish_p50_ms: float
    raw_finish_p99_ms: float
    server_cpu_us_per_range: float
    #: the simulated pilots (load generator), on the same cores, and their scheduling
    client: str
    pilot_priority: str
    client_cpu_us_per_range: float
    #: PostgreSQL backends serving the benchmark database (NaN on SQLite: in-process)
    db_cpu_us_per_range: float
    errors: int
    refused: int
    getjob_no_job: int
    oversized_answers: int
    early_empty_answers: int
    first_error: str | None
    task_ranges_ended: int
    prefill_seconds: float
    #: PostgreSQL sessions opened while the pilots ran (the dispatcher's pool churn)
    db_sessions_opened: int | None
    #: WAL written while the pilots ran and the jobset was concluded (PostgreSQL only;
    #: the whole cluster's, so a quiet cluster is assumed)
    wal_bytes_per_range: float = float("nan")
    #: when the jobset had left ``running``, in seconds after the pilots' last answer
    concluded_after_s: float = float("nan")


# --- backends -------------------------------------------------------------------------


class Backend:
    """A database the dispatcher runs on: reset, pre-fill and raw SQL access."""

    name = ""
    claim_sql = ""
    finish_sql = ""
    param = ""

    def __init__(self) -> None:
        self.url = ""

    def reset(self) -> None:
        """Start from an empty database with the current schema (migrations)."""
        from eventservice.store import Database

        database = Database(self.url)
        try:
            database.upgrade()
        finally:
            database.dispose()

    def connect(self) -> Any:
        raise NotImplementedError

    def begin(self, conn: Any) -> None:
        raise NotImplementedError

    def prefill(self, n: int) -> None:
        """Insert ``n`` ranges of a background task nobody consumes, in bulk SQL."""
        if n <= 0:
            return
        now = time.time()
        conn = self.connect()
        try:
            cur = conn.cursor()
            self.begin(conn)
            task_id = self._insert_returning(
                cur,
                "INSERT INTO tasks (name, state, params, transformation, normal_transformation,"
                " merge_transformation, output_name, n_events, created_at, modified_at)"
                " VALUES ({p}, 'running', {p}, 'x', 'x', 'x', 'bg.{jobsetID}', {p}, {p}, {p})"
                " RETURNING task_id",
                (
                    "background",
                    json.dumps({"nEventsPerJob": PREFILL_JOBSET_SIZE, "nEsConsumers": 1}),
                    n,
                    now,
                    now,
                ),
            )
            file_id = self._insert_returning(
                cur,
                "INSERT INTO input_files (task_id, lfn, guid, scope, url, n_events)"
                " VALUES ({p}, 'EVNT.bg.pool.root', {p}, 'bench', 'file:///bg', {p})"
                " RETURNING file_id",
                (task_id, str(uuid.uuid4()), n),
            )
            n_jobsets = -(-n // PREFILL_JOBSET_SIZE)
            self._fill_jobsets(cur, task_id, file_id, n_jobsets, n, now)
            cur.execute(
                self._q(
                    "SELECT min(jobset_id), max(jobset_id), count(*) FROM jobsets"
                    " WHERE task_id = {p}"
                ),
                (task_id,),
            )
            first, last, count = cur.fetchone()
            if last - first + 1 != count:
                raise RuntimeError("background jobset ids are not consecutive")
            self._fill_ranges(cur, task_id, file_id, first, n, now)
            conn.commit()
            self.analyze(conn)
        finally:
            conn.close()

    # A state mix as in a database that has seen work: ranges of a background task
    # that nobody consumes (no jobs exist for it).  g is the range's position.
    STATE_CASE = (
        "CASE WHEN g % 10 < 5 THEN 'done' WHEN g % 10 < 8 THEN 'ready'"
        " WHEN g % 10 = 8 THEN 'finished' ELSE 'merged' END"
    )

    def _range_select(self, first_jobset: int) -> str:
        done = "g % 10 NOT IN (5, 6, 7)"
        return (
            f"SELECT {{p}}, {first_jobset} + g / {PREFILL_JOBSET_SIZE}, {{p}}, g, g,"
            f" {self.STATE_CASE}, 1, 0,"
            f" CASE WHEN {done} THEN 1000000000 + g / 100 END,"
            f" CASE WHEN {done} THEN 'file:///bg/out/' || g || '.HITS.pool.root' END,"
            f" CASE WHEN {done} THEN 1000 + g % 977 END,"
            f" CASE WHEN {done} THEN '0badcafe' END,"
            f" CASE WHEN {done} THEN '1' END, {{p}}"
        )

    RANGE_COLUMNS = (
        "INSERT INTO event_ranges (task_id, jobset_id, file_id, start_event, last_event,"
        " state, attempt_nr, failures, panda_id, output_path, output_fsize, output_adler32,"
        " objstore_id, modified_at) "
    )

    def _q(self, sql: str) -> str:
        """Use the driver's placeholder for ``{p}`` (and escape ``%`` for psycopg)."""
        if self.param == "%s":
            sql = sql.replace("%", "%%")
        return sql.replace("{p}", self.param)

    def _insert_returning(self, cur: Any, sql: str, params: tuple[Any, ...]) -> int:
        cur.execute(self._q(sql), params)
        return int(cur.fetchone()[0])

    def _fill_jobsets(
        self, cur: Any, task_id: int, file_id: int, n_jobsets: int, n: int, now: float
    ) -> None:
        raise NotImplementedError

    def _fill_ranges(
        self, cur: Any, task_id: int, file_id: int, first_jobset: int, n: int, now: float
    ) -> None:
        raise NotImplementedError

    def analyze(self, conn: Any) -> None:
        """Refresh planner statistics where the deployment would (autovacuum)."""

    def count_ranges(self) -> int:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*) FROM event_ranges")
            count = int(cur.fetchone()[0])
            conn.rollback()
            return count
        finally:
            conn.close()

    def consumers(self, task_id: int) -> list[tuple[int, int, str]]:
        """``(PandaID, jobsetID, state)`` of a task's event-service consumers."""
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(
                self._q(
                    "SELECT panda_id, jobset_id, state FROM jobs"
                    " WHERE task_id = {p} AND kind = 1"
                    " ORDER BY panda_id"
                ),
                (task_id,),
            )
            rows = [(int(a), int(b), str(c)) for a, b, c in cur.fetchall()]
            conn.rollback()
            return rows
        finally:
            conn.close()

    def sessions(self) -> int | None:
        """Database sessions opened so far (PostgreSQL statistics), if known."""
        return None

    def server_cpu(self) -> dict[int, float] | None:
        """CPU seconds of each database server process serving this database, if any."""
        return None

    def wal(self) -> int | None:
        """The server's WAL position in bytes (what it has written so far), if known."""
        return None

    def server_args(self, workers: int) -> list[str]:
        return ["--db", self.url, "--workers", str(workers)]


class SQLiteBackend(Backend):
    name = "sqlite"
    param = "?"
    # What the dispatcher issues on SQLite (FOR UPDATE SKIP LOCKED does not exist there).
    claim_sql = (
        "UPDATE event_ranges SET state = 'sent', panda_id = ?, modified_at = ?"
        " WHERE range_id IN (SELECT range_id FROM event_ranges WHERE jobset_id = ?"
        " AND state = 'ready' ORDER BY start_event LIMIT ?) AND state = 'ready'"
        " RETURNING range_id, file_id, start_event, last_event, attempt_nr"
    )
    finish_sql = (
        "UPDATE event_ranges SET state = 'finished', output_path = ?, output_fsize = ?,"
        " output_adler32 = ?, objstore_id = ?, modified_at = ?"
        " WHERE range_id = ? AND state = 'sent' AND attempt_nr = ? AND panda_id = ?"
    )

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path.resolve()
        self.url = f"sqlite:///{self.path}"

    def reset(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        super().reset()

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _fill_jobsets(
        self, cur: Any, task_id: int, file_id: int, n_jobsets: int, n: int, now: float
    ) -> None:
        cur.execute(
            "WITH RECURSIVE j(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM j WHERE i + 1 < ?)"
            " INSERT INTO jobsets (task_id, file_id, first_event, last_event, event_service,"
            " state, attempt_nr, consumers_made, job_failures, output_lfn, modified_at)"
            " SELECT ?, ?, i * ?, min(i * ? + ? - 1, ? - 1), 1, 'running', 1, 1, 0,"
            " 'bg.' || i, ? FROM j",
            (
                n_jobsets,
                task_id,
                file_id,
                PREFILL_JOBSET_SIZE,
                PREFILL_JOBSET_SIZE,
                PREFILL_JOBSET_SIZE,
                n,
                now,
            ),
        )

    def _fill_ranges(
        self, cur: Any, task_id: int, file_id: int, first_jobset: int, n: int, now: float
    ) -> None:
        cur.execute(
            "WITH RECURSIVE r(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM r WHERE g + 1 < ?) "
            + self.RANGE_COLUMNS
            + self._q(self._range_select(first_jobset))
            + " FROM r",
            (n, task_id, file_id, now),
        )


class PostgresBackend(Backend):
    name = "postgresql"
    param = "%s"
    # What the dispatcher issues (ranges.get_event_ranges, updates.apply_reports).
    claim_sql = (
        "UPDATE event_ranges SET state = 'sent', panda_id = %s, modified_at = %s"
        " WHERE range_id IN (SELECT range_id FROM event_ranges WHERE jobset_id = %s"
        " AND state = 'ready' ORDER BY start_event LIMIT %s FOR UPDATE SKIP LOCKED)"
        " AND state = 'ready'"
        " RETURNING range_id, file_id, start_event, last_event, attempt_nr"
    )
    finish_sql = SQLiteBackend.finish_sql.replace("?", "%s")

    def __init__(self, url: str, allow_any_name: bool) -> None:
        super().__init__()
        name = urlsplit(url).path.lstrip("/")
        if "bench" not in name and not allow_any_name:
            raise SystemExit(
                f"refusing to wipe PostgreSQL database {name!r}: its name does not contain"
                " 'bench' (use --allow-any-db to insist)"
            )
        self.url = url
        self.dsn = url.replace("postgresql+psycopg://", "postgresql://")

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn)

    def reset(self) -> None:
        conn = self.connect()
        try:
            conn.autocommit = True
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
        finally:
            conn.close()
        super().reset()

    def begin(self, conn: Any) -> None:
        """psycopg opens a transaction implicitly with the first statement."""

    def _fill_jobsets(
        self, cur: Any, task_id: int, file_id: int, n_jobsets: int, n: int, now: float
    ) -> None:
        cur.execute(
            "INSERT INTO jobsets (task_id, file_id, first_event, last_event, event_service,"
            " state, attempt_nr, consumers_made, job_failures, output_lfn, modified_at)"
            " SELECT %s, %s, i * %s, least(i * %s + %s - 1, %s - 1), 1, 'running', 1, 1, 0,"
            " 'bg.' || i, %s FROM generate_series(0, %s - 1) AS i ORDER BY i",
            (
                task_id,
                file_id,
                PREFILL_JOBSET_SIZE,
                PREFILL_JOBSET_SIZE,
                PREFILL_JOBSET_SIZE,
                n,
                now,
                n_jobsets,
            ),
        )

    def _fill_ranges(
        self, cur: Any, task_id: int, file_id: int, first_jobset: int, n: int, now: float
    ) -> None:
        cur.execute(
            self.RANGE_COLUMNS
            + self._q(self._range_select(first_jobset))
            + " FROM generate_series(0::bigint, %s - 1) AS g",
            (task_id, file_id, now, n),
        )

    def server_cpu(self) -> dict[int, float] | None:
        """Backends serving the benchmark database, found by their process title
        (``postgres: USER DB HOST ...``); readable when PostgreSQL runs on this machine."""
        database = urlsplit(self.dsn).path.lstrip("/")
        found: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if not title.startswith("postgres: ") or f" {database} " not in title:
                    continue
                found[int(entry.name)] = process_tree_cpu(int(entry.name))
            except (OSError, ValueError):
                continue
        return found or None

    def wal(self) -> int | None:
        # The insert position, not pg_stat_wal: backends report their statistics up to
        # seconds late.
        conn = self.connect()
        try:
            conn.autocommit = True
            row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
            return int(row[0]) if row else None
        finally:
            conn.close()

    def sessions(self) -> int | None:
        conn = self.connect()
        try:
            conn.autocommit = True
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
            return int(row[0]) if row and row[0] is not None else None
        finally:
            conn.close()

    def analyze(self, conn: Any) -> None:
        conn.autocommit = True
        conn.execute("ANALYZE")
        conn.autocommit = False


# --- the dispatcher subprocess --------------------------------------------------------


def process_tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


class Server:
    """``eventservice server`` on a free loopback port, in its own process group."""

    def __init__(self, backend: Backend, workers: int, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "eventservice",
            "server",
            *backend.server_args(workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--lease-seconds",
            "3600",
            "--log-level",
            "warning",
        ]
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dispatcher exited early; see {self.log_path}")
            try:
                answer = httpx.post(
                    f"{self.base_url}/server/panda/getStatus",
                    headers={"Accept": "application/json"},
                    timeout=5,
                )
                if answer.status_code == 200 and answer.json().get("StatusCode") == 0:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dispatcher did not answer within {timeout:.0f} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        return process_tree_cpu(self.process.pid)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = httpx.request(method, f"{self.base_url}/api/v1{path}", timeout=600, **kwargs)
        if answer.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self._log.close()


def wait_concluded(
    server: Server, task_id: int, pilots_end: float, timeout: float = 120.0
) -> float:
    """Wait until the task's jobsets have left ``running``; seconds after the pilots' end."""
    deadline = time.perf_counter() + timeout
    while server.api("GET", f"/tasks/{task_id}").get("jobsets", {}).get("running"):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"task {task_id}: a jobset still running {timeout:.0f} s on")
        time.sleep(0.02)
    return max(time.perf_counter() - pilots_end, 0.0)


def submit_task(server: Server, name: str, n_ranges: int, pilots: int) -> int:
    """One input, one jobset of ``n_ranges`` one-event ranges, ``pilots`` consumers."""
    task = {
        "name": name,
        "inputs": [
            {
                "url": f"file:///bench/{name}/EVNT.pool.root",
                "nEvents": n_ranges,
                "guid": str(uuid.uuid4()),
                "scope": "bench",
            }
        ],
        "params": {
            "nEventsPerJob": n_ranges,
            "nEventsPerWorker": 1,
            "nEsConsumers": pilots,
            "esMaxAttemptJob": max(100, pilots),
        },
    }
    return int(server.api("POST", "/tasks", json=task)["taskID"])


# --- a lean HTTP/1.1 client ---------------------------------------------------------


class ClientError(Exception):
    """A call of :class:`RawClient` that got no complete answer."""


#: Linux's socket option for receive timestamps in nanoseconds (``SO_TIMESTAMPNS_OLD``,
#: also the control message's type); Python's socket module does not name it.
SO_TIMESTAMPNS = 35
#: Room for its control message: a ``struct timespec`` of two 64-bit fields.
TIMESTAMP_SPACE = socket.CMSG_SPACE(16)


class RawAnswer:
    """What :class:`RawClient` got back (the part of ``httpx.Response`` the pilots use).

    ``sent`` and ``arrived`` are wall-clock times: the request's write, and the kernel's
    receive time of the answer's last byte (``None`` where the kernel gives none).
    """

    __slots__ = ("arrived", "content", "headers", "sent", "status_code")

    def __init__(
        self,
        status_code: int,
        content: bytes,
        headers: dict[str, str],
        sent: float,
        arrived: float | None,
    ) -> None:
        self.status_code = status_code
        self.content = content
        #: the headers the pilots read (names in lower case)
        self.headers = headers
        self.sent = sent
        self.arrived = arrived

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class RawClient:
    """One keep-alive HTTP/1.1 connection sending form POSTs, as a pilot does.

    The requests are what httpx sends (method, path, form body, ``Accept`` and
    ``Content-Type``), minus httpx's per-request machinery: with 64 pilots in one
    process httpx cost more CPU than the dispatcher, on the same 2 cores.

    A plain non-blocking socket rather than asyncio streams, for the kernel's receive
    timestamps (``SO_TIMESTAMPNS``): when the pilots' process waits for a core, the
    answers wait in its sockets, and the time they arrived tells that wait apart from
    the dispatcher's.
    """

    def __init__(self, base_url: str, timeout: float = CALL_TIMEOUT) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout
        self._head = (
            f"Host: {parts.netloc}\r\nAccept: application/json\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
        ).encode()
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        #: set by the event loop whenever the socket has something to read
        self._readable = asyncio.Event()

    async def post(self, path: str, data: dict[str, str]) -> RawAnswer:
        body = urlencode(data).encode()
        request = b"".join(
            (
                f"POST {path} HTTP/1.1\r\n".encode(),
                self._head,
                f"Content-Length: {len(body)}\r\n\r\n".encode(),
                body,
            )
        )
        try:
            return await asyncio.wait_for(self._exchange(request), self.timeout)
        except (OSError, EOFError, ValueError, IndexError, TimeoutError) as exc:
            await self.aclose()
            raise ClientError(repr(exc)) from exc

    async def _connect(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        # Resolved as asyncio.open_connection would: the family follows the address.
        family, kind, proto, _name, address = (
            await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sys.platform.startswith("linux"):
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        # Watched for as long as it is open: one callback per arriving segment, not two
        # epoll changes per wait.
        loop.add_reader(sock.fileno(), self._readable.set)
        return sock

    async def _receive(self, sock: socket.socket) -> float | None:
        """Read what has come into the buffer; the kernel's receive time of its last byte."""
        while True:
            try:
                data, ancillary, _flags, _address = sock.recvmsg(65536, TIMESTAMP_SPACE)
                break
            except BlockingIOError:
                self._readable.clear()
                await self._readable.wait()
        if not data:
            raise EOFError("the dispatcher closed the connection")
        self._buffer += data
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                return seconds + nanoseconds / 1e9
        return None

    async def _exchange(self, request: bytes) -> RawAnswer:
        if self._sock is None:
            self._sock = await self._connect()
        sock = self._sock
        sent = time.time()
        await asyncio.get_running_loop().sock_sendall(sock, request)
        arrived = None
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            arrived = await self._receive(sock) or arrived
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, close = 0, False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError("chunked answers are not expected from the dispatcher")
            elif name == b"server-timing":
                headers["server-timing"] = value.strip().decode("latin-1")
        total = end + 4 + length
        while len(self._buffer) < total:
            arrived = await self._receive(sock) or arrived
        content = bytes(self._buffer[end + 4 : total])
        del self._buffer[:total]
        if close:
            await self.aclose()
        return RawAnswer(status, content, headers, sent, arrived)

    async def aclose(self) -> None:
        if self._sock is not None:
            sock, self._sock = self._sock, None
            self._buffer.clear()
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()


# --- simulated pilots -----------------------------------------------------------------


def dispatcher_seconds(answer: Any) -> float | None:
    """The dispatcher's own time for a call, from its ``Server-Timing`` header."""
    name, _, duration = answer.headers.get("server-timing", "").partition(";dur=")
    try:
        return float(duration) / 1000.0 if name == "dispatch" else None
    except ValueError:
        return None


def _report(r: dict[str, Any], task_id: int, jobset_id: int) -> dict[str, Any]:
    range_id = r["eventRangeID"]
    return {
        "eventRangeID": range_id,
        "eventStatus": "finished",
        "objstoreID": 1,
        "path": f"{OBJECT_STORE}/{task_id}/{jobset_id}/{range_id}.HITS.pool.root",
        "fsize": 100_000 + r["startEvent"] % 1000,
        "adler32": f"{zlib.adler32(range_id.encode()):08x}",
    }


GETJOB_FIELDS = {
    "siteName": QUEUE,
    "computingElement": QUEUE,
    "prodSourceLabel": "managed",
    "mem": "2000",
    "diskSpace": "10000",
    "cpu": "2000",
}


async def _get_jobs(base_url: str, pilots: int) -> list[dict[str, Any]]:
    """Every pilot's getJob, all at once (as pilots starting together do)."""
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Accept": "application/json"},
        timeout=CALL_TIMEOUT,
        limits=httpx.Limits(max_connections=pilots),
    ) as client:
        answers = await asyncio.gather(
            *(
                client.post(
                    "/server/panda/getJob", data={**GETJOB_FIELDS, "node": f"bench-pilot-{i}"}
                )
                for i in range(pilots)
            )
        )
    return [answer.json() for answer in answers]


def claim_consumers(
    server: Server, backend: Backend, pilots: int, task_id: int
) -> tuple[list[tuple[int, int, int]], int]:
    """``(pilot, PandaID, jobsetID)`` for each pilot, and how many getJob gave no job.

    A pilot whose getJob answered "no jobs" although the task still had unclaimed
    consumers is given one of the task's consumers that getJob marked ``sent`` without
    handing it to anyone (see BENCHMARKS.md: one getJob can claim several jobs on
    PostgreSQL); the count is reported so that this never goes unnoticed.
    """
    answers = asyncio.run(_get_jobs(server.base_url, pilots))
    handed: list[tuple[int, int, int]] = []
    for index, job in enumerate(answers):
        if job.get("StatusCode") == 0 and job.get("eventService") == "True":
            if int(job["taskID"]) != task_id:
                raise RuntimeError(f"pilot {index}: getJob gave task {job['taskID']}")
            handed.append((index, int(job["PandaID"]), int(job["jobsetID"])))
        elif job.get("StatusCode") != 20:
            raise RuntimeError(f"pilot {index}: getJob failed: {job}")
    served = {index for index, _, _ in handed}
    given = {panda_id for _, panda_id, _ in handed}
    missing = [index for index in range(pilots) if index not in served]
    orphans = [
        (panda_id, jobset_id)
        for panda_id, jobset_id, state in backend.consumers(task_id)
        if state == "sent" and panda_id not in given
    ]
    if len(orphans) < len(missing):
        raise RuntimeError(
            f"{len(missing)} pilots got no job and only {len(orphans)} unhanded consumers exist"
        )
    handed += [(i, p, j) for i, (p, j) in zip(missing, orphans, strict=False)]
    return sorted(handed), len(missing)


async def _pilot(
    client: httpx.AsyncClient,
    consumer: tuple[int, int, int],
    task_id: int,
    n_ranges: int,
    start: asyncio.Event,
    ready: Callable[[], None],
    stats: PilotStats,
    think: float = 0.0,
) -> None:
    index, panda_id, jobset_id = consumer
    ids = {"pandaID": str(panda_id), "jobsetID": str(jobset_id), "taskID": str(task_id)}
    answer = await client.post(
        "/server/panda/updateJob", data={"jobId": str(panda_id), "state": "running"}
    )
    if answer.json().get("StatusCode") != 0:
        raise RuntimeError(f"pilot {index}: updateJob running refused: {answer.text}")
    ready()
    await start.wait()
    request = {**ids, "nRanges": str(n_ranges)}
    errors_before = stats.errors
    early_empty = 0
    first_call = True
    while stats.errors - errors_before < MAX_PILOT_ERRORS:
        t0 = time.perf_counter()
        try:
            answer = await client.post("/server/panda/getEventRanges", data=request)
            body = answer.json()
        except (httpx.HTTPError, ClientError, ValueError) as exc:
            stats.error(f"getEventRanges: {exc!r}")
            continue
        t1 = time.perf_counter()
        if answer.status_code != 200 or body.get("StatusCode") != 0:
            stats.error(f"getEventRanges: {answer.status_code} {answer.text[:300]}")
            await asyncio.sleep(0.05)
            continue
        if first_call:
            stats.first_get_latency.append(t1 - t0)
            first_call = False
        else:
            stats.get_latency.append(t1 - t0)
            took = dispatcher_seconds(answer)
            if took is not None:
                stats.get_dispatcher_latency.append(took)
            arrived = getattr(answer, "arrived", None)  # httpx: no arrival times
            if arrived is not None:
                stats.get_arrival_latency.append(arrived - answer.sent)
        ranges = body["eventRanges"]
        if not ranges:
            stats.end = max(stats.end, t1)
            # An empty list means "no more events"; check that it was true (not timed).
            check = await client.post("/server/panda/checkEventsAvailability", data=ids)
            if check.json().get("nEventRanges", 0) > 0 and early_empty < MAX_PILOT_ERRORS:
                early_empty += 1
                stats.early_empty += 1
                await asyncio.sleep(0.01)
                continue
            return
        if len(ranges) > n_ranges:
            stats.oversized += 1
        stats.dispatched += len(ranges)
        reports = json.dumps([_report(r, task_id, jobset_id) for r in ranges])
        for _ in range(MAX_PILOT_ERRORS):  # a pilot resends a report until it is answered
            t0 = time.perf_counter()
            try:
                answer = await client.post(
                    "/server/panda/updateEventRanges",
                    data={"eventRanges": reports, "version": "0"},
                )
                body = answer.json()
            except (httpx.HTTPError, ClientError, ValueError) as exc:
                stats.error(f"updateEventRanges: {exc!r}")
                continue
            t1 = time.perf_counter()
            if answer.status_code != 200 or body.get("StatusCode") != 0:
                stats.error(f"updateEventRanges: {answer.status_code} {answer.text[:300]}")
                await asyncio.sleep(0.05)
                continue
            stats.update_latency.append(t1 - t0)
            applied = sum(1 for value in body["Returns"] if value is True)
            stats.finished += applied
            stats.refused += len(ranges) - applied
            if applied < len(ranges) and stats.first_error is None:
                stats.first_error = f"updateEventRanges refused: {body.get('Errors')}"
            break
        stats.end = max(stats.end, time.perf_counter())
        if think:
            await asyncio.sleep(think)  # the payload processing the ranges
    stats.end = max(stats.end, time.perf_counter())


async def _pilot_group(
    base_url: str,
    consumers: list[tuple[int, int, int]],
    task_id: int,
    n_ranges: int,
    barrier: Any,
    think: float = 0.0,
    client_kind: str = "raw",
) -> PilotStats:
    stats = PilotStats()
    start = asyncio.Event()
    pending = len(consumers)
    all_ready = asyncio.Event()

    def ready() -> None:
        nonlocal pending
        pending -= 1
        if pending == 0:
            all_ready.set()

    clients: list[Any] = [  # one client (one keep-alive connection) per pilot
        RawClient(base_url)
        if client_kind == "raw"
        else httpx.AsyncClient(
            base_url=base_url,
            headers={"Accept": "application/json"},
            timeout=CALL_TIMEOUT,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in consumers
    ]
    try:
        tasks = [
            asyncio.create_task(
                _pilot(client, consumer, task_id, n_ranges, start, ready, stats, think)
            )
            for client, consumer in zip(clients, consumers, strict=True)
        ]
        waiter = asyncio.create_task(all_ready.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:  # a pilot failed before the start
            for task in tasks:
                task.cancel()
            for task in done:
                task.result()
            raise RuntimeError("a pilot stopped before the start")
        if barrier is not None:
            await asyncio.to_thread(barrier.wait, 600)
        stats.start = time.perf_counter()
        cpu_start = time.process_time()
        start.set()
        await asyncio.gather(*tasks)
        stats.cpu = time.process_time() - cpu_start
    finally:
        for client in clients:
            await client.aclose()
    return stats


def _run_loop(main: Any, client: str) -> PilotStats:
    """Run the pilots' event loop: uvloop with the lean client where it is installed."""
    if client == "raw":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)  # type: ignore[no-any-return]
    return asyncio.run(main)  # type: ignore[no-any-return]


#: The nice value of the simulated pilots' scheduling group with ``--pilot-priority raised``.
PILOT_GROUP_NICE = -10


def raise_pilot_priority() -> str:
    """Schedule this process (a pilots' process) ahead of the dispatcher and the database.

    The pilots stand in for pilots on other machines, which never wait for one of the
    dispatcher's cores; here they share two cores with it and with PostgreSQL, and the
    time they waited for one counted as the dispatcher's latency. With Linux's autogroup
    scheduling (on in most distributions' kernels) the cores are shared between sessions
    first: PostgreSQL runs each backend in a session of its own, and the pilots shared
    theirs with the benchmark. Timestamps from the dispatcher showed answers written
    during 25-40 ms in which the pilots' process read none (BENCHMARKS.md).

    The process gets a session of its own, whose group gets nice -10 (or, with autogroup
    off, the process itself). Negative nice values need root or CAP_SYS_NICE; without,
    the pilots run as before. Returns what was done, for the results.

    The default since the fifteenth session: in four interleaved pairs of full PostgreSQL
    sets it cost no throughput (the thirteenth session had measured 5 % with the
    dispatcher of then), and every row's p99 stayed within 3.2 ms of the dispatcher's own,
    where with normal scheduling 3 of 12 rows read 28-45 ms against the dispatcher's 18-25
    (BENCHMARKS.md). The dispatcher's own latency (``Server-Timing``) is reported either
    way.
    """
    try:
        os.setsid()
    except OSError as exc:
        return f"normal (no session of their own: {exc.strerror})"
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    try:
        if autogroup.exists() and autogroup.read_text().strip() == "1":
            Path("/proc/self/autogroup").write_text(f"{PILOT_GROUP_NICE}\n")
            return f"raised (session group nice {PILOT_GROUP_NICE})"
        os.setpriority(os.PRIO_PROCESS, 0, PILOT_GROUP_NICE)
        return f"raised (nice {PILOT_GROUP_NICE})"
    except OSError as exc:
        return f"normal (nice {PILOT_GROUP_NICE} refused: {exc.strerror})"


def _pilot_process(
    base_url: str,
    consumers: list[tuple[int, int, int]],
    task_id: int,
    n_ranges: int,
    barrier: Any,
    out: Any,
    think: float,
    client: str,
    raise_priority: bool,
) -> None:
    try:
        priority = raise_pilot_priority() if raise_priority else "normal"
        stats = _run_loop(
            _pilot_group(base_url, consumers, task_id, n_ranges, barrier, think, client), client
        )
        stats.priority = priority
        out.put(("ok", asdict(stats)))
    except BaseException as exc:  # report any failure to the parent
        barrier.abort()
        out.put(("error", repr(exc)))


def run_pilots(
    base_url: str,
    consumers: list[tuple[int, int, int]],
    task_id: int,
    n_ranges: int,
    processes: int,
    think: float = 0.0,
    client: str = "raw",
    raise_priority: bool = False,
) -> PilotStats:
    """Run one simulated pilot per consumer in ``processes`` client processes (asyncio),
    in this process if it is one and its scheduling stays as it is."""
    if processes <= 1 and not raise_priority:
        stats = _run_loop(
            _pilot_group(base_url, consumers, task_id, n_ranges, None, think, client), client
        )
        stats.priority = "normal"
        return stats
    context = mp.get_context("spawn")
    groups = [group for p in range(processes) if (group := consumers[p::processes])]
    barrier = context.Barrier(len(groups))
    out = context.Queue()
    children = [
        context.Process(
            target=_pilot_process,
            args=(base_url, group, task_id, n_ranges, barrier, out, think, client, raise_priority),
        )
        for group in groups
    ]
    for child in children:
        child.start()
    stats = PilotStats()
    failures = []
    for _ in children:
        kind, value = out.get()
        if kind == "ok":
            stats.merge(PilotStats(**value))
        else:
            failures.append(value)
    for child in children:
        child.join()
    if failures:
        raise RuntimeError(f"client process failed: {failures[0]}")
    return stats


# --- the same transitions in raw SQL --------------------------------------------------


@dataclass
class RawStats:
    claim_latency: list[float] = field(default_factory=list)
    finish_latency: list[float] = field(default_factory=list)
    finished: int = 0
    start: float = float("inf")
    end: float = 0.0


def run_raw(
    backend: Backend, consumers: list[tuple[int, int]], n_ranges: int, connections: int
) -> RawStats:
    """Claim + finish every ready range of the consumers' jobset straight in SQL.

    ``connections`` threads, each with its own connection, each acting for its share
    of the consumers; one transaction per statement group as the dispatcher does.
    """
    stats = RawStats()
    lock = threading.Lock()
    barrier = threading.Barrier(connections)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        mine = consumers[index::connections] or consumers[:1]
        claim_latency, finish_latency, finished = [], [], 0
        conn = backend.connect()
        try:
            cur = conn.cursor()
            barrier.wait()
            t_start = time.perf_counter()
            turn = 0
            while True:
                panda_id, jobset_id = mine[turn % len(mine)]
                turn += 1
                now = time.time()
                t0 = time.perf_counter()
                backend.begin(conn)
                cur.execute(backend.claim_sql, (panda_id, now, jobset_id, n_ranges))
                rows = cur.fetchall()
                conn.commit()
                t1 = time.perf_counter()
                claim_latency.append(t1 - t0)
                if not rows:
                    break
                reports = [
                    (
                        f"{OBJECT_STORE}/raw/{jobset_id}/{range_id}.HITS.pool.root",
                        100_000 + start % 1000,
                        f"{zlib.adler32(str(range_id).encode()):08x}",
                        "1",
                        now,
                        range_id,
                        attempt,
                        panda_id,
                    )
                    for range_id, _file_id, start, _last, attempt in rows
                ]
                backend.begin(conn)
                cur.executemany(backend.finish_sql, reports)
                conn.commit()
                finish_latency.append(time.perf_counter() - t1)
                finished += len(rows)
            t_end = time.perf_counter()
        except BaseException as exc:
            barrier.abort()
            failures.append(exc)
            return
        finally:
            conn.close()
        with lock:
            stats.claim_latency += claim_latency
            stats.finish_latency += finish_latency
            stats.finished += finished
            stats.start = min(stats.start, t_start)
            stats.end = max(stats.end, t_end)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"raw SQL worker failed: {failures[0]!r}") from failures[0]
    return stats


# --- one measurement ------------------------------------------------------------------


def measure(backend: Backend, prefill: int, args: argparse.Namespace, log_path: Path) -> RunResult:
    workers = 1 if backend.name == "sqlite" else args.workers
    raw_connections = args.raw_connections or (
        1 if backend.name == "sqlite" else min(args.pilots, 8)
    )
    print(f"[{backend.name} prefill={prefill:,}] resetting schema", flush=True)
    backend.reset()
    t0 = time.perf_counter()
    backend.prefill(prefill)
    prefill_seconds = time.perf_counter() - t0
    rows_at_start = backend.count_ranges()
    print(
        f"[{backend.name} prefill={prefill:,}] {rows_at_start:,} rows in event_ranges"
        f" (pre-fill took {prefill_seconds:.1f} s); starting dispatcher",
        flush=True,
    )
    server = Server(backend, workers, log_path)
    try:
        queue = {"name": QUEUE, "jobseed": "es", "storages": {"es_events": [OBJECT_STORE]}}
        server.api("POST", "/queues", json=queue)
        task_id = submit_task(server, "bench-http", args.ranges, args.pilots)
        print(
            f"[{backend.name} prefill={prefill:,}] {args.pilots} pilots x"
            f" nRanges={args.n_ranges} over HTTP, {args.ranges:,} ranges"
            f" (workers={workers}, client processes={args.client_procs}, client={args.client})",
            flush=True,
        )
        sessions_before = backend.sessions()
        db_cpu_before = backend.server_cpu()
        wal_before = backend.wal()
        cpu_before = server.cpu_seconds()
        consumers, no_job = claim_consumers(server, backend, args.pilots, task_id)
        if no_job:
            print(
                f"[{backend.name} prefill={prefill:,}] WARNING: {no_job} of {args.pilots}"
                " getJob calls answered 'no jobs' while the task had consumers left;"
                " those pilots were given consumers that getJob had marked sent",
                flush=True,
            )
        pilots = run_pilots(
            server.base_url,
            consumers,
            task_id,
            args.n_ranges,
            args.client_procs,
            args.think_ms / 1000.0,
            args.client,
            args.pilot_priority == "raised",
        )
        print(
            f"[{backend.name} prefill={prefill:,}] pilots' scheduling: {pilots.priority}",
            flush=True,
        )
        # The CPU and WAL figures include the jobset's end (ranges to done, merge job),
        # which the dispatcher may finish after the pilots' last answers.
        concluded_after = wait_concluded(server, task_id, pilots.end)
        server_cpu = server.cpu_seconds() - cpu_before
        db_cpu_after = backend.server_cpu()
        wal_after = backend.wal()
        db_cpu = (
            sum(t - (db_cpu_before or {}).get(pid, 0.0) for pid, t in db_cpu_after.items())
            if db_cpu_after is not None
            else None
        )
        time.sleep(1.0)  # let the statistics collector catch up
        sessions_after = backend.sessions()
        sessions = (
            sessions_after - sessions_before - 1
            if sessions_before is not None and sessions_after is not None
            else None
        )
        summary = server.api("GET", f"/tasks/{task_id}")
        counts = summary.get("ranges", {})
        ended = sum(counts.get(state, 0) for state in ("finished", "done", "merged"))
        raw_task = submit_task(server, "bench-raw", args.ranges, args.pilots)
    finally:
        server.stop()
    raw_consumers = [(p, j) for p, j, _ in backend.consumers(raw_task)]
    print(
        f"[{backend.name} prefill={prefill:,}] raw SQL: {raw_connections} connection(s),"
        f" {args.ranges:,} ranges",
        flush=True,
    )
    raw = run_raw(backend, raw_consumers, args.n_ranges, raw_connections)
    e2e_seconds = max(pilots.end - pilots.start, 1e-9)
    raw_seconds = max(raw.end - raw.start, 1e-9)
    finished_per_s = pilots.finished / e2e_seconds
    raw_per_s = raw.finished / raw_seconds
    ms = 1000.0
    return RunResult(
        backend=backend.name,
        prefill=prefill,
        pilots=args.pilots,
        workers=workers,
        ranges=args.ranges,
        think_ms=args.think_ms,
        rows_at_start=rows_at_start,
        e2e_seconds=e2e_seconds,
        dispatched=pilots.dispatched,
        finished=pilots.finished,
        dispatched_per_s=pilots.dispatched / e2e_seconds,
        finished_per_s=finished_per_s,
        raw_seconds=raw_seconds,
        raw_finished=raw.finished,
        raw_per_s=raw_per_s,
        raw_connections=raw_connections,
        ratio=finished_per_s / raw_per_s if raw_per_s else float("nan"),
        get_p50_ms=percentile(pilots.get_latency, 50) * ms,
        get_p99_ms=percentile(pilots.get_latency, 99) * ms,
        get_dispatcher_p99_ms=percentile(pilots.get_dispatcher_latency, 99) * ms,
        get_arrival_p99_ms=percentile(pilots.get_arrival_latency, 99) * ms,
        first_get_p99_ms=percentile(pilots.first_get_latency, 99) * ms,
        update_p50_ms=percentile(pilots.update_latency, 50) * ms,
        update_p99_ms=percentile(pilots.update_latency, 99) * ms,
        raw_claim_p50_ms=percentile(raw.claim_latency, 50) * ms,
        raw_claim_p99_ms=percentile(raw.claim_latency, 99) * ms,
        raw_finish_p50_ms=percentile(raw.finish_latency, 50) * ms,
        raw_finish_p99_ms=percentile(raw.finish_latency, 99) * ms,
        server_cpu_us_per_range=server_cpu / max(pilots.finished, 1) * 1e6,
        client=args.client,
        pilot_priority=pilots.priority,
        client_cpu_us_per_range=pilots.cpu / max(pilots.finished, 1) * 1e6,
        db_cpu_us_per_range=(
            db_cpu / max(pilots.finished, 1) * 1e6 if db_cpu is not None else float("nan")
        ),
        errors=pilots.errors,
        refused=pilots.refused,
        getjob_no_job=no_job,
        oversized_answers=pilots.oversized,
        early_empty_answers=pilots.early_empty,
        first_error=pilots.first_error,
        task_ranges_ended=ended,
        prefill_seconds=prefill_seconds,
        db_sessions_opened=sessions,
        wal_bytes_per_range=(
            (wal_after - wal_before) / max(pilots.finished, 1)
            if wal_before is not None and wal_after is not None
            else float("nan")
        ),
        concluded_after_s=concluded_after,
    )


# --- report ---------------------------------------------------------------------------

COLUMNS = (
    ("backend", "backend", "{}"),
    ("prefill", "prefill", "{:,}"),
    ("pilots", "pilots", "{}"),
    ("wrk", "workers", "{}"),
    ("ranges", "ranges", "{:,}"),
    ("think", "think_ms", "{:g}"),
    ("disp/s", "dispatched_per_s", "{:,.0f}"),
    ("fin/s", "finished_per_s", "{:,.0f}"),
    ("raw/s", "raw_per_s", "{:,.0f}"),
    ("ratio", "ratio", "{:.2f}"),
    ("get p50", "get_p50_ms", "{:.1f}"),
    ("get p99", "get_p99_ms", "{:.1f}"),
    ("arr. get p99", "get_arrival_p99_ms", "{:.1f}"),
    ("disp. get p99", "get_dispatcher_p99_ms", "{:.1f}"),
    ("1st get p99", "first_get_p99_ms", "{:.1f}"),
    ("upd p50", "update_p50_ms", "{:.1f}"),
    ("upd p99", "update_p99_ms", "{:.1f}"),
    ("srv CPU us/rng", "server_cpu_us_per_range", "{:,.0f}"),
    ("cli CPU us/rng", "client_cpu_us_per_range", "{:,.0f}"),
    ("db CPU us/rng", "db_cpu_us_per_range", "{:,.0f}"),
    ("WAL B/rng", "wal_bytes_per_range", "{:,.0f}"),
    ("errors", "errors", "{}"),
)


def table(results: list[RunResult]) -> str:
    """A Markdown table of the results (latencies in ms)."""
    header = [title for title, _, _ in COLUMNS]
    rows = [[fmt.format(getattr(r, key)) for _, key, fmt in COLUMNS] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def target_report(results: list[RunResult]) -> list[str]:
    """How the figures compare with issue 2's targets (informative, never asserted)."""
    lines = []

    def mark(ok: bool) -> str:
        return "met" if ok else "NOT met"

    for r in results:
        where = f"{r.backend} prefill={r.prefill:,}"
        if r.backend == "postgresql":
            lines.append(
                f"{where}: >= {TARGET_RATE:,.0f} ranges/s end to end:"
                f" {r.finished_per_s:,.0f} -> {mark(r.finished_per_s >= TARGET_RATE)}"
            )
        lines.append(
            f"{where}: ratio >= {TARGET_RATIO}: {r.ratio:.2f} -> {mark(r.ratio >= TARGET_RATIO)}"
        )
        if r.pilots == 64 and not r.think_ms:
            lines.append(
                f"{where}: p99 getEventRanges < {TARGET_P99_MS:.0f} ms at 64 pilots:"
                f" {r.get_p99_ms:.1f} ms -> {mark(r.get_p99_ms < TARGET_P99_MS)}"
                f" (steady state, as the pilots read the answers; pilots' scheduling:"
                f" {r.pilot_priority}); at the answers' arrival in the pilots' sockets:"
                f" {r.get_arrival_p99_ms:.1f} ms; the dispatcher's own time:"
                f" {r.get_dispatcher_p99_ms:.1f} ms; first calls, all at once:"
                f" {r.first_get_p99_ms:.1f} ms"
            )
        if r.errors or r.refused or r.task_ranges_ended != r.ranges:
            lines.append(
                f"{where}: WARNING {r.errors} failed calls, {r.refused} refused reports,"
                f" {r.task_ranges_ended}/{r.ranges} ranges ended; first: {r.first_error}"
            )
        if r.db_sessions_opened:
            lines.append(
                f"{where}: the dispatcher opened {r.db_sessions_opened} new database sessions"
                f" while the pilots ran ({r.db_sessions_opened / max(r.finished, 1) * 16:.2f}"
                " per getEventRanges+updateEventRanges pair)"
            )
        lines.append(
            f"{where}: the jobset was concluded (ranges done, merge job made)"
            f" {r.concluded_after_s:.2f} s after the pilots' last answer; the CPU and WAL"
            " figures include that"
        )
        if r.getjob_no_job or r.oversized_answers or r.early_empty_answers:
            lines.append(
                f"{where}: PROTOCOL {r.getjob_no_job} getJob 'no jobs' answers with consumers"
                f" left, {r.oversized_answers} getEventRanges answers over nRanges,"
                f" {r.early_empty_answers} empty answers while ranges were ready"
            )
    for backend in sorted({r.backend for r in results}):
        by_prefill = {r.prefill: r for r in results if r.backend == backend}
        if 10_000 in by_prefill and 1_000_000 in by_prefill:
            small, big = by_prefill[10_000], by_prefill[1_000_000]
            drift = abs(big.finished_per_s - small.finished_per_s) / small.finished_per_s
            lines.append(
                f"{backend}: rate within {TARGET_PREFILL_DRIFT:.0%} between 10^4 and 10^6:"
                f" {small.finished_per_s:,.0f} vs {big.finished_per_s:,.0f} ({drift:.0%})"
                f" -> {mark(drift <= TARGET_PREFILL_DRIFT)}"
            )
    return lines


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{mem_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        memory = "unknown RAM"
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"{os.cpu_count()} CPUs ({model}), {memory}, Python {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}, load average at start"
        f" {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}"
    )


# --- command line ---------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--pilots", type=int, default=64, help="simulated pilots (default 64)")
    parser.add_argument(
        "--ranges", type=int, default=None, help="ranges per run (default 40960; --quick 4096)"
    )
    parser.add_argument("--n-ranges", type=int, default=16, help="nRanges per getEventRanges")
    parser.add_argument(
        "--prefill",
        default=None,
        help="comma-separated background ranges before each run"
        " (default 0,10000,1000000; --quick 0,10000)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="dispatcher processes (PostgreSQL only)"
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="pause of each pilot after each update (payload time; default 0: closed loop)",
    )
    parser.add_argument(
        "--client-procs", type=int, default=1, help="processes the pilots are spread over"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="the pilots' HTTP client: raw (lean HTTP/1.1 on uvloop, default) or httpx"
        " (what the first measurements used; about twice the client CPU)",
    )
    parser.add_argument(
        "--pilot-priority",
        choices=("normal", "raised"),
        default="raised",
        help="raised (default): the pilots run in processes and a session of their own"
        " scheduled ahead of the others (nice -10; needs root or CAP_SYS_NICE, else they"
        " run as with normal and the results say so), as pilots on machines of their own"
        " never wait for one of the dispatcher's cores; normal: they share the cores with"
        " the dispatcher and the database like any process, and their own waits for a"
        " core count in their timings (the dispatcher's own time is reported apart:"
        " disp. get p99)",
    )
    parser.add_argument(
        "--raw-connections",
        type=int,
        default=0,
        help="connections for the raw SQL run (default: 1 on SQLite, min(pilots, 8) on PG)",
    )
    parser.add_argument("--pg-url", default=os.environ.get("EVENTSERVICE_BENCH_PG", DEFAULT_PG_URL))
    parser.add_argument(
        "--allow-any-db", action="store_true", help="wipe --pg-url even if not named *bench*"
    )
    parser.add_argument(
        "--sqlite-path",
        type=Path,
        default=None,
        help="SQLite file to use (deleted and re-created; default: a temporary file)",
    )
    parser.add_argument("--quick", action="store_true", help="small run to validate the set-up")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)
    if args.ranges is None:
        args.ranges = 4096 if args.quick else 40960
    if args.prefill is None:
        args.prefill = "0,10000" if args.quick else "0,10000,1000000"
    args.prefill_levels = [int(float(x)) for x in str(args.prefill).split(",") if x.strip()]
    if args.pilots < 1 or args.ranges < 1 or args.workers < 1 or args.client_procs < 1:
        parser.error("--pilots, --ranges, --workers and --client-procs must be positive")
    if not 1 <= args.n_ranges <= 1000:
        parser.error("--n-ranges must be between 1 and 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"machine: {machine()}", flush=True)
    print(f"command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="eventservice-bench-"))
    backends: list[Backend] = []
    if args.backend in ("sqlite", "both"):
        backends.append(SQLiteBackend(args.sqlite_path or workdir / "bench.sqlite"))
    if args.backend in ("postgresql", "both"):
        backends.append(PostgresBackend(args.pg_url, args.allow_any_db))
    results: list[RunResult] = []
    for backend in backends:
        for prefill in args.prefill_levels:
            log_path = workdir / f"server-{backend.name}-{prefill}.log"
            result = measure(backend, prefill, args, log_path)
            results.append(result)
            print(table([result]), flush=True)
    print()
    print("End to end over HTTP vs the same claim/finish statements straight in SQL.")
    print("Rates in ranges/s; latencies per call in ms; srv CPU = dispatcher process CPU.")
    print(
        "get p50/p99: every getEventRanges but each pilot's first; 1st get p99: those first"
        " calls, which all pilots send at the same instant."
    )
    print(table(results))
    print()
    for line in target_report(results):
        print(line)
    print(f"\nserver logs: {workdir}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "argv": sys.argv,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                    "results": [asdict(r) for r in results],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
