"""What the demo's quasi-random pilot lifetimes do to file-level jobs: a model, not a run.

``preemption.py`` kills pilots after lifetimes from :class:`PilotDeaths`: independent
exponential draws, or with ``--lifetime-draws spread`` (its default until the
seventeenth session) exponential quantiles in golden-ratio steps, so a short run sees
about the nominal mean. The steps
also space long lifetimes evenly: after a few short-lived pilots a long-lived one is
sure to come, where independent draws ("killed at random") can bring a streak of short
ones. File-level jobs, which need one pilot to outlive the whole job, gain from that;
the event service, which loses about half a range per death however the deaths are
spaced, does not.

This replays the benchmark's file-level mode in the abstract, many times over: ``files``
jobs of ``job`` seconds each, taken by ``pilots`` pilots (one job at a time, ``start``
seconds to begin one), a dead pilot replaced at once and its job put back. It prints
the useful fraction of all CPU spent over the runs, for spread lifetimes and for
independent exponential draws (``--lifetime-draws independent``), next to the restart
model of ``preemption.py``.

Run: ``python benchmarks/lifetime_sampling.py [--runs 4000]`` (a few seconds).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator

from preemption import restart_useful_fraction

from eventservice.demo.chaos import PilotDeaths


def pilot_lifetimes(seed: int, mean: float, spread: bool) -> Iterator[float]:
    """The lifetimes the demo gives its pilots, in order (``PilotDeaths.spread``)."""
    deaths = PilotDeaths(random.Random(seed), lifetime_mean=mean, spread=spread)
    while True:
        yield deaths.next_lifetime()


def file_level_run(
    lifetimes: Iterator[float], files: int, pilots: int, job: float, start: float
) -> tuple[float, float]:
    """``(CPU in outputs, CPU spent)`` of one run of ``files`` restartable jobs."""
    queued = files
    # Per pilot slot: when it can next take a job (None: idle, nothing queued) and
    # when its current pilot dies.
    free: list[float | None] = [0.0] * pilots
    death = [next(lifetimes) for _ in range(pilots)]
    done, spent = 0, 0.0
    while done < files:
        slot = min((i for i, at in enumerate(free) if at is not None), key=lambda i: free[i])
        now = free[slot]
        assert now is not None
        if not queued:
            free[slot] = None
            continue
        queued -= 1
        if now + start + job <= death[slot]:
            spent += start + job
            free[slot] = now + start + job
            done += 1
            continue
        # The pilot dies first: its work is lost, its job queued again, a new pilot
        # starts at once, and idle slots wake up for the job.
        died = death[slot]
        spent += died - now
        queued += 1
        death[slot] = died + next(lifetimes)
        free = [died if at is None else at for at in free]
        free[slot] = died
    return files * job, spent


def pooled_useful(args: argparse.Namespace, spread: bool) -> float:
    """Useful fraction of all the CPU spent over ``args.runs`` runs (seeds 0, 1, ...)."""
    totals = [
        file_level_run(
            pilot_lifetimes(seed, args.mean, spread), args.files, args.pilots, args.job, args.start
        )
        for seed in range(args.runs)
    ]
    return sum(t[0] for t in totals) / sum(t[1] for t in totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--mean", type=float, default=30.0, help="mean pilot lifetime, s")
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--pilots", type=int, default=2)
    parser.add_argument("--job", type=float, default=44.0, help="a file-level job's CPU, s")
    parser.add_argument("--start", type=float, default=1.0, help="a job's start-up, s")
    args = parser.parse_args()
    model = restart_useful_fraction(args.job, args.mean)
    print(f"restart model (x / (e^x - 1), x = {args.job:g} / {args.mean:g}): {model:.1%}")
    for spread in (True, False):
        useful = pooled_useful(args, spread)
        kind = "spread" if spread else "independent"
        print(f"{kind:>11} lifetimes: file-level useful CPU {useful:.1%} over {args.runs} runs")


if __name__ == "__main__":
    main()
