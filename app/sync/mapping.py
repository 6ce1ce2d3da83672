"""Pure mapping from CRM contacts to the desired state of addresses in the email platform (no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

# Deliberately simple and strict: one @, a dot in the domain, no spaces or control characters. The email
# platform has the final word (its per-row rejections are recorded), this only filters obvious garbage.
_EMAIL_RE = re.compile(
    r"^[^@\s\x00-\x1f\"<>,;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$"
)
MAX_EMAIL_LENGTH = 254


def normalize_email(raw: str) -> str | None:
    """Lower-case and trim an address; None when it is not a plausible address."""
    email = raw.strip().lower()
    if not email or len(email) > MAX_EMAIL_LENGTH or not _EMAIL_RE.match(email):
        return None
    return email


def contact_emails(raw_values: tuple[str, ...] | list[str]) -> list[str]:
    """A contact's distinct valid addresses, in first-seen order."""
    seen: dict[str, None] = {}
    for raw in raw_values:
        email = normalize_email(raw)
        if email is not None:
            seen.setdefault(email, None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class DesiredAddress:
    """What the email platform should hold for one address."""

    email: str
    delete: bool
    name: str = ""

    def payload(self) -> dict[str, object]:
        return {"delete": self.delete, "name": "" if self.delete else self.name}


def payload_hash(payload: dict[str, object], list_id: int | None) -> str:
    """Fingerprint of what we send, including the target list, for no-op suppression."""
    blob = json.dumps({"p": payload, "l": list_id}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
