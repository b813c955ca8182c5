"""Making API tokens: for TokenService and for the command line working on a
store directly (the first admin token is made that way)."""

from __future__ import annotations

from zbrain.errors import FieldViolation, InvalidArgumentError

from ..core.model import ORG_ID_RULE, Role, is_org_id, now_us
from ..core.tokens import Token, new_token
from ..store import JobStore


async def create_token(
    store: JobStore, org_id: str, role: Role, description: str
) -> tuple[Token, str]:
    """Make and store a token; return it with its bearer string (shown once).

    The org id is checked here, for the command line's offline path as for
    the RPC: jobs submitted with the token default to its org unchecked."""
    if not is_org_id(org_id):
        raise InvalidArgumentError(
            "invalid organisation id", violations=[FieldViolation("org_id", ORG_ID_RULE)]
        )
    token, bearer = new_token(org_id, role, description, now_us())
    await store.add_token(token)
    return token, bearer
