"""The storage router: activities → ordered endpoints, with retries, fallback and cool-down.

A queue maps each activity (``pr``, ``es_events``, ``es_failover``, ``es_events_read``,
``pw``, ``pl``) to an ordered list of base URLs. An upload tries the activity's
endpoints in order, then each fallback activity's. On one endpoint a transient error
(connection, timeout, corrupted transfer) is retried with exponential backoff; a
permanent one (wrong credentials, missing bucket, unwritable or full disk) moves on
at once. An endpoint that failed is skipped for ``cooldown`` seconds while others
remain; when only cooling endpoints are left they are tried once more, as a last
resort. When everything fails, :class:`AllEndpointsFailed` names each endpoint and
why it failed.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from eventservice.domain.params import ACTIVITIES
from eventservice.errors import InvalidInput, StorageError
from eventservice.storage.backends import make_endpoint
from eventservice.storage.bundle import BundleError, TarStream
from eventservice.storage.config import Options, load_config_file, options_for
from eventservice.storage.endpoint import Endpoint, StoredObject
from eventservice.storage.errors import (
    AllEndpointsFailed,
    EndpointError,
    SourceUnreadable,
    StorageConfigError,
)
from eventservice.storage.naming import check_object_name
from eventservice.storage.reading import fetch


def retryable(exc: StorageError) -> bool:
    """Whether trying the same operation on the same endpoint again may succeed."""
    if isinstance(exc, (StorageConfigError, SourceUnreadable)):
        return False
    if isinstance(exc, EndpointError):
        return exc.retryable
    return True  # ChecksumMismatch and unclassified failures: the next try may be clean


class StorageRouter:
    """Transfers for one queue's ``storages`` (activity → ordered base URLs).

    ``retries`` is how many times a transient failure is retried on the same endpoint
    (so ``1 + retries`` tries), waiting ``backoff * 2**n`` seconds (at most
    ``max_backoff``, with jitter) in between. ``options`` maps URL prefixes to
    storage options, on top of the environment and the config file (see
    :mod:`eventservice.storage.config`).
    """

    def __init__(
        self,
        storages: Mapping[str, Sequence[str]],
        cooldown: float = 60.0,
        retries: int = 3,
        *,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        options: Options | None = None,
        config_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0 or cooldown < 0 or backoff < 0:
            raise InvalidInput("retries, cooldown and backoff must not be negative")
        self.storages = _validate(storages)
        self.cooldown = cooldown
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._layers: list[Options] = [load_config_file(config_file)]
        if options:
            self._layers.append(options)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint] = {}
        self._cooling: dict[str, tuple[float, str]] = {}

    @property
    def object_store_ids(self) -> dict[str, int]:
        """A stable integer per distinct base URL, first-seen over ACTIVITIES, from 1."""
        ids: dict[str, int] = {}
        for activity in ACTIVITIES:
            for base in self.storages.get(activity, []):
                ids.setdefault(base, len(ids) + 1)
        return ids

    def endpoints_for(self, activity: str, fallback: Iterable[str] = ()) -> list[str]:
        """Base URLs an upload for ``activity`` would try, in order, without duplicates."""
        ordered: list[str] = []
        for name in (activity, *fallback):
            if name not in ACTIVITIES:
                raise InvalidInput(f"unknown storage activity {name!r}")
            ordered.extend(b for b in self.storages.get(name, []) if b not in ordered)
        return ordered

    def cooling_down(self) -> dict[str, str]:
        """Endpoints now skipped, with the failure that put them there."""
        now = self._clock()
        with self._lock:
            return {b: why for b, (until, why) in self._cooling.items() if until > now}

    def upload(
        self,
        local_path: str | os.PathLike[str],
        name: str,
        activity: str = "es_events",
        fallback: Sequence[str] = ("es_failover",),
    ) -> StoredObject:
        """Store ``local_path`` as object ``name`` on the first endpoint that takes it.

        The returned object is verified stored. Raises :class:`SourceUnreadable` when
        the local file cannot be read, :class:`AllEndpointsFailed` (a StorageError)
        listing each endpoint's failure otherwise.
        """
        check_object_name(name)
        local = Path(local_path)
        if not local.is_file():
            raise SourceUnreadable(f"cannot read local file {local}: not a regular file")
        return self._upload(
            f"upload of {local} as {name}",
            lambda endpoint: endpoint.put(local, name),
            activity,
            fallback,
        )

    def upload_bundle(
        self,
        paths: Sequence[str | os.PathLike[str]],
        name: str,
        activity: str = "es_events",
        fallback: Sequence[str] = ("es_failover",),
    ) -> StoredObject:
        """Store the plain tar of ``paths`` (members named by basename) as object ``name``.

        The tar is streamed into the store as it is made (:class:`TarStream`): no
        local tar is written and read back. Each try reads the member files afresh,
        with the same retries, fallback and verification as :meth:`upload`. Raises
        :class:`BundleError` before any endpoint is tried when a member is missing,
        not a regular file or a duplicate basename, and as soon as a member cannot
        be read during a try (no endpoint is blamed for that);
        :class:`AllEndpointsFailed` when every endpoint fails.
        """
        check_object_name(name)
        bundle = TarStream(paths, label=f"bundle {name}")  # refuses bad members up front
        return self._upload(
            f"upload of a bundle of {len(paths)} file(s) as {name}",
            lambda endpoint: endpoint.put_stream(bundle.again(), name),
            activity,
            fallback,
        )

    def upload_many(
        self,
        items: Sequence[tuple[str | os.PathLike[str], str]],
        activity: str = "es_events",
        fallback: Sequence[str] = ("es_failover",),
        workers: int = 4,
    ) -> list[StoredObject | StorageError]:
        """Upload many files with ``workers`` parallel transfers; results in input order."""
        for _, name in items:
            check_object_name(name)
        self.endpoints_for(activity, fallback)

        def one(item: tuple[str | os.PathLike[str], str]) -> StoredObject | StorageError:
            try:
                return self.upload(item[0], item[1], activity, fallback)
            except StorageError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(one, items))

    def download(
        self,
        url: str,
        dest: str | os.PathLike[str],
        size: int | None = None,
        adler32: str | None = None,
    ) -> Path:
        """Copy ``url`` to ``dest`` (file path or existing directory), verifying size/adler32.

        Transient failures and checksum mismatches are retried; raises
        :class:`ChecksumMismatch`, ``ObjectMissing`` or another StorageError.
        """
        attempts = 1 + self.retries
        for attempt in range(1, attempts + 1):
            try:
                return fetch(url, Path(dest), size=size, adler32=adler32, layers=self._layers)
            except StorageError as exc:
                if not retryable(exc) or attempt == attempts:
                    raise
                self._sleep(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def endpoint(self, base: str) -> Endpoint:
        """The endpoint object for ``base`` (created once, then reused)."""
        with self._lock:
            if base not in self._endpoints:
                self._endpoints[base] = make_endpoint(base, options_for(base, *self._layers))
            return self._endpoints[base]

    def _upload(
        self,
        what: str,
        put: Callable[[Endpoint], StoredObject],
        activity: str,
        fallback: Sequence[str],
    ) -> StoredObject:
        candidates = self.endpoints_for(activity, fallback)
        if not candidates:
            chain = ", ".join((activity, *fallback))
            raise StorageConfigError(f"no storage endpoint configured for {chain}")
        failures: list[tuple[str, str]] = []
        deferred: list[str] = []
        cooling = self.cooling_down()
        for base in candidates:
            if base in cooling:
                deferred.append(base)
                continue
            stored = self._try(base, put, 1 + self.retries, failures)
            if stored is not None:
                return stored
        for base in deferred:  # last resort: every usable endpoint failed or none is left
            stored = self._try(base, put, 1, failures, note=" (after cool-down skip)")
            if stored is not None:
                return stored
        raise AllEndpointsFailed(what, failures)

    def _try(
        self,
        base: str,
        put: Callable[[Endpoint], StoredObject],
        attempts: int,
        failures: list[tuple[str, str]],
        note: str = "",
    ) -> StoredObject | None:
        for attempt in range(1, attempts + 1):
            try:
                stored = put(self.endpoint(base))
            except (SourceUnreadable, BundleError):
                raise  # the local side is at fault: no endpoint to blame or to try next
            except StorageError as exc:
                if retryable(exc) and attempt < attempts:
                    self._sleep(self._delay(attempt))
                    continue
                tries = f" after {attempt} tries" if attempt > 1 else ""
                failures.append((base, f"{exc}{tries}{note}"))
                self._cool(base, str(exc))
                return None
            self._recover(base)
            return stored
        return None  # pragma: no cover - the loop always returns

    def _delay(self, attempt: int) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)

    def _cool(self, base: str, reason: str) -> None:
        with self._lock:
            self._cooling[base] = (self._clock() + self.cooldown, reason)

    def _recover(self, base: str) -> None:
        with self._lock:
            self._cooling.pop(base, None)


def _validate(storages: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    if not isinstance(storages, Mapping):
        raise InvalidInput("storages must map an activity to a list of URLs")
    result: dict[str, list[str]] = {}
    for activity, urls in storages.items():
        if activity not in ACTIVITIES:
            raise InvalidInput(f"unknown storage activity {activity!r}; known: {ACTIVITIES}")
        if isinstance(urls, str) or not all(isinstance(u, str) and u for u in urls):
            raise InvalidInput(f"storages[{activity!r}] must be a list of URL strings")
        result[activity] = list(urls)
    return result
