"""The generic executor: a normal job — stage in, run the command, stage out."""

from __future__ import annotations

import logging

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


def run_generic(ctx: JobContext) -> JobResult:
    """Run a normal (non-ES) job."""
    job = ctx.job
    try:
        local_inputs = stage_in(ctx, list(job.inputs), ctx.job_dir)
    except (StorageError, OSError) as exc:
        log.error("stage-in failed: %s", exc)
        return JobResult("failed", error_code=codes.JOB_STAGEIN_FAILED, error_diag=str(exc))
    output = job.out_files[0] if job.out_files else None
    command = fill_template(
        job.transformation,
        [str(p) for p in local_inputs],
        str(ctx.job_dir / output) if output else None,
    )
    code, killed, cpu = run_command(ctx, command)
    if killed:
        return JobResult(
            "failed",
            error_code=codes.JOB_KILLED,
            error_diag=f"payload stopped: {ctx.control.reason}",
        )
    if code != 0:
        return JobResult(
            "failed",
            error_code=codes.JOB_PAYLOAD_FAILED,
            error_diag=f"payload exited with {code}",
            exit_code=code,
            cpu_seconds=cpu,
        )
    try:
        outputs = [stage_out_final(ctx, ctx.job_dir / lfn, lfn) for lfn in job.out_files]
    except (StorageError, OSError) as exc:
        log.error("stage-out failed: %s", exc)
        return JobResult("failed", error_code=codes.JOB_STAGEOUT_FAILED, error_diag=str(exc))
    return JobResult("finished", n_events=job.n_events or 0, output_files=outputs, cpu_seconds=cpu)
