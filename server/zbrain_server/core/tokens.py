"""API tokens: how they are made, stored and checked.

Tokens look like `zbt_<id>_<secret>`. Only the SHA-256 of the secret is
stored: the secret is 256 random bits, so a fast hash is as safe as a slow
one, and it keeps authentication cheap on every call.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from zbrain.errors import UnauthenticatedError

from .model import Role

TOKEN_PREFIX = "zbt"


@dataclass(frozen=True)
class Token:
    """A stored token; `secret_hash` is the SHA-256 of its secret."""

    id: str
    org_id: str
    role: Role
    description: str
    secret_hash: str
    create_time_us: int
    revoke_time_us: int | None = None


def new_token(org_id: str, role: Role, description: str, now_us: int) -> tuple[Token, str]:
    """Make a token; return it and the bearer string, which is never stored."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    token = Token(token_id, org_id, role, description, _hash(secret), now_us)
    return token, f"{TOKEN_PREFIX}_{token_id}_{secret}"


def parse_bearer(bearer: str) -> tuple[str, str]:
    """Split `zbt_<id>_<secret>`; UnauthenticatedError if it is not one."""
    prefix, _, rest = bearer.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not token_id or not secret:
        raise UnauthenticatedError("malformed token: expected zbt_<id>_<secret>")
    return token_id, secret


def matches(token: Token, secret: str) -> bool:
    """Whether `secret` is the token's (compared in constant time)."""
    return hmac.compare_digest(token.secret_hash, _hash(secret))


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
