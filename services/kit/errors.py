"""Error kinds every use case may raise.

Pure Python on purpose: domain modules raise these without importing gRPC. The
gRPC adapter (``services.kit.grpc.status``) turns them into rich statuses and the
gateway turns those into HTTP problems, so a ``reason`` here is stable API
(AIP-193): renaming one is a breaking change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: ``field`` is a path into the request (``tiers[2].up_to``)."""

    field: str
    description: str


@dataclass
class TallyError(Exception):
    """Base of every error a use case raises on purpose.

    ``reason`` is UPPER_SNAKE_CASE, unique within the service, and documented.
    ``metadata`` carries machine-readable facts (the current state, an id).
    """

    message: str
    reason: str = "UNSPECIFIED"
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class InvalidArgument(TallyError):
    """The request can never succeed as sent; ``violations`` name each bad field."""

    violations: tuple[FieldViolation, ...] = ()
    reason: str = "INVALID_ARGUMENT"

    @classmethod
    def of(
        cls, violations: Iterable[FieldViolation], reason: str = "INVALID_ARGUMENT"
    ) -> InvalidArgument:
        found = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in found)
        return cls(message=f"invalid request: {summary}", reason=reason, violations=found)

    @classmethod
    def field(
        cls, name: str, description: str, reason: str = "INVALID_ARGUMENT"
    ) -> InvalidArgument:
        return cls.of([FieldViolation(name, description)], reason=reason)


@dataclass
class NotFound(TallyError):
    reason: str = "NOT_FOUND"


@dataclass
class AlreadyExists(TallyError):
    reason: str = "ALREADY_EXISTS"


@dataclass
class FailedPrecondition(TallyError):
    """Legal request, wrong state (an illegal transition, a closed period)."""

    reason: str = "FAILED_PRECONDITION"


@dataclass
class Aborted(TallyError):
    """A concurrent change won; the caller may retry the whole operation."""

    reason: str = "ABORTED"


@dataclass
class PermissionDenied(TallyError):
    reason: str = "PERMISSION_DENIED"


@dataclass
class Unauthenticated(TallyError):
    reason: str = "UNAUTHENTICATED"


@dataclass
class ResourceExhausted(TallyError):
    reason: str = "RESOURCE_EXHAUSTED"


@dataclass
class Unavailable(TallyError):
    """A dependency is down; safe to retry later."""

    reason: str = "UNAVAILABLE"


class StartupError(Exception):
    """Bad configuration or an unreachable dependency at start-up.

    The CLI prints ``str(error)`` as the single error line and exits non-zero,
    so the message must name what is wrong and where (URL, port, variable).
    """


class Violations:
    """Collects every bad field of a request before failing once.

    Callers see all their mistakes in one answer instead of fixing them one
    round trip at a time::

        v = Violations()
        v.check(code != "", "code", "is required")
        v.raise_if_any()
    """

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def require(self, value: str, field: str) -> bool:
        """A required string field; blank (whitespace only) counts as missing."""
        return self.check(value.strip() != "", field, "is required")

    def check(self, ok: bool, field: str, description: str) -> bool:
        if not ok:
            self.add(field, description)
        return ok

    def extend(self, other: Violations, prefix: str = "") -> None:
        for item in other.items:
            name = f"{prefix}.{item.field}" if prefix and item.field else prefix or item.field
            self.items.append(FieldViolation(name, item.description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, reason: str = "INVALID_ARGUMENT") -> None:
        if self.items:
            raise InvalidArgument.of(self.items, reason=reason)
