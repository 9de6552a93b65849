"""The commands a pilot starts over and over import only what they need.

A pilot, each payload and each merge is a new Python process, started again after every
preemption; what they import is CPU that never reaches an output (BENCHMARKS.md,
preemption). The dispatcher's libraries, and pydantic (which Typer 0.29 pulls in to
coerce every option), have no business there.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules none of these commands may load.
HEAVY = ("pydantic", "fastapi", "sqlalchemy", "alembic", "uvicorn")

PROBE = """
import json, sys
command, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["eventservice", *command]
from eventservice.cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


@pytest.mark.parametrize(
    "command",
    [
        ["pilot", "--help"],
        ["payload", "simulate", "--help"],
        ["payload", "merge", "--help"],
        ["payload", "verify", "--help"],
    ],
    ids=" ".join,
)
def test_commands_a_pilot_starts_load_no_heavy_library(command: list[str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(command), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`eventservice {' '.join(command)}` imports {loaded}"
