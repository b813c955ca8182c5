"""The RPC handlers of zbrain.v1.TokenService (admin tokens only; see auth.REQUIRED_ROLE)."""

from __future__ import annotations

import grpc

from zbrain.errors import FieldViolation, InvalidArgumentError
from zbrain.v1 import token_service_pb2 as pb
from zbrain.v1 import token_service_pb2_grpc

from . import protocol
from .auth import Role, Token, new_token
from .model import now_us
from .service import rpc_errors
from .store import JobStore

MAX_DESCRIPTION_BYTES = 256


def token_to_proto(token: Token) -> pb.TokenInfo:
    return pb.TokenInfo(
        id=token.id,
        org_id=token.org_id,
        role=pb.TokenRole.ValueType(token.role.value),
        description=token.description,
        create_time=protocol.timestamp(token.create_time_us),
        revoke_time=protocol.timestamp(token.revoke_time_us),
    )


async def create_token(
    store: JobStore, org_id: str, role: Role, description: str
) -> tuple[Token, str]:
    """Make and store a token; return it with its bearer string (shown once).

    The org id is checked here, for the CLI's offline path as for the RPC:
    jobs submitted with the token default to its org unchecked."""
    token, bearer = new_token(protocol.valid_org(org_id, "org_id"), role, description, now_us())
    await store.add_token(token)
    return token, bearer


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    """zbrain.v1.TokenService over the store."""

    def __init__(self, store: JobStore) -> None:
        self._store = store

    @rpc_errors
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        org_id = protocol.valid_org(request.org_id, "org_id")
        try:
            role = Role(request.role)
        except ValueError:
            raise InvalidArgumentError(
                "invalid role",
                violations=[FieldViolation("role", "must be CLIENT, WORKER or ADMIN")],
            ) from None
        if len(request.description.encode()) > MAX_DESCRIPTION_BYTES:
            raise InvalidArgumentError(
                "description too long",
                violations=[
                    FieldViolation("description", f"must be at most {MAX_DESCRIPTION_BYTES} bytes")
                ],
            )
        token, bearer = await create_token(self._store, org_id, role, request.description)
        return pb.CreateTokenResponse(token=token_to_proto(token), secret=bearer)

    @rpc_errors
    async def ListTokens(
        self, request: pb.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTokensResponse:
        tokens = await self._store.list_tokens(request.org_id or None)
        return pb.ListTokensResponse(tokens=[token_to_proto(t) for t in tokens])

    @rpc_errors
    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeTokenResponse:
        if not request.token_id:
            raise InvalidArgumentError(
                "missing token id", violations=[FieldViolation("token_id", "is required")]
            )
        token = await self._store.revoke_token(request.token_id, now_us())
        return pb.RevokeTokenResponse(token=token_to_proto(token))
