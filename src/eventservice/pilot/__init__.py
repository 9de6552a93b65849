"""The pilot: pulls jobs and event ranges, runs payloads, streams outputs (DESIGN §6).

Depends on ``client``, ``storage`` and ``payload.channel`` only; never on the
dispatcher, the store or the server.
"""

from __future__ import annotations
