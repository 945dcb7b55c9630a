"""JetStream topology: one stream per producing service, plus a dead-letter stream.

Every service provisions the streams it writes to and reads from with the same
canonical configuration, so start-up order between services never matters.
"""

from __future__ import annotations

from datetime import timedelta

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

DLQ_STREAM = "TALLY_DLQ"
DLQ_SUBJECT_PREFIX = "tally.dlq"
# JetStream drops a second publish with the same Nats-Msg-Id inside this window;
# the consumers' inbox covers redeliveries older than that.
DUPLICATE_WINDOW = timedelta(minutes=10)
RETENTION = timedelta(days=14)


def stream_name(producer: str) -> str:
    return f"TALLY_{producer.upper()}"


def producer_of(subject: str) -> str:
    """``tally.usage.usage.aggregated`` was produced by ``usage``."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != "tally":
        raise ValueError(f"not a Tally event subject: {subject!r}")
    return parts[1]


def producer_stream(producer: str) -> StreamConfig:
    return StreamConfig(
        name=stream_name(producer),
        subjects=[f"tally.{producer}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=RETENTION.total_seconds(),
        duplicate_window=DUPLICATE_WINDOW.total_seconds(),
    )


def dlq_stream() -> StreamConfig:
    return StreamConfig(
        name=DLQ_STREAM,
        subjects=[f"{DLQ_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=timedelta(days=30).total_seconds(),
    )


def dlq_subject(service: str, durable: str) -> str:
    return f"{DLQ_SUBJECT_PREFIX}.{service}.{durable}"
