"""Kommo API v4 routes served under ``/{host}/...`` (or ``/{subdomain}/...`` for accounts on the base domain):
token endpoint, account, contacts, contact notes, custom fields, users, webhooks. The route parameter
``subdomain`` is that path segment, a host or a bare subdomain (``KommoSandboxState.account_for_host``)."""

from __future__ import annotations

from fastapi import APIRouter

from . import account, contacts, notes, token, webhooks
from .common import kommo, read_json, where
from .contacts import create_response, update_response

__all__ = ["create_response", "kommo", "read_json", "router", "update_response", "where"]

router = APIRouter()
# Order matters: ``/contacts/custom_fields`` (account) and ``/contacts/notes`` (notes) must be matched before
# ``/contacts/{cid}`` (contacts).
for part in (token, account, notes, contacts, webhooks):
    router.include_router(part.router)
