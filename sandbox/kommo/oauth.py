"""Integrations, authorization codes, access and refresh tokens.

Access tokens are JWT-shaped (base64url header.claims.signature, claims as in Kommo's tokens with a real ``exp``);
the signature is an HMAC over a per-sandbox key, although the header says RS256 like Kommo's: clients read the
claims unverified and must not rely on verifying them. Refresh tokens look like Kommo's (``def50200`` + hex).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Integration:
    client_id: str
    client_secret: str
    redirect_uri: str
    disable_hook_url: str | None = None
    name: str = "Integration"

    def as_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uri": self.redirect_uri,
            "disable_hook_url": self.disable_hook_url,
            "name": self.name,
        }


@dataclass(slots=True)
class AuthCode:
    code: str
    client_id: str
    account_id: int
    expires_at: int
    used: bool = False


@dataclass(slots=True)
class AccessToken:
    token: str
    client_id: str
    account_id: int
    expires_at: int
    revoked: bool = False


@dataclass(slots=True)
class RefreshToken:
    token: str
    client_id: str
    account_id: int
    expires_at: int
    parent: str | None = None  # the refresh token this one was issued for (grace model)
    spent: bool = False  # redeemed at least once
    revoked: bool = False


@dataclass
class OAuthStore:
    integrations: dict[str, Integration] = field(default_factory=dict)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    signing_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def new_integration(
        self,
        redirect_uri: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        disable_hook_url: str | None = None,
        name: str = "Integration",
    ) -> Integration:
        integ = Integration(
            client_id=client_id or str(uuid.uuid4()),
            client_secret=client_secret or secrets.token_urlsafe(48),
            redirect_uri=redirect_uri,
            disable_hook_url=disable_hook_url,
            name=name,
        )
        self.integrations[integ.client_id] = integ
        return integ

    def new_code(self, client_id: str, account_id: int, now: int, ttl: int) -> AuthCode:
        code = AuthCode("def50200" + secrets.token_hex(200), client_id, account_id, now + ttl)
        self.codes[code.code] = code
        return code

    def issue(
        self,
        client_id: str,
        account_id: int,
        *,
        now: int,
        access_ttl: int,
        refresh_ttl: int,
        base_domain: str,
        grant_type: str,
        parent: str | None = None,
        with_refresh: bool = True,
    ) -> tuple[AccessToken, RefreshToken | None]:
        jwt = self._jwt(
            client_id, account_id, now=now, ttl=access_ttl, base_domain=base_domain, grant_type=grant_type
        )
        access = AccessToken(jwt, client_id, account_id, now + access_ttl)
        self.access[jwt] = access
        refresh = None
        if with_refresh:
            refresh = RefreshToken(
                "def50200" + secrets.token_hex(240), client_id, account_id, now + refresh_ttl, parent=parent
            )
            self.refresh[refresh.token] = refresh
        return access, refresh

    def revoke_installation(self, client_id: str, account_id: int) -> int:
        n = 0
        for store in (self.access, self.refresh):
            for tok in store.values():
                if tok.client_id == client_id and tok.account_id == account_id and not tok.revoked:
                    tok.revoked = True
                    n += 1
        return n

    def _jwt(
        self, client_id: str, account_id: int, *, now: int, ttl: int, base_domain: str, grant_type: str
    ) -> str:
        jti = secrets.token_hex(20)
        header = {"typ": "JWT", "alg": "RS256", "jti": jti}
        claims = {
            "aud": client_id,
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "sub": str(account_id % 100_000_000 + 1),
            "grant_type": grant_type,
            "account_id": account_id,
            "base_domain": base_domain,
            "version": 2,
            "scopes": ["crm"],
            "user_flags": 0,
            "hash_uuid": str(uuid.uuid4()),
            "api_domain": f"api-c.{base_domain}",
        }
        signing_input = f"{_b64(json.dumps(header, separators=(',', ':')).encode())}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
        sig = hmac.new(self.signing_key, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(sig)}"


def widget_jwt(claims: dict[str, Any], secret: str, *, alg: str = "HS256") -> str:
    """A disposable widget token (the ``X-Auth-Token`` of ``$authorizedAjax``): HS256 keyed by the
    integration's client secret, as the official amocrm-api-php library's DisposableTokenModel reads it.
    ``alg="none"`` makes an unsigned one (for tests of receivers that must refuse it)."""
    header = {"typ": "JWT", "alg": alg}
    signing_input = (
        f"{_b64(json.dumps(header, separators=(',', ':')).encode())}."
        f"{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    )
    if alg == "none":
        return f"{signing_input}."
    sig = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def disable_hook_signature(client_id: str, client_secret: str, account_id: int) -> str:
    """hex(HMAC-SHA256(key=client_secret, msg="{client_id}|{account_id}")), as Kommo's OAuth docs give it."""
    return hmac.new(client_secret.encode(), f"{client_id}|{account_id}".encode(), hashlib.sha256).hexdigest()
