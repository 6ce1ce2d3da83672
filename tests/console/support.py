"""Signing in to the console over HTTP, as a browser does: the sign-in form's token, then the session cookie."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """Fetch the sign-in form (its cookie lands in the client's jar) and post it."""
    form = await client.get("/console/sign-in")
    assert form.status_code == 200, form.text
    return await client.post(
        "/console/sign-in",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": "/console/accounts"},
    )


async def page_csrf(client: httpx.AsyncClient, path: str = "/console/accounts") -> str:
    answer = await client.get(path)
    assert answer.status_code == 200, answer.text
    return csrf_of(answer.text)
