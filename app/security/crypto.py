"""Encryption at rest with a rotatable key set (Fernet: AES-128-CBC + HMAC-SHA256).

The first key encrypts; every key decrypts, so a new key is rolled out by prepending it, running
``contactsync rotate-keys`` (re-encrypts every row), then removing the old one.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from app.logging import register_secret


class EncryptionNotConfigured(RuntimeError):
    pass


class DecryptionError(RuntimeError):
    """A stored secret could not be decrypted with any configured key."""


class Cipher:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is required")
        fernets = [Fernet(k) for k in keys]
        self._primary = fernets[0]
        self._multi = MultiFernet(fernets)

    def encrypt(self, plaintext: str) -> str:
        return self._multi.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str, *, ttl: int | None = None) -> str:
        try:
            value = self._multi.decrypt(token.encode("ascii"), ttl=ttl).decode()
        except (InvalidToken, UnicodeError) as exc:
            raise DecryptionError("stored value cannot be decrypted with the configured keys") from exc
        return value

    def is_current(self, token: str) -> bool:
        """Whether ``token`` is encrypted under the first key (the one new values get)."""
        try:
            self._primary.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            return False
        return True

    def rotate(self, token: str) -> str:
        """The same plaintext re-encrypted under the first key (its original timestamp kept)."""
        try:
            return self._multi.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise DecryptionError("stored value cannot be decrypted with the configured keys") from exc


_cipher: Cipher | None = None


def configure_encryption(keys: list[bytes]) -> Cipher:
    """Install the process-wide cipher used by ``EncryptedString`` columns."""
    global _cipher
    for key in keys:  # e.g. the development key generated into a file, which no setting names
        register_secret(key.decode("ascii", "replace"), pinned=True)
    _cipher = Cipher(keys)
    return _cipher


def get_cipher() -> Cipher:
    if _cipher is None:
        raise EncryptionNotConfigured(
            "encryption keys are not configured (configure_encryption was not called)"
        )
    return _cipher


class EncryptedString(TypeDecorator[str]):
    """A text column that is always encrypted on write and decrypted on read.

    Declaring a column with this type is the only way to store a secret, so it cannot be written in clear
    by mistake: the ORM and Core inserts both pass through ``process_bind_param``.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise TypeError("EncryptedString columns take str values")
        # A secret is often written before it is ever read back (an API key being connected): redact it
        # in logs from now on, as reading it does.
        register_secret(value)
        return get_cipher().encrypt(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        plain = get_cipher().decrypt(str(value))
        register_secret(plain)
        return plain
