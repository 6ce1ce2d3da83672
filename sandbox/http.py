"""The sandboxes' outgoing HTTP (Kommo's webhooks, Unisender's hooks): one TLS context for the process, since
loading the CA bundle costs 50-100 ms of CPU per client and a test run builds sandboxes hundreds of times."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def http_client(**options: Any) -> httpx.AsyncClient:
    """Idle connections expire before the service's 5-s keep-alive closes them: a delivery on a connection
    the service is closing fails with a ReadError, and the delivery counts of the tests would see it."""
    options.setdefault("limits", httpx.Limits(keepalive_expiry=4.0))
    return httpx.AsyncClient(verify=tls_context(), **options)
