"""Password hashing (argon2 via pwdlib) and short-lived signed access tokens (JWT, HS256)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import jwt
from pwdlib import PasswordHash

ALGORITHM = "HS256"
_hasher = PasswordHash.recommended()
# Verified when a username is unknown, so a login takes as long whether or not the user exists.
_DUMMY_HASH = _hasher.hash("conveyor-timing-equaliser")


class InvalidToken(Exception):
    """The token is missing, expired, forged or no longer matches its user."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    """Check a password; with no stored hash, spend the same time and return False."""
    if password_hash is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False
    return _hasher.verify(password, password_hash)


def credential_version(password_hash: str) -> str:
    """A short fingerprint of the stored hash: tokens die when the password changes."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def create_access_token(username: str, password_hash: str, secret: str, minutes: int) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": username,
        "ver": credential_version(password_hash),
        "iat": now,
        "exp": now + timedelta(minutes=minutes),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_access_token(token: str, secret: str) -> tuple[str, str]:
    """Return (username, credential version) of a valid token; raise InvalidToken otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"require": ["sub", "exp", "ver"]})
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from None
    return str(claims["sub"]), str(claims["ver"])
