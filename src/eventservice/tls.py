"""The TLS trust of this project's HTTP clients (the pilot's, the demo's)."""

from __future__ import annotations

import ssl


def tls_context(base_url: str) -> ssl.SSLContext | bool:
    """The TLS trust for ``base_url``, as httpx's ``verify``: the default store, or
    none for plain HTTP.

    Loading the certificate store costs 35-80 ms of CPU, paid by every pilot at start. A
    client of an ``http://`` dispatcher never makes a TLS connection; its context trusts
    no one, so one made by mistake fails rather than goes unverified.
    """
    if base_url.startswith("http://"):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True
