"""WorkFirstExecutor and InlineWorkFirst: requests for work first, reports never starved."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import CancelledError

import pytest

from eventservice.server.scheduling import InlineWorkFirst, WorkFirstExecutor


def _blocked(executor: WorkFirstExecutor) -> threading.Event:
    """Occupy the executor's only thread until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(5)

    executor.submit(hold)
    assert started.wait(5)
    return release


def test_requests_for_work_run_before_waiting_reports() -> None:
    executor = WorkFirstExecutor(1, max_delay=60)
    order: list[str] = []
    release = _blocked(executor)
    futures = [
        executor.submit(order.append, "report-1"),
        executor.submit(order.append, "report-2"),
        executor.submit_urgent(order.append, "work-1"),
        executor.submit_urgent(order.append, "work-2"),
    ]
    assert executor.pending() == (2, 2)
    release.set()
    for future in futures:
        future.result(5)
    assert order == ["work-1", "work-2", "report-1", "report-2"]
    executor.shutdown()


def test_a_report_waiting_longer_than_max_delay_goes_first() -> None:
    executor = WorkFirstExecutor(1, max_delay=0.0)
    order: list[str] = []
    release = _blocked(executor)
    report = executor.submit(order.append, "report")
    work = executor.submit_urgent(order.append, "work")
    release.set()
    report.result(5)
    work.result(5)
    assert order == ["report", "work"]
    executor.shutdown()


def test_results_and_errors_reach_the_caller() -> None:
    executor = WorkFirstExecutor(2)
    assert executor.submit(pow, 2, 10).result(5) == 1024
    with pytest.raises(ZeroDivisionError):
        executor.submit_urgent(lambda: 1 / 0).result(5)
    executor.shutdown()


def test_shutdown_runs_or_cancels_what_is_queued() -> None:
    executor = WorkFirstExecutor(1)
    release = _blocked(executor)
    queued = executor.submit(str, 1)
    closing = threading.Thread(target=executor.shutdown, kwargs={"cancel_futures": True})
    closing.start()
    closing.join(0.2)
    release.set()
    closing.join(5)
    assert not closing.is_alive()
    with pytest.raises(CancelledError):
        queued.result(5)
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(str, 2)


def test_at_least_one_thread() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WorkFirstExecutor(0)


def _inline_order(max_delay: float) -> list[str]:
    """Queue two reports, then two requests for work, all before the loop runs any."""
    lane = InlineWorkFirst(max_delay=max_delay)
    order: list[str] = []

    async def main() -> None:
        calls = [
            lane.call(False, order.append, "report-1"),
            lane.call(False, order.append, "report-2"),
            lane.call(True, order.append, "work-1"),
            lane.call(True, order.append, "work-2"),
        ]
        await asyncio.gather(*calls)

    asyncio.run(main())
    return order


def test_inline_requests_for_work_run_before_waiting_reports() -> None:
    assert _inline_order(max_delay=60) == ["work-1", "work-2", "report-1", "report-2"]


def test_inline_reports_waiting_longer_than_max_delay_go_first() -> None:
    assert _inline_order(max_delay=-1) == ["report-1", "report-2", "work-1", "work-2"]


def test_inline_results_and_errors_reach_the_caller() -> None:
    lane = InlineWorkFirst()

    async def main() -> tuple[int, BaseException]:
        value = await lane.call(True, pow, 2, 10)
        try:
            await lane.call(False, lambda: 1 / 0)
        except ZeroDivisionError as error:
            return value, error
        raise AssertionError("no error")

    value, error = asyncio.run(main())
    assert value == 1024 and isinstance(error, ZeroDivisionError)
