"""Kommo's widget token (``X-Auth-Token``) as a credential: whose account a change from the widget is for."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as repo
from app.accounts.errors import MAX_ACCOUNT_ID
from app.db.models import Integration
from app.errors import Forbidden, Unauthorized
from app.security.widget_jwt import (
    InvalidWidgetToken,
    WidgetClaims,
    unverified_account_id,
    verify_widget_token,
)

log = structlog.get_logger(__name__)


def _invalid() -> Unauthorized:
    return Unauthorized("Missing or invalid widget token (X-Auth-Token).", code="invalid_token")


async def widget_account(
    *, session: AsyncSession, token: str | None, account_id: int | None = None
) -> Integration:
    """The integration of the account a Kommo widget token was issued to, for a change to that account.

    The token must verify with the client secret of the account's integration (401 ``invalid_token``
    otherwise, also for an unknown account); it must be for ``account_id`` when one is given (403
    ``wrong_account``) and for one of the account's administrators (403 ``not_account_admin``): whoever
    sets the Unisender key receives every contact's address.
    """
    lookup = account_id if account_id is not None else unverified_account_id(token or "")
    integration = None
    if token and lookup is not None and 0 < lookup <= MAX_ACCOUNT_ID:
        integration = await repo.get_integration(session, lookup)
    if integration is None or token is None:
        raise _invalid()
    try:
        claims = verify_widget_token(
            token,
            secret=integration.client_secret,
            client_id=integration.client_id,
            redirect_uri=integration.redirect_uri,
        )
    except InvalidWidgetToken as exc:
        log.info("accounts.widget_token_refused", account_id=lookup, reason=str(exc))
        raise _invalid() from None
    check_widget_claims(claims, account_id=integration.account_id)
    return integration


def check_widget_claims(claims: WidgetClaims, *, account_id: int) -> None:
    """A verified token may set the Unisender key of ``account_id`` only if it was issued for that account
    (403 ``wrong_account``) and to one of its administrators (403 ``not_account_admin``)."""
    if claims.account_id != account_id:
        raise Forbidden("This widget token was issued for another Kommo account.", code="wrong_account")
    if not claims.is_admin:
        raise Forbidden(
            "Only an administrator of the Kommo account can set its Unisender key.", code="not_account_admin"
        )
