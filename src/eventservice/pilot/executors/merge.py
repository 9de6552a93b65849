"""The ES merge executor: collect per-range outputs, merge them, ship the final file.

Inputs come from the ``es_events_read`` storage (the URLs in ``inFilesURL``), are
verified against ``fsize``/``checksum``, tar bundles are unpacked, and only files
whose range ID is in the job's ``eventRangeIDs`` are kept: a bundle may also hold
outputs of attempts the dispatcher refused (docs/protocol.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from eventservice.errors import StorageError
from eventservice.pilot import codes
from eventservice.pilot.executors.base import (
    JobContext,
    JobResult,
    fill_template,
    run_command,
    stage_in,
    stage_out_final,
)

log = logging.getLogger(__name__)


def range_id_of(path: Path) -> str:
    """The range ID a per-range output is named after (``<eventRangeID>.<name>``)."""
    return path.name.split(".", 1)[0]


def _natural(path: str) -> tuple[int | str, ...]:
    """Sort key putting ``1-2-3-10-1.x`` after ``1-2-3-9-1.x``."""
    head = Path(path).name.split(".", 1)[0]
    return tuple(int(p) if p.isdigit() else p for p in head.split("-"))


def collect_inputs(ctx: JobContext, staged: list[Path], dest: Path) -> dict[str, list[Path]]:
    """Unpack bundles; map each staged input LFN to the accepted per-range files it holds."""
    from eventservice.storage import extract_bundle

    wanted = ctx.job.event_range_ids
    result: dict[str, list[Path]] = {}
    for path in staged:
        if path.name.endswith(".tar"):
            members = [Path(p) for p in extract_bundle(path, dest / path.name.removesuffix(".tar"))]
            path.unlink(missing_ok=True)
        else:
            members = [path]
        kept = [m for m in members if not wanted or range_id_of(m) in wanted]
        dropped = len(members) - len(kept)
        if dropped:
            log.info("%s: ignoring %d file(s) of ranges not accepted", path.name, dropped)
        result[path.name] = sorted(kept)
    return result


def run_merge(ctx: JobContext) -> JobResult:
    """Run an ES merge job."""
    job = ctx.job
    inputs_dir = ctx.job_dir / "merge-inputs"
    try:
        staged = stage_in(ctx, list(job.inputs), inputs_dir)
        per_input = collect_inputs(ctx, staged, inputs_dir)
    except (StorageError, OSError) as exc:
        log.error("merge stage-in failed: %s", exc)
        return JobResult("failed", error_code=codes.JOB_STAGEIN_FAILED, error_diag=str(exc))
    found = {range_id_of(p) for files in per_input.values() for p in files}
    missing = sorted(job.event_range_ids - found)
    if missing:
        diag = f"{len(missing)} accepted range(s) have no output, e.g. {missing[0]}"
        log.error("merge inputs incomplete: %s", diag)
        return JobResult("failed", error_code=codes.JOB_STAGEIN_FAILED, error_diag=diag)
    outputs = []
    cpu = 0.0
    for lfn in job.out_files:
        names = job.write_to_file.get(lfn) or list(per_input)
        files = sorted(
            (str(p) for name in names for p in per_input.get(Path(name).name, [])), key=_natural
        )
        command = fill_template(job.transformation, files, str(ctx.job_dir / lfn))
        code, killed, used = run_command(ctx, command)
        cpu += used
        if killed or code != 0:
            return JobResult(
                "failed",
                error_code=codes.JOB_KILLED if killed else codes.JOB_PAYLOAD_FAILED,
                error_diag=f"merge payload exited with {code}",
                exit_code=None if killed else code,
            )
        try:
            outputs.append(stage_out_final(ctx, ctx.job_dir / lfn, lfn))
        except (StorageError, OSError) as exc:
            log.error("merge stage-out failed: %s", exc)
            return JobResult("failed", error_code=codes.JOB_STAGEOUT_FAILED, error_diag=str(exc))
    return JobResult("finished", n_events=job.n_events or 0, output_files=outputs, cpu_seconds=cpu)
