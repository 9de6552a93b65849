"""The dispatcher: event-level bookkeeping, job seeding, leases and merge creation."""

from eventservice.dispatcher.service import Dispatcher
from eventservice.dispatcher.settings import DispatcherSettings

__all__ = ["Dispatcher", "DispatcherSettings"]
