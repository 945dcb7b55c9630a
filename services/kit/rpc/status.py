"""TallyError -> gRPC status with rich details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.kit import errors

# Whose reasons these are: ErrorInfo.domain, so a client can tell ours apart.
ERROR_DOMAIN = "billing.tally.dev"

_CODES: list[tuple[type[errors.TallyError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]


def code_for(error: errors.TallyError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.UNKNOWN


def to_status(error: errors.TallyError, service: str) -> grpc.Status:
    code = code_for(error)
    details: list[any_pb2.Any] = []
    info = error_details_pb2.ErrorInfo(
        reason=error.reason,
        domain=ERROR_DOMAIN,
        metadata={"service": service, **error.metadata},
    )
    details.append(_pack(info))
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad))
    proto = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(proto)


def internal_status(message: str = "internal error") -> grpc.Status:
    return rpc_status.to_status(status_pb2.Status(code=code_pb2.INTERNAL, message=message))


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def error_from_call(error: grpc.aio.AioRpcError) -> errors.TallyError | None:
    """The TallyError another service answered with (the inverse of ``to_status``),
    so a service that relays a call answers its caller with the same code,
    reason, metadata and field violations; None for a status no TallyError maps
    to (INTERNAL, DEADLINE_EXCEEDED...), which the caller decides about."""
    kind = next((k for k, code in _CODES if code == error.code()), None)
    if kind is None:
        return None
    reason, metadata = error.code().name, {}
    violations: list[errors.FieldViolation] = []
    try:
        rich = rpc_status.from_call(error)
    except ValueError:
        rich = None  # details that contradict the code are not trusted
    for detail in rich.details if rich is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [
                errors.FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
    message = error.details() or reason
    if kind is errors.InvalidArgument:
        return errors.InvalidArgument(
            message=message, reason=reason, metadata=metadata, violations=tuple(violations)
        )
    return kind(message=message, reason=reason, metadata=metadata)
