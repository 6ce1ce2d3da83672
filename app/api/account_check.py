"""The unknown-account answer of the operator routers, in one place.

To be replaced by the shared ``ValidAccount`` dependency of ``app.api.deps`` (one line per route).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repo
from app.db.models import Integration
from app.errors import NotFound


async def registered_account(session: AsyncSession, account_id: int) -> Integration:
    """The account's integration; 404 ``unknown_account`` when it is not registered."""
    integration = await accounts_repo.get_integration(session, account_id)
    if integration is None:
        raise NotFound(f"Account {account_id} is not registered.", code="unknown_account")
    return integration
