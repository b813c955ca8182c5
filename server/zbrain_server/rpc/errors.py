"""Domain errors as gRPC statuses: the handlers' one way of failing a call."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from zbrain.errors import ZBrainError
from zbrain.status import to_status

Handler = TypeVar("Handler", bound=Callable[..., Any])


async def abort_with(context: grpc.aio.ServicerContext, error: ZBrainError) -> None:
    """End the call with the status (and details) that `error` stands for."""
    await context.abort_with_status(to_status(error))


def rpc_errors(handler: Handler) -> Handler:
    """Map domain errors raised by a unary handler to gRPC statuses."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except ZBrainError as error:
            await abort_with(context, error)

    return wrapper  # type: ignore[return-value]


def rpc_stream_errors(handler: Handler) -> Handler:
    """Map domain errors raised by a server-streaming handler to gRPC statuses."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for message in handler(self, request, context):
                yield message
        except ZBrainError as error:
            await abort_with(context, error)

    return wrapper  # type: ignore[return-value]
