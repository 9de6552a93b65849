"""Work first: the thread pool that runs PanDA methods, requests for work ahead of reports.

A pilot waiting for getJob or getEventRanges has idle cores; a pilot whose report waits
a few milliseconds more loses nothing, since its output is already in the object store.
Under load the dispatcher therefore serves requests for work before everything else,
and runs few requests at once, so that each one is quick: with many at once on few
cores every request waits for the others, and a request for work with them.

A report is never starved: once the oldest one has waited ``max_delay`` seconds it goes
first. Pilots send their next request for work only after their report is answered,
so in steady state both kinds are answered at the same rate.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Call:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    future: Future[Any] = field(default_factory=Future)


class _WorkFirstQueue(Generic[T]):
    """Two FIFO queues, urgent (requests for work) and normal, and the order between them:
    urgent first, unless the oldest normal entry has waited longer than ``max_delay``."""

    def __init__(self, max_delay: float) -> None:
        self.max_delay = max_delay
        self.urgent: deque[tuple[float, T]] = deque()
        self.normal: deque[tuple[float, T]] = deque()

    def __bool__(self) -> bool:
        return bool(self.urgent or self.normal)

    def put(self, urgent: bool, item: T) -> None:
        (self.urgent if urgent else self.normal).append((time.monotonic(), item))

    def pop(self) -> T:
        """The next entry; the queue must not be empty."""
        if self.normal and (
            not self.urgent or time.monotonic() - self.normal[0][0] > self.max_delay
        ):
            return self.normal.popleft()[1]
        return self.urgent.popleft()[1]

    def drain(self) -> list[T]:
        """Take every entry out, in no particular order."""
        items = [item for _, item in (*self.urgent, *self.normal)]
        self.urgent.clear()
        self.normal.clear()
        return items


class WorkFirstExecutor(Executor):
    """An executor of ``threads`` threads with two queues: urgent (work) and normal.

    :meth:`submit` queues a normal call, :meth:`submit_urgent` a request for work. Within
    a queue calls run in arrival order; urgent calls go first unless the oldest normal
    call has waited longer than ``max_delay`` seconds.
    """

    def __init__(self, threads: int, max_delay: float = 1.0, name: str = "panda") -> None:
        if threads < 1:
            raise ValueError("threads must be at least 1")
        self._ready = threading.Condition()
        self._calls: _WorkFirstQueue[_Call] = _WorkFirstQueue(max_delay)
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue a normal call (a report, a status change, a read)."""
        return self._queue(False, _Call(fn, args, kwargs))

    def submit_urgent(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue a request for work: it runs before the normal calls waiting."""
        return self._queue(True, _Call(fn, args, kwargs))

    def pending(self) -> tuple[int, int]:
        """How many (urgent, normal) calls wait for a thread."""
        with self._ready:
            return len(self._calls.urgent), len(self._calls.normal)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; run (or with ``cancel_futures`` cancel) those queued."""
        with self._ready:
            self._closed = True
            if cancel_futures:
                for call in self._calls.drain():
                    call.future.cancel()
            self._ready.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def _queue(self, urgent: bool, call: _Call) -> Future[Any]:
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._calls.put(urgent, call)
            self._ready.notify()
        return call.future

    def _next(self) -> _Call | None:
        """The call to run next (``None``: shut down and drained); waits for one."""
        with self._ready:
            while not self._calls:
                if self._closed:
                    return None
                self._ready.wait()
            return self._calls.pop()

    def _work(self) -> None:
        while (call := self._next()) is not None:
            if not call.future.set_running_or_notify_cancel():
                continue
            try:
                result = call.function(*call.args, **call.kwargs)
            except BaseException as error:  # handed to the awaiting request, as the stdlib does
                call.future.set_exception(error)
            else:
                call.future.set_result(result)


class InlineWorkFirst:
    """The same order for methods run on the event loop itself (SQLite: one writer).

    :meth:`call` queues a call and waits for it; the loop runs queued calls for up to
    :attr:`SLICE_SECONDS` per iteration, between its polls for new requests, so a request
    for work that arrives while reports wait goes before them (with the same
    ``max_delay`` for reports).
    """

    #: How long the loop runs queued calls before it looks for new requests again.
    SLICE_SECONDS = 0.002

    def __init__(self, max_delay: float = 1.0) -> None:
        self._calls: _WorkFirstQueue[tuple[_Call, asyncio.Future[Any]]] = _WorkFirstQueue(max_delay)
        self._scheduled = False

    async def call(self, urgent: bool, fn: Callable[..., Any], /, *args: Any) -> Any:
        """Run ``fn(*args)`` on the loop in its turn; its result or its exception."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._calls.put(urgent, (_Call(fn, args, {}), waiter))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._run_one)
        return await waiter

    def _run_one(self) -> None:
        deadline = time.monotonic() + self.SLICE_SECONDS
        while self._calls:
            call, waiter = self._calls.pop()
            if not waiter.cancelled():  # the client went away meanwhile
                try:
                    waiter.set_result(call.function(*call.args))
                except Exception as error:
                    waiter.set_exception(error)
            if time.monotonic() > deadline:
                break
        if self._calls:
            # Let the loop read new requests (and queue them) before going on.
            asyncio.get_running_loop().call_soon(self._run_one)
        else:
            self._scheduled = False
