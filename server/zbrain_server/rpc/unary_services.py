"""gRPC servicers for services whose every RPC is unary (TokenService,
TemplateService, ScheduleService, OrgService): each method hands its request to the
API's operation of the same name with the caller the auth interceptor found,
as `job_service` does by hand for JobService and its streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from .api import Api, Operation
from .auth import current_caller
from .errors import rpc_errors

S = TypeVar("S")


def unary_servicer(base: Callable[[], S], service: ServiceDescriptor, api: Api) -> S:
    """An instance of the generated servicer class `base` of `service`, each
    RPC answered by its operation (`Api.operation`)."""
    methods: dict[str, Any] = {}
    for method in service.methods:
        operation = api.operation(f"/{service.full_name}/{method.name}")
        if operation is None or method.client_streaming or method.server_streaming:
            raise TypeError(f"{service.full_name}.{method.name} has no unary operation")
        methods[method.name] = _handler(operation)
    servicer = type(f"{service.name}Servicer", (cast(type, base),), methods)
    return cast(S, servicer())


def _handler(operation: Operation) -> Any:
    @rpc_errors
    async def handle(self: object, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await operation(current_caller(), request)

    return handle
