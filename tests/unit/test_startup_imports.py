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

#: Parses the command line as the console script does (``--help``: Typer builds every
#: option's converter, then stops), then imports what the command's body imports lazily.
PROBE = """
import importlib, json, sys
command, body, heavy = (json.loads(arg) for arg in sys.argv[1:4])
sys.argv = ["eventservice", *command, "--help"]
from eventservice.cli.main import main
try:
    main()
except SystemExit:
    pass
for module in body:
    importlib.import_module(module)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


#: What a pilot imports to run its jobs: the loop, the client, each executor, the storage.
PILOT_MODULES = [
    "eventservice.pilot.main",
    "eventservice.client.panda",
    "eventservice.pilot.executors.eventservice",
    "eventservice.pilot.executors.merge",
    "eventservice.pilot.executors.generic",
    "eventservice.storage",
]


def case(*command: str, body: list[str]) -> object:
    return pytest.param(list(command), body, id=" ".join(command))


@pytest.mark.parametrize(
    ("command", "body"),
    [
        case("pilot", body=PILOT_MODULES),
        case("payload", "simulate", body=["eventservice.payload.simulate"]),
        case("payload", "merge", body=["eventservice.payload.merge"]),
        case("payload", "verify", body=["eventservice.payload.verify"]),
    ],
)
def test_commands_a_pilot_starts_load_no_heavy_library(command: list[str], body: list[str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(command), json.dumps(body), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = json.loads(probe.stdout.strip().splitlines()[-1])
    assert loaded == [], f"`eventservice {' '.join(command)}` imports {loaded}"


def test_the_pilot_leaves_out_httpxs_command_line_client():
    """httpx's CLI (click, rich, pygments) costs every pilot 0.1 s of CPU at start."""
    probe = (
        "import json, sys, importlib\n"
        f"for module in {PILOT_MODULES!r}:\n"
        "    importlib.import_module(module)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'click', 'rich', 'pygments'})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
