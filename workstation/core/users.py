"""Local workstation accounts: name, role, argon2id password hash (RFC 9106).

Stored in ``<root>/workstation/users.sqlite`` (separate from the node's index so the
archive never holds credentials).  Passwords are never stored or logged in clear.
"""
from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

logger = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("radiologist", "resident", "technologist", "admin")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    display_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1
)"""


class UserError(Exception):
    """Base error of account handling."""


class AuthenticationError(UserError):
    """Wrong user name or password (the message never says which)."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    display_name: str

    @property
    def can_sign(self) -> bool:
        return self.role == "radiologist"


def users_path(root: Path | str) -> Path:
    return Path(root) / "workstation" / "users.sqlite"


class UserStore:
    """Accounts in a small SQLite file; the hasher is argon2id with library defaults."""

    def __init__(self, path: Path | str, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._hasher = hasher or PasswordHasher()
        with self._connect() as con:
            con.execute(_SCHEMA)

    @classmethod
    def for_root(cls, root: Path | str, hasher: PasswordHasher | None = None) -> UserStore:
        return cls(users_path(root), hasher)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def add(self, name: str, role: str, password: str, display_name: str | None = None) -> User:
        """Create an account; raises :class:`UserError` if it exists or an argument is invalid."""
        if not _NAME_RE.match(name):
            raise UserError(f"user name {name!r} must be 2-64 characters of letters, digits, _ . @ -")
        if role not in ROLES:
            raise UserError(f"role {role!r} unknown; choose one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise UserError("password must be at least 8 characters")
        h = self._hasher.hash(password)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            with self._connect() as con:
                con.execute("INSERT INTO users(name, role, display_name, password_hash, created_at) VALUES (?,?,?,?,?)",
                            (name, role, display_name or name, h, now))
        except sqlite3.IntegrityError as e:
            raise UserError(f"user {name!r} already exists") from e
        logger.info("added user %s with role %s", name, role)
        return User(name, role, display_name or name)

    def get(self, name: str) -> User | None:
        with self._connect() as con:
            row = con.execute("SELECT name, role, display_name FROM users WHERE name=? AND active=1", (name,)).fetchone()
        return User(*row) if row else None

    def list(self) -> list[User]:
        with self._connect() as con:
            rows = con.execute("SELECT name, role, display_name FROM users WHERE active=1 ORDER BY name").fetchall()
        return [User(*r) for r in rows]

    def verify(self, name: str, password: str) -> User:
        """Return the user if the password matches; else raise :class:`AuthenticationError`."""
        with self._connect() as con:
            row = con.execute("SELECT name, role, display_name, password_hash FROM users WHERE name=? AND active=1",
                              (name,)).fetchone()
        if row is None:
            # hash anyway so timing does not reveal whether the account exists
            try:
                self._hasher.verify(self._hasher.hash("x" * 12), password)
            except VerificationError:
                pass
            raise AuthenticationError("wrong user name or password")
        try:
            self._hasher.verify(row[3], password)
        except (VerifyMismatchError, VerificationError, InvalidHashError) as e:
            raise AuthenticationError("wrong user name or password") from e
        if self._hasher.check_needs_rehash(row[3]):
            with self._connect() as con:
                con.execute("UPDATE users SET password_hash=? WHERE name=?", (self._hasher.hash(password), name))
        return User(row[0], row[1], row[2])

    def password_hash(self, name: str) -> str | None:
        """The stored hash (for tests that prove no clear text is kept)."""
        with self._connect() as con:
            row = con.execute("SELECT password_hash FROM users WHERE name=?", (name,)).fetchone()
        return row[0] if row else None
