"""The RPC handlers of zbrain.v1.TokenService (admin tokens only; see auth.REQUIRED_ROLE)."""

from __future__ import annotations

import grpc

from zbrain.v1 import token_service_pb2 as pb
from zbrain.v1 import token_service_pb2_grpc

from ..config import Limits
from ..core.model import now_us
from ..dispatch.tokens import create_token
from ..store import JobStore
from . import validation
from .codec import token_to_proto
from .errors import rpc_errors


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    """zbrain.v1.TokenService over the store."""

    def __init__(self, store: JobStore, limits: Limits) -> None:
        self._store = store
        self._limits = limits

    @rpc_errors
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        org_id, role, description = validation.new_token(request, self._limits)
        token, bearer = await create_token(self._store, org_id, role, description)
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
        token = await self._store.revoke_token(validation.token_id(request.token_id), now_us())
        return pb.RevokeTokenResponse(token=token_to_proto(token))
