"""Clients for the dispatcher's PanDA protocol (DESIGN §5)."""

from __future__ import annotations

import sys

# httpx imports its own command-line client (click, rich, pygments: 0.1 s of CPU, paid by
# every pilot at start) unless that import fails, and a None in sys.modules makes it
# fail. Nothing here uses that client; this runs before the client module imports httpx.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from eventservice.client.panda import PandaClient, RangeUpdateResult, RetryPolicy  # noqa: E402

__all__ = ["PandaClient", "RangeUpdateResult", "RetryPolicy"]
