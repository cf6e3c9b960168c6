"""Password hashing (argon2id via argon2-cffi) and generated secrets. Pure."""
from __future__ import annotations

import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so both answers take as long. Made on
    first use: hashing at import would slow every process that imports this (the CLI too)."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def generate() -> str:
    """A random password people can copy: 20 URL-safe characters (~120 bits)."""
    return secrets.token_urlsafe(15)


def check_strength(password) -> str | None:
    """A reason the password is refused, or None."""
    if not isinstance(password, str) or len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    if len(password) > 1024:
        return "password must be at most 1024 characters"
    return None
