"""Event envelopes: a protobuf payload plus metadata carried in NATS headers.

The subject of an event is declared once, on the event message itself, with the
``(tally.events.v1.event_subject)`` option; producers and consumers read it from
the descriptor so no table of subjects is kept by hand.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from tally.events.v1 import options_pb2

HEADER_MSG_ID = "Nats-Msg-Id"  # JetStream's own dedupe key: the event id
HEADER_EVENT_TYPE = "Tally-Event-Type"  # protobuf full name of the payload
HEADER_AGGREGATE_ID = "Tally-Aggregate-Id"
# Events sharing an ordering key are applied in publish order and never in two
# transactions at once by a consumer that applies a batch concurrently; without
# one, the aggregate id is the key. A producer gives a wider key (an org) when
# consumers lock rows that several of its aggregates share.
HEADER_ORDERING_KEY = "Tally-Ordering-Key"
HEADER_OCCURRED_AT = "Tally-Occurred-At"  # ISO 8601, UTC


def subject_of(message: Message | type[Message]) -> str:
    descriptor = message.DESCRIPTOR
    extension: Any = options_pb2.event_subject  # a custom option; the stubs type it loosely
    subject: str = descriptor.GetOptions().Extensions[extension]
    if not subject:
        raise ValueError(f"{descriptor.full_name} has no (tally.events.v1.event_subject) option")
    return subject


def message_class(full_name: str) -> type[Message]:
    """The generated class for a payload type, from the default descriptor pool."""
    descriptor = descriptor_pool.Default().FindMessageTypeByName(full_name)
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def new_event_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class EventEnvelope:
    """One event as it travels: what happened, to which aggregate, when."""

    event_id: str
    subject: str
    event_type: str
    aggregate_id: str
    occurred_at: datetime
    payload: bytes
    # Extra headers, e.g. W3C trace context (``traceparent``).
    context: dict[str, str] = field(default_factory=dict)

    @classmethod
    def wrap(
        cls,
        event: Message,
        *,
        aggregate_id: str,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
        context: dict[str, str] | None = None,
    ) -> EventEnvelope:
        return cls(
            event_id=event_id or new_event_id(),
            subject=subject_of(event),
            event_type=event.DESCRIPTOR.full_name,
            aggregate_id=aggregate_id,
            occurred_at=occurred_at or datetime.now(UTC),
            payload=event.SerializeToString(),
            context=dict(context or {}),
        )

    def headers(self) -> dict[str, str]:
        return {
            **self.context,
            HEADER_MSG_ID: self.event_id,
            HEADER_EVENT_TYPE: self.event_type,
            HEADER_AGGREGATE_ID: self.aggregate_id,
            HEADER_OCCURRED_AT: self.occurred_at.isoformat(),
        }

    @classmethod
    def from_message(
        cls, subject: str, headers: dict[str, str] | None, data: bytes
    ) -> EventEnvelope:
        headers = dict(headers or {})
        known = {HEADER_MSG_ID, HEADER_EVENT_TYPE, HEADER_AGGREGATE_ID, HEADER_OCCURRED_AT}
        try:
            event_id = headers[HEADER_MSG_ID]
            event_type = headers[HEADER_EVENT_TYPE]
        except KeyError as missing:
            raise ValueError(f"event on {subject} lacks header {missing}") from None
        occurred = headers.get(HEADER_OCCURRED_AT)
        return cls(
            event_id=event_id,
            subject=subject,
            event_type=event_type,
            aggregate_id=headers.get(HEADER_AGGREGATE_ID, ""),
            occurred_at=datetime.fromisoformat(occurred) if occurred else datetime.now(UTC),
            payload=data,
            context={k: v for k, v in headers.items() if k not in known},
        )

    def decode(self) -> Message:
        event = message_class(self.event_type)()
        event.ParseFromString(self.payload)
        return event
