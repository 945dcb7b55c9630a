"""Errors raised by use cases reach gRPC clients as rich statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.kit import errors
from services.kit.devstack import free_port
from services.kit.rpc.interceptors import ErrorMappingInterceptor
from services.kit.rpc.status import ERROR_DOMAIN

RAISES: dict[str, Exception] = {
    "invalid": errors.InvalidArgument.of(
        [
            errors.FieldViolation("tiers[1].up_to", "must be greater than tiers[0].up_to"),
            errors.FieldViolation("currency_code", "'XYZ' is not an ISO 4217 currency"),
        ],
        reason="INVALID_TIERS",
    ),
    "missing": errors.NotFound("package pkg_1 not found", reason="PACKAGE_NOT_FOUND"),
    "exists": errors.AlreadyExists("org already subscribed", reason="SUBSCRIPTION_EXISTS"),
    "state": errors.FailedPrecondition(
        "cannot pause a canceled subscription",
        reason="ILLEGAL_TRANSITION",
        metadata={"state": "canceled"},
    ),
    "bug": KeyError("secret internal detail"),
}


def _identity(data: bytes) -> bytes:
    return data


async def _raise(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise RAISES[request.decode()]


@pytest.fixture(scope="module")
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor("probe")])
    handler = grpc.method_handlers_generic_handler(
        "test.Probe",
        {"Raise": grpc.unary_unary_rpc_method_handler(_raise, _identity, _identity)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(0)


async def _call(channel: grpc.aio.Channel, case: str) -> grpc.aio.AioRpcError:
    call = channel.unary_unary("/test.Probe/Raise", _identity, _identity)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(case.encode(), timeout=5)
    return caught.value


def _details(
    error: grpc.aio.AioRpcError,
) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.BadRequest | None]:
    status = rpc_status.from_call(error)
    assert status is not None, "rich status details missing"
    info = error_details_pb2.ErrorInfo()
    bad: error_details_pb2.BadRequest | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
    return info, bad


async def test_invalid_argument_carries_every_field_violation(channel: grpc.aio.Channel) -> None:
    error = await _call(channel, "invalid")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info, bad = _details(error)
    assert (info.reason, info.domain, info.metadata["service"]) == (
        "INVALID_TIERS",
        ERROR_DOMAIN,
        "probe",
    )
    assert bad is not None
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("tiers[1].up_to", "must be greater than tiers[0].up_to"),
        ("currency_code", "'XYZ' is not an ISO 4217 currency"),
    ]


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "PACKAGE_NOT_FOUND"),
        ("exists", grpc.StatusCode.ALREADY_EXISTS, "SUBSCRIPTION_EXISTS"),
        ("state", grpc.StatusCode.FAILED_PRECONDITION, "ILLEGAL_TRANSITION"),
    ],
)
async def test_each_error_kind_maps_to_its_status(
    channel: grpc.aio.Channel, case: str, code: grpc.StatusCode, reason: str
) -> None:
    error = await _call(channel, case)
    assert error.code() == code
    info, bad = _details(error)
    assert info.reason == reason
    assert bad is None


async def test_metadata_travels_in_error_info(channel: grpc.aio.Channel) -> None:
    info, _ = _details(await _call(channel, "state"))
    assert info.metadata["state"] == "canceled"


async def test_an_unexpected_exception_is_internal_and_leaks_nothing(
    channel: grpc.aio.Channel,
) -> None:
    error = await _call(channel, "bug")
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (error.details() or "")
