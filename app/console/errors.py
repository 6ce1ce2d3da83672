"""The console's refusals: AppErrors like the API's, rendered as pages (or JSON for the JSON endpoints)."""

from __future__ import annotations

from app.errors import Forbidden, Unauthorized


class SignInRequired(Unauthorized):
    """No live console session: pages redirect to the sign-in page, actions and JSON are refused."""

    code = "console_sign_in_required"

    def __init__(self) -> None:
        super().__init__("Sign in to the console first (your session is missing or has expired).")


class CsrfRefused(Forbidden):
    """A form posted without the token the console put in it (or with another one): nothing was done."""

    code = "csrf_invalid"

    def __init__(self) -> None:
        super().__init__(
            "This form was not sent with its security token, so it was refused and nothing changed. "
            "Reload the page and submit it again."
        )
