"""The public URLs of an account: its signed connect link and the hook URLs Kommo and Unisender post to."""

from __future__ import annotations

from app.context import ProcessContext
from app.security.tokens import sign_connect_link


def _public(pc: ProcessContext) -> str:
    return pc.settings.public_url.rstrip("/")


def auth_url_for(pc: ProcessContext, account_id: int) -> str:
    """The link an account owner follows to connect Kommo (signed: ``/auth`` refuses any other)."""
    sig = sign_connect_link(pc.settings.encryption_keys(), account_id)
    return f"{_public(pc)}/auth?id={account_id}&sig={sig}"


def kommo_webhook_url(pc: ProcessContext, account_id: int, token: str) -> str:
    """Where Kommo posts contact events for this account."""
    return f"{_public(pc)}/webhooks/kommo/{account_id}?token={token}"


def unisender_hook_url(pc: ProcessContext, account_id: int, token: str) -> str:
    """Where Unisender posts unsubscribe events for this account."""
    return f"{_public(pc)}/webhooks/unisender/{account_id}?token={token}"
