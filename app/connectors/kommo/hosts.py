"""Kommo account hosts: which hosts name an account, and whether two of them name the same one.

Accounts live on ``{sub}.kommo.com`` (Kommo), ``{sub}.amocrm.ru`` (amoCRM, a separate product since 2022, with
its own servers and accounts) and the former global ``{sub}.amocrm.com``, which Kommo still serves as an alias
of ``{sub}.kommo.com`` (tokens issued on one work on the other, and webhooks may still name it). Every call
for an account goes to the host Kommo named in the OAuth redirect; a host is only ever taken from an
allow-list of these domains, because the redirect's query can be forged and the host receives our client secret.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

KOMMO_DOMAINS: tuple[str, ...] = ("kommo.com", "amocrm.ru", "amocrm.com")
# Domains that are other names of the same platform (the same accounts behind both).
_SAME_PLATFORM = {"amocrm.com": "kommo.com"}
_HOST_RE = re.compile(r"(?P<sub>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)\.(?P<domain>[a-z0-9][a-z0-9.-]{0,200})")
_RESERVED = frozenset({"www"})


@dataclass(frozen=True, slots=True)
class AccountHost:
    """``acme.amocrm.ru`` as ``subdomain="acme"``, ``domain="amocrm.ru"``."""

    subdomain: str
    domain: str

    @property
    def host(self) -> str:
        return f"{self.subdomain}.{self.domain}"

    @property
    def platform(self) -> str:
        """The product the account lives on: ``kommo.com`` for Kommo and its legacy alias, else the domain."""
        return _SAME_PLATFORM.get(self.domain, self.domain)

    def same_account(self, other: AccountHost) -> bool:
        return self.subdomain == other.subdomain and self.platform == other.platform


def parse_account_host(value: str, *, domains: Sequence[str] = KOMMO_DOMAINS) -> AccountHost:
    """An account host as Kommo's redirect names it (``referer=acme.kommo.com``); ``ValueError`` otherwise.

    Only a bare host is accepted: no scheme, port, path, user info, whitespace or trailing dot, and only
    one label in front of an allowed domain (``acme.kommo.com.evil.com`` and ``a.b.kommo.com`` are refused).
    """
    allowed = {d.strip().lower() for d in domains if d.strip()}
    match = _HOST_RE.fullmatch(value.lower()) if value.isascii() and len(value) <= 253 else None
    if match is None or match["domain"] not in allowed or match["sub"] in _RESERVED:
        raise ValueError("not a Kommo account host")
    return AccountHost(match["sub"], match["domain"])


def host_of_link(link: str) -> AccountHost | None:
    """The account host of a link such as a webhook's ``account[_links][self]`` (``https://acme.kommo.com``).

    No allow-list here: the result is only compared with a stored host. None when the link names no host.
    """
    try:
        hostname = urlsplit(link.strip()).hostname
    except ValueError:
        return None
    return split_host(hostname) if hostname else None


def split_host(host: str) -> AccountHost | None:
    """``acme.kommo.com`` → ``AccountHost("acme", "kommo.com")`` for a host we stored or were sent (no
    allow-list: for comparisons only); None when it has no subdomain."""
    subdomain, dot, domain = host.strip().lower().rstrip(".").partition(".")
    return AccountHost(subdomain, domain) if dot and subdomain and domain else None


__all__ = ["KOMMO_DOMAINS", "AccountHost", "host_of_link", "parse_account_host", "split_host"]
