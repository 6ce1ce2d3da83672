from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from app.security.crypto import Cipher, DecryptionError
from app.security.tokens import InvalidState, hash_token, make_state, read_state, token_matches


class TestCipher:
    def test_round_trip_and_ciphertext_differs(self) -> None:
        c = Cipher([Fernet.generate_key()])
        token = c.encrypt("s3cret")
        assert "s3cret" not in token
        assert c.decrypt(token) == "s3cret"

    def test_rotation_old_data_readable_and_reencrypted_with_new_key(self) -> None:
        old, new = Fernet.generate_key(), Fernet.generate_key()
        stored = Cipher([old]).encrypt("value")
        rotated_cipher = Cipher([new, old])
        assert rotated_cipher.decrypt(stored) == "value"
        rewritten = rotated_cipher.rotate(stored)
        assert Cipher([new]).decrypt(rewritten) == "value"
        with pytest.raises(DecryptionError):
            Cipher([old]).decrypt(rewritten)

    def test_is_current_tells_values_under_the_first_key(self) -> None:
        old, new = Fernet.generate_key(), Fernet.generate_key()
        both = Cipher([new, old])
        assert not both.is_current(Cipher([old]).encrypt("v"))
        assert both.is_current(both.encrypt("v"))
        assert both.is_current(both.rotate(Cipher([old]).encrypt("v")))
        assert not both.is_current("not a token")

    def test_rotating_a_value_no_key_opens_fails_clearly(self) -> None:
        stored = Cipher([Fernet.generate_key()]).encrypt("x")
        with pytest.raises(DecryptionError):
            Cipher([Fernet.generate_key()]).rotate(stored)

    def test_wrong_key_fails_clearly(self) -> None:
        stored = Cipher([Fernet.generate_key()]).encrypt("x")
        with pytest.raises(DecryptionError):
            Cipher([Fernet.generate_key()]).decrypt(stored)


class TestTokens:
    def test_hash_and_match(self) -> None:
        h = hash_token("abc")
        assert token_matches("abc", h)
        assert not token_matches("abd", h)
        assert not token_matches(None, h)
        assert not token_matches("abc", None)

    def test_state_round_trip_tamper_and_expiry(self) -> None:
        c = Cipher([Fernet.generate_key()])
        state, raw = make_state(c, 42)
        assert read_state(c, raw, max_age_seconds=60) == state
        with pytest.raises(InvalidState):
            read_state(c, raw[:-4] + "AAAA", max_age_seconds=60)
        with pytest.raises(InvalidState):
            read_state(Cipher([Fernet.generate_key()]), raw, max_age_seconds=60)
        with pytest.raises(InvalidState):
            read_state(c, raw, max_age_seconds=-1)
