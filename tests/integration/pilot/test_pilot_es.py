"""ES jobs end to end with a real dispatcher: ranges, stage-out, merge, errors, crash."""

from __future__ import annotations

import tarfile
from pathlib import Path

from tests.integration.pilot.conftest import es_command, run_pilot, storages

MERGE = "cat {inputs} > {output}"


def es_task(
    dispatcher,
    input_file: Path,
    n_events: int = 20,
    per_worker: int = 2,
    mode: str = "ok",
    **params,
) -> int:
    return dispatcher.submit(
        [{"url": str(input_file), "nEvents": n_events}],
        transformation=es_command(mode),
        mergeTransformation=MERGE,
        params={
            "nEventsPerJob": n_events,
            "nEventsPerWorker": per_worker,
            "esFraction": 1.0,
            **params,
        },
    )


def test_es_job_streams_ranges_and_merge_job_completes_the_task(
    dispatcher, stores, input_file, tmp_path
):
    dispatcher.add_queue("Q", corecount=2, zip_time_gap=1, heartbeat=2, storages=storages(stores))
    task_id = es_task(dispatcher, input_file)
    code, output = run_pilot(dispatcher, "Q", tmp_path / "pilot", "--cores", "2")
    assert code == 0, output
    task = dispatcher.task(task_id)
    assert task["state"] == "done", (task, output)
    assert set(task["ranges"]) == {"merged"} and task["ranges"]["merged"] == 10
    # Bundles (tars of per-range outputs) were shipped to es_events, named by protocol.
    bundles = list(stores["os"].rglob("*.tar"))
    assert bundles and all(b.parent.name == str(task["outputs"][0]["jobsetID"]) for b in bundles)
    members = []
    for bundle in bundles:
        with tarfile.open(bundle) as tar:
            members += tar.getnames()
    assert len(members) == 10 and all(m.endswith(".out") for m in members)
    # The merged output holds every range once, each with its input's PFN.
    final = task["outputs"][0]
    assert final["path"] and final["state"] == "merged"
    merged = Path(final["path"].removeprefix("file://")).read_text().splitlines()
    assert len(merged) == 10 and all(str(input_file) in line for line in merged)
    # Logs were shipped to the pl storage, one per job.
    logs = list(stores["logs"].rglob("*.log.tgz"))
    assert len(logs) == 2
    with tarfile.open(logs[0]) as tar:
        assert "pilot.log" in tar.getnames()
        text = tar.extractfile("pilot.log").read().decode()
    assert " job=" in text and " range=" in text
    # Nothing is left pending.
    assert not list((tmp_path / "pilot" / "pending-reports").glob("*.json"))
