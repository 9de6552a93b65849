"""Clients for the dispatcher's PanDA protocol (DESIGN §5)."""

from __future__ import annotations

from eventservice.client.panda import PandaClient, RangeUpdateResult, RetryPolicy

__all__ = ["PandaClient", "RangeUpdateResult", "RetryPolicy"]
