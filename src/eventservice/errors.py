"""One exception tree for the whole project.

Every layer raises a subclass of :class:`EventServiceError`; the HTTP layer maps
dispatcher errors to answers in exactly one place (``server/errors.py``).
"""

from __future__ import annotations


class EventServiceError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidInput(EventServiceError):
    """A request or argument is malformed or out of range (PanDA StatusCode 50)."""


class MissingKey(InvalidInput):
    """A required request field is absent (PanDA StatusCode 80)."""


class NotFound(EventServiceError):
    """An ID (task, job, queue, event range) names nothing that exists."""


class Conflict(EventServiceError):
    """The request is well formed but the current state does not allow it."""


class IllegalTransition(Conflict):
    """A state change that the state machine forbids."""


class StaleAttempt(Conflict):
    """An update names an attempt of an event range that is no longer current."""


class NotOwner(Conflict):
    """An update for an event range held by another consumer job."""


class StoreError(EventServiceError):
    """The database could not be reached or refused an operation."""


class StorageError(EventServiceError):
    """A transfer to or from an object store failed."""


class ChecksumMismatch(StorageError):
    """A transferred object's size or adler32 differs from what was expected."""


class DispatcherUnavailable(EventServiceError):
    """The dispatcher could not be reached after all retries."""


class PayloadError(EventServiceError):
    """A payload failed or spoke something outside the channel grammar."""


class ChannelMessageError(PayloadError):
    """A payload channel message does not follow the grammar of DESIGN §7."""


class MergeError(EventServiceError):
    """Merging per-range outputs failed (duplicates, missing events, bad input)."""
