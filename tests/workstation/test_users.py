"""Local accounts with argon2id hashes."""
from __future__ import annotations

import pytest

from workstation.core.users import AuthenticationError, UserError, UserStore


def test_add_verify_and_hash_is_not_clear_text(tmp_path):
    users = UserStore.for_root(tmp_path)
    u = users.add("drkim", "radiologist", "correct horse", "Kim^Jisoo")
    assert u.can_sign
    h = users.password_hash("drkim")
    assert h.startswith("$argon2id$") and "correct horse" not in h
    assert users.verify("drkim", "correct horse").display_name == "Kim^Jisoo"
    with pytest.raises(AuthenticationError):
        users.verify("drkim", "wrong password")
    with pytest.raises(AuthenticationError):
        users.verify("nobody", "correct horse")


def test_invalid_accounts(tmp_path):
    users = UserStore.for_root(tmp_path)
    users.add("tech1", "technologist", "password123")
    assert not users.get("tech1").can_sign
    with pytest.raises(UserError, match="already exists"):
        users.add("tech1", "technologist", "password123")
    with pytest.raises(UserError, match="role"):
        users.add("x1", "surgeon", "password123")
    with pytest.raises(UserError, match="at least 8"):
        users.add("x2", "radiologist", "short")
