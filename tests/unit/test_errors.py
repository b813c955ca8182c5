"""One error hierarchy on both sides of the wire: zbrain.status's to_status and from_rpc_error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import grpc_testing  # type: ignore[import-untyped]
import pytest
from google.rpc import error_details_pb2, status_pb2

from zbrain import errors
from zbrain.errors import (
    ERRORS_BY_CODE,
    Code,
    FailedPreconditionError,
    FieldViolation,
    IllegalTransitionError,
    InvalidArgumentError,
    StaleLeaseError,
    ZBrainError,
)
from zbrain.status import from_rpc_error, to_status
from zbrain.v1 import job_service_pb2, job_service_pb2_grpc

# Every class that owns a status code, with that code.
CODES: list[tuple[type[ZBrainError], grpc.StatusCode]] = [
    (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (errors.ResourceExhaustedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.CanceledError, grpc.StatusCode.CANCELLED),
    (errors.StoreError, grpc.StatusCode.INTERNAL),
]
VIOLATIONS = [
    FieldViolation("job.cmd", "must name a program to run"),
    FieldViolation("job.env['1X']", "name must match [A-Za-z_][A-Za-z0-9_]*"),
]


def class_id(value: object) -> str:
    return value.__name__ if isinstance(value, type) else ""


def bad_request_of(status: grpc.Status) -> list[FieldViolation]:
    [(key, value)] = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    rich = status_pb2.Status.FromString(value)
    found = []
    for detail in rich.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        found += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return found


# -- the error objects -----------------------------------------------------------


def test_violations_are_kept_and_named_in_the_message() -> None:
    error = InvalidArgumentError("invalid job", violations=VIOLATIONS)

    assert error.violations == tuple(VIOLATIONS)
    assert str(error) == error.message
    assert error.message.startswith("invalid job (")
    assert "job.cmd: must name a program to run" in error.message


@pytest.mark.parametrize("subclass", [StaleLeaseError, IllegalTransitionError], ids=class_id)
def test_lease_and_transition_errors_are_failed_preconditions(
    subclass: type[ZBrainError],
) -> None:
    assert issubclass(subclass, FailedPreconditionError)
    assert subclass.code is Code.FAILED_PRECONDITION


# -- to_status -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "code"), CODES, ids=class_id)
def test_to_status_carries_the_code_and_message(
    kind: type[ZBrainError], code: grpc.StatusCode
) -> None:
    status = to_status(kind("it went wrong"))

    assert status.code is code
    assert status.details == "it went wrong"


def test_to_status_carries_field_violations_as_bad_request_details() -> None:
    status = to_status(InvalidArgumentError("invalid job", violations=VIOLATIONS))

    assert bad_request_of(status) == VIOLATIONS


def test_to_status_adds_no_bad_request_without_violations() -> None:
    status = to_status(errors.NotFoundError("job x not found"))

    assert bad_request_of(status) == []


# -- from_rpc_error, through a real grpc.aio server ------------------------------

Abort = Callable[[grpc.aio.ServicerContext], Awaitable[None]]
FailOverGrpc = Callable[[Abort], Awaitable[grpc.aio.AioRpcError]]


@pytest.fixture
async def fail_over_grpc() -> AsyncIterator[FailOverGrpc]:
    """Make one call to a loopback server that ends it with the given abort."""
    aborts: list[Abort] = []

    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        await aborts.pop()(context)
        raise AssertionError("the abort did not end the call")

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "zbrain.test.Errors", {"Fail": grpc.unary_unary_rpc_method_handler(handle)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    fail = channel.unary_unary("/zbrain.test.Errors/Fail")

    async def call(abort: Abort) -> grpc.aio.AioRpcError:
        aborts.append(abort)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await fail(b"", timeout=10)
        return raised.value

    yield call
    await channel.close()
    await server.stop(None)


def raising(error: ZBrainError) -> Abort:
    async def abort(context: grpc.aio.ServicerContext) -> None:
        await context.abort_with_status(to_status(error))

    return abort


@pytest.mark.parametrize(("kind", "code"), CODES, ids=class_id)
async def test_an_error_comes_back_as_its_own_class(
    fail_over_grpc: FailOverGrpc, kind: type[ZBrainError], code: grpc.StatusCode
) -> None:
    rpc_error = await fail_over_grpc(raising(kind("it went wrong")))

    error = from_rpc_error(rpc_error)

    assert rpc_error.code() is code
    assert type(error) is kind
    assert error.message == "it went wrong"
    assert error.violations == ()


async def test_field_violations_survive_the_round_trip(fail_over_grpc: FailOverGrpc) -> None:
    sent = InvalidArgumentError("invalid job", violations=VIOLATIONS)

    error = from_rpc_error(await fail_over_grpc(raising(sent)))

    assert type(error) is InvalidArgumentError
    assert error.violations == tuple(VIOLATIONS)
    assert error.message == sent.message


@pytest.mark.parametrize("subclass", [StaleLeaseError, IllegalTransitionError], ids=class_id)
async def test_a_subclass_comes_back_as_the_class_of_its_code(
    fail_over_grpc: FailOverGrpc, subclass: type[ZBrainError]
) -> None:
    error = from_rpc_error(await fail_over_grpc(raising(subclass("lease 3 is stale"))))

    assert type(error) is FailedPreconditionError
    assert error.message == "lease 3 is stale"


async def test_a_plain_status_without_details_maps_by_code(fail_over_grpc: FailOverGrpc) -> None:
    async def abort(context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such job")

    error = from_rpc_error(await fail_over_grpc(abort))

    assert type(error) is errors.NotFoundError
    assert (error.message, error.violations) == ("no such job", ())


@pytest.mark.parametrize("code", [grpc.StatusCode.ABORTED, grpc.StatusCode.DATA_LOSS])
async def test_a_code_no_class_owns_becomes_the_root_error(
    fail_over_grpc: FailOverGrpc, code: grpc.StatusCode
) -> None:
    async def abort(context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, "odd")

    error = from_rpc_error(await fail_over_grpc(abort))

    assert type(error) is ZBrainError
    assert error.message == "odd"


def test_an_unavailable_error_without_message_says_so() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), ""
    )

    error = from_rpc_error(rpc_error)

    assert type(error) is errors.UnavailableError
    assert error.message == "server unavailable"


def test_an_error_without_message_is_named_by_its_code() -> None:
    rpc_error = grpc.aio.AioRpcError(
        grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), ""
    )

    assert from_rpc_error(rpc_error).message == "NOT_FOUND"


# -- from_rpc_error of the synchronous API, through grpcio-testing ---------------
#
# grpcio-testing fakes the synchronous gRPC API: a generated JobService stub
# calls its fake channel, and the test ends the call with any status it likes.
# So the mapping is checked on the sync API's grpc.RpcError (the tests above
# see grpc.aio's), with the metadata the runtime adds to the trailers, for
# every code, violations included, with no server to make send it.

JOB_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"]
UNOWNED_CODES = [code for code in Code if code is not Code.OK and code not in ERRORS_BY_CODE]

FailSyncCall = Callable[[grpc.Status], grpc.RpcError]


def status_of(code: Code, violations: list[FieldViolation]) -> grpc.Status:
    """The status the server's edge sends for an error of `code` (`to_status`)."""
    error = ERRORS_BY_CODE.get(code, ZBrainError)("it went wrong", violations=violations)
    error.code = code  # the root error stands for the codes no class owns
    return to_status(error)


@pytest.fixture
def fail_sync_call() -> Iterator[FailSyncCall]:
    """Make a JobService.Get call on a grpcio-testing channel and end it with a status."""
    channel = grpc_testing.channel(
        job_service_pb2.DESCRIPTOR.services_by_name.values(), grpc_testing.strict_real_time()
    )
    stub = job_service_pb2_grpc.JobServiceStub(channel)

    with ThreadPoolExecutor(max_workers=1) as calls:

        def fail(status: grpc.Status) -> grpc.RpcError:
            call = calls.submit(stub.Get, job_service_pb2.GetRequest(job_id="j1"), timeout=10)
            _, request, rpc = channel.take_unary_unary(JOB_SERVICE.methods_by_name["Get"])
            assert request == job_service_pb2.GetRequest(job_id="j1")
            rpc.terminate(None, status.trailing_metadata, status.code, status.details)
            with pytest.raises(grpc.RpcError) as raised:
                call.result(timeout=10)
            return raised.value

        yield fail


def code_id(code: Code) -> str:
    return code.name


@pytest.mark.parametrize("code", list(ERRORS_BY_CODE), ids=code_id)
def test_a_sync_call_error_is_the_class_of_its_code_with_its_violations(
    fail_sync_call: FailSyncCall, code: Code
) -> None:
    error = from_rpc_error(fail_sync_call(status_of(code, VIOLATIONS)))

    assert type(error) is ERRORS_BY_CODE[code]
    assert error.code is code
    assert error.violations == tuple(VIOLATIONS)


@pytest.mark.parametrize("code", UNOWNED_CODES, ids=code_id)
def test_a_sync_call_error_of_a_code_no_class_owns_is_the_root_error_with_its_violations(
    fail_sync_call: FailSyncCall, code: Code
) -> None:
    error = from_rpc_error(fail_sync_call(status_of(code, VIOLATIONS)))

    assert type(error) is ZBrainError
    assert error.violations == tuple(VIOLATIONS)


@pytest.mark.parametrize("code", [Code.ABORTED, Code.UNIMPLEMENTED], ids=code_id)
def test_the_root_error_keeps_the_code_it_was_received_with(
    fail_sync_call: FailSyncCall, code: Code
) -> None:
    error = from_rpc_error(fail_sync_call(status_of(code, [])))

    assert error.code is code


def test_details_that_disagree_with_the_call_code_are_ignored(
    fail_sync_call: FailSyncCall,
) -> None:
    # A proxy may end a call with its own status, keeping the server's trailers.
    invalid = status_of(Code.INVALID_ARGUMENT, VIOLATIONS)

    error = from_rpc_error(fail_sync_call(invalid._replace(code=grpc.StatusCode.NOT_FOUND)))

    assert type(error) is errors.NotFoundError
    assert error.violations == ()
