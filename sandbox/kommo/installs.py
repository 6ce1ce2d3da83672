"""Installing and removing an integration as a Kommo user does it: the consent page's redirect, the
widget-install redirect, the widget's disposable JWT, tokens without the dance, and uninstall with its
disable hook. ``KommoSandboxState.installs``; the control API and the consent page call these."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx

from .errors import SandboxError
from .oauth import disable_hook_signature, widget_jwt
from .store import Account

if TYPE_CHECKING:
    from .state import KommoSandboxState


class InstallFlows:
    """The installation flows of one sandbox (``sandbox``: its whole state; ``state`` below is OAuth's)."""

    def __init__(self, sandbox: KommoSandboxState) -> None:
        self.sandbox = sandbox

    def authorize(
        self, client_id: str, subdomain: str, state: str | None = None, *, deny: bool = False
    ) -> str:
        """The redirect URL the consent page would send the user to (Allow, or Deny with ``deny``)."""
        integ = self.sandbox.oauth.integrations.get(client_id)
        if integ is None:
            raise SandboxError(f"no integration {client_id}", 404)
        account = self.sandbox.account(subdomain)
        if deny:
            params = {"error": "access_denied", "client_id": client_id}
            if state is not None:
                params["state"] = state
        else:
            code = self.sandbox.oauth.new_code(
                client_id, account.id, self.sandbox.clock.now(), self.sandbox.config.code_ttl
            )
            params = {"code": code.code}
            if state is not None:
                params["state"] = state
            params.update(
                {
                    "referer": self.sandbox.host_of(account),
                    "client_id": client_id,
                    "platform": self._platform_param(account),
                }
            )
        sep = "&" if "?" in integ.redirect_uri else "?"
        return f"{integ.redirect_uri}{sep}{urlencode(params)}"

    def _platform_param(self, account: Account) -> str:
        # A 2025 capture of an amocrm.ru redirect carries platform=1; Kommo's value is configurable.
        return (
            "1"
            if (account.domain or self.sandbox.config.base_domain) == "amocrm.ru"
            else self.sandbox.config.platform
        )

    async def install_widget(self, client_id: str, subdomain: str) -> dict[str, Any]:
        """Kommo's widget-install redirect (its public-integration docs): ``GET {redirect_uri}?code=&referer=&platform=&client_id=
        &from_widget=1``, no state; sent once, waits ``widget_install_timeout`` (3 s), ignores the answer
        (reported here for tests)."""
        integ = self.sandbox.oauth.integrations.get(client_id)
        if integ is None:
            raise SandboxError(f"no integration {client_id}", 404)
        account = self.sandbox.account(subdomain)
        code = self.sandbox.oauth.new_code(
            client_id, account.id, self.sandbox.clock.now(), self.sandbox.config.code_ttl
        )
        params = {
            "code": code.code,
            "referer": self.sandbox.host_of(account),
            "platform": self._platform_param(account),
            "client_id": client_id,
            "from_widget": "1",
        }
        sep = "&" if "?" in integ.redirect_uri else "?"
        url = f"{integ.redirect_uri}{sep}{urlencode(params)}"
        result: dict[str, Any] = {"url": url, "code": code.code, "status": None, "error": None}
        started = time.monotonic()
        try:
            resp = await self.sandbox.dispatcher.client.get(
                url, timeout=self.sandbox.config.widget_install_timeout
            )
            result["status"] = resp.status_code
        except httpx.HTTPError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        result["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        return result

    def widget_token(
        self,
        client_id: str,
        subdomain: str,
        *,
        is_admin: bool = True,
        claims: dict[str, Any] | None = None,
        secret: str | None = None,
        alg: str = "HS256",
    ) -> dict[str, Any]:
        """A disposable widget JWT as ``$authorizedAjax`` sends it (Kommo's one-time-token docs): ``aud`` = scheme://host of the
        integration's redirect URI, 30 min. ``claims`` override any claim, ``secret`` the signing key, ``alg``
        the header (``none``: unsigned), so tests can make every kind of bad token."""
        integ = self.sandbox.oauth.integrations.get(client_id)
        if integ is None:
            raise SandboxError(f"no integration {client_id}", 404)
        account = self.sandbox.account(subdomain)
        now = self.sandbox.clock.now()
        redirect = urlsplit(integ.redirect_uri)
        body: dict[str, Any] = {
            "iss": f"https://{self.sandbox.host_of(account)}",
            "aud": f"{redirect.scheme}://{redirect.hostname}",
            "jti": str(uuid.uuid4()),
            "iat": now,
            "nbf": now,
            "exp": now + self.sandbox.config.widget_token_ttl,
            "account_id": account.id,
            "subdomain": account.subdomain,
            "client_uuid": client_id,
            "user_id": account.current_user_id,
            "is_admin": is_admin,
        }
        body.update(claims or {})
        token = widget_jwt(body, integ.client_secret if secret is None else secret, alg=alg)
        return {"token": token, "claims": body}

    def issue_tokens(
        self, client_id: str, subdomain: str, *, long_lived_ttl: int | None = None
    ) -> dict[str, Any]:
        """Tokens without the OAuth dance (as if a code had been exchanged), or a long-lived token (no refresh)."""
        if client_id not in self.sandbox.oauth.integrations:
            raise SandboxError(f"no integration {client_id}", 404)
        account = self.sandbox.account(subdomain)
        now = self.sandbox.clock.now()
        ttl = long_lived_ttl or self.sandbox.config.access_token_ttl
        access, refresh = self.sandbox.oauth.issue(
            client_id,
            account.id,
            now=now,
            access_ttl=ttl,
            refresh_ttl=self.sandbox.config.refresh_token_ttl,
            base_domain=account.domain or self.sandbox.config.base_domain,
            grant_type="" if long_lived_ttl else "authorization_code",
            with_refresh=long_lived_ttl is None,
        )
        out: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": ttl,
            "server_time": now,
            "access_token": access.token,
        }
        if refresh is not None:
            out["refresh_token"] = refresh.token
        return out

    async def uninstall(self, client_id: str, subdomain: str) -> dict[str, Any]:
        """Revoke the installation's tokens and call the integration's disable hook (if it has one)."""
        integ = self.sandbox.oauth.integrations.get(client_id)
        if integ is None:
            raise SandboxError(f"no integration {client_id}", 404)
        account = self.sandbox.account(subdomain)
        revoked = self.sandbox.oauth.revoke_installation(client_id, account.id)
        result: dict[str, Any] = {
            "revoked_tokens": revoked,
            "hook_url": None,
            "hook_status": None,
            "hook_error": None,
        }
        if integ.disable_hook_url:
            params = {
                "client_uuid": client_id,
                "account_id": str(account.id),
                "signature": disable_hook_signature(client_id, integ.client_secret, account.id),
            }
            sep = "&" if "?" in integ.disable_hook_url else "?"
            url = f"{integ.disable_hook_url}{sep}{urlencode(params)}"
            result["hook_url"] = url
            try:
                resp = await self.sandbox.dispatcher.client.get(
                    url,
                    headers={"User-Agent": "amoService-oAuth-Code-Sender/1.0"},
                    timeout=self.sandbox.config.disable_hook_timeout,
                )
                result["hook_status"] = resp.status_code
            except httpx.HTTPError as exc:
                result["hook_error"] = f"{type(exc).__name__}: {exc}"
        return result
