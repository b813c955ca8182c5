"""zbrain.v1.TokenService on gRPC (admin tokens only; see auth.REQUIRED_ROLE):
each RPC hands its request to its operation (`api.Api`)."""

from __future__ import annotations

import grpc

from zbrain.v1 import token_service_pb2 as pb
from zbrain.v1 import token_service_pb2_grpc

from .api import Api
from .auth import current_caller
from .errors import rpc_errors


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    """zbrain.v1.TokenService over the API's operations."""

    def __init__(self, api: Api) -> None:
        self._api = api

    @rpc_errors
    async def CreateToken(
        self, request: pb.CreateTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTokenResponse:
        return await self._api.create_token(current_caller(), request)

    @rpc_errors
    async def ListTokens(
        self, request: pb.ListTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTokensResponse:
        return await self._api.list_tokens(current_caller(), request)

    @rpc_errors
    async def RevokeToken(
        self, request: pb.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeTokenResponse:
        return await self._api.revoke_token(current_caller(), request)
