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
    return httpx.AsyncClient(verify=tls_context(), **options)
