"""Salted scrypt password hashes, werkzeug.security's self-describing format
(`scrypt:N:r:p$salt$hex`), so the cost can be raised later: a hash at another cost, or
in the format this service wrote before, is replaced on the next successful login."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

_R, _P = 8, 1
_SALT_LENGTH = 16
# The earlier format: scrypt$N$r$p$<base64 salt>$<base64 32-byte key>.
_EARLIER_PREFIX = "scrypt$"


def _method(n: int) -> str:
    return f"scrypt:{n}:{_R}:{_P}"


def hash_password(password: str, n: int) -> str:
    return generate_password_hash(password, method=_method(n), salt_length=_SALT_LENGTH)


def _verify_earlier(stored: str, password: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest, validate=True)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=256 * int(n) * int(r) + 1024 * 1024,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def verify(stored: str, password: str, n: int) -> tuple[bool, str | None]:
    """Whether `password` matches `stored`, and when it does and `stored` is in the earlier
    format or at a cost other than N, the hash to store in its place (else None)."""
    if stored.startswith(_EARLIER_PREFIX):
        matches = _verify_earlier(stored, password)
        outdated = True
    else:
        try:
            matches = check_password_hash(stored, password)
        except ValueError:  # a method or parameters werkzeug does not know
            matches = False
        outdated = not stored.startswith(_method(n) + "$")
    if not matches:
        return False, None
    return True, hash_password(password, n) if outdated else None


def dummy_hash(n: int) -> str:
    """A hash to verify against for unknown users, so their answer takes as long."""
    return hash_password(secrets.token_urlsafe(16), n)
