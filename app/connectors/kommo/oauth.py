"""Kommo OAuth 2.0: authorize URL, code exchange, refresh, and the checks around Kommo's callbacks."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import pydantic
import structlog

from app.connectors.base import CrmOAuth, OAuthTokens
from app.connectors.kommo.exceptions import KommoError, KommoTransientError, from_response
from app.connectors.kommo.schemas import KommoTokenResponse
from app.connectors.ratelimit import RateLimiter

log = structlog.get_logger(__name__)

TOKEN_PATH = "/oauth2/access_token"


class KommoOAuth:
    """The authorization-code flow of one Kommo integration against one account's base URL.

    With a ``limiter``, every token call waits for it first: token calls count against the integration's
    Kommo budget like API calls.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        auth_url: str,
        base_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._http = http
        self._limiter = limiter
        self._auth_url = auth_url
        self._token_url = base_url.rstrip("/") + TOKEN_PATH
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri

    def authorize_url(self, state: str) -> str:
        """Where to send the user to grant access (``mode=post_message``: the redirect opens in the popup)."""
        return authorize_url(self._auth_url, client_id=self._client_id, state=state)

    async def exchange_code(self, code: str) -> OAuthTokens:
        """Trade an authorization code (single use, 20 min) for a token pair."""
        return await self._token({"grant_type": "authorization_code", "code": code}, "exchange_code")

    async def refresh(self, refresh_token: str) -> OAuthTokens:
        """Trade a refresh token for a new pair; the old refresh token dies once the new one is used."""
        return await self._token({"grant_type": "refresh_token", "refresh_token": refresh_token}, "refresh")

    async def _token(self, grant: dict[str, str], what: str) -> OAuthTokens:
        body: dict[str, Any] = {
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            **grant,
            "redirect_uri": self._redirect_uri,
        }
        if self._limiter is not None:
            await self._limiter.acquire()
        try:
            # JSON, the body shape of Kommo's token-endpoint docs.
            response = await self._http.post(
                self._token_url, json=body, headers={"Accept": "application/json"}
            )
        except httpx.TimeoutException as exc:
            log.warning("kommo.oauth_timeout", grant=what)
            raise KommoTransientError(f"Kommo token endpoint ({what}) timed out", code="timeout") from exc
        except httpx.RequestError as exc:
            log.warning("kommo.oauth_transport_error", grant=what, error=type(exc).__name__)
            raise KommoTransientError(
                f"Kommo token endpoint ({what}) failed: {type(exc).__name__}", code="transport"
            ) from exc
        if not response.is_success:
            error = from_response(response, token_endpoint=True)
            log.info(
                "kommo.oauth_failed", grant=what, status=response.status_code, error=type(error).__name__
            )
            raise error
        try:
            parsed = KommoTokenResponse.model_validate_json(response.content)
        except pydantic.ValidationError as exc:
            raise KommoError(
                f"Kommo token endpoint ({what}): unexpected response",
                status_code=response.status_code,
                code="bad_response",
            ) from exc
        log.info("kommo.oauth_tokens_issued", grant=what, expires_in=parsed.expires_in)
        return parsed.to_tokens()


def authorize_url(auth_url: str, *, client_id: str, state: str) -> str:
    """Kommo's consent page for the integration ``client_id``, carrying ``state`` back to the redirect."""
    query = urlencode({"client_id": client_id, "state": state, "mode": "post_message"})
    separator = "&" if "?" in auth_url else "?"
    return f"{auth_url}{separator}{query}"


def disable_signature(account_id: int | str, *, client_id: str, client_secret: str) -> str:
    """Hex HMAC-SHA256 of ``{client_id}|{account_id}`` keyed by ``client_secret`` (the disable hook)."""
    message = f"{client_id}|{account_id}".encode()
    return hmac.new(client_secret.encode(), message, hashlib.sha256).hexdigest()


def verify_disable_signature(
    client_uuid: str, account_id: int | str, signature: str, *, client_id: str, client_secret: str
) -> bool:
    """True when a disable ("access revoked") hook call really comes from Kommo for our integration."""
    if not client_uuid or not signature or not str(account_id).isdigit():
        return False
    expected = disable_signature(account_id, client_id=client_id, client_secret=client_secret)
    uuid_ok = hmac.compare_digest(client_uuid.strip().lower().encode(), client_id.strip().lower().encode())
    signature_ok = hmac.compare_digest(signature.strip().lower().encode(), expected.encode())
    return uuid_ok and signature_ok


if TYPE_CHECKING:
    _protocol_check: type[CrmOAuth] = KommoOAuth
