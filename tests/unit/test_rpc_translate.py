"""Driver errors the kit turns into what they mean for the caller."""

from __future__ import annotations

import asyncpg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.exc import DBAPIError

from services.kit.errors import InvalidArgument, Unavailable
from services.kit.protoconv import MAX_TIMESTAMP_SECONDS, from_timestamp
from services.kit.rpc.translate import translate


def wrapped(driver_error: Exception) -> DBAPIError:
    """As SQLAlchemy raises it: the driver's error as ``orig`` and as the cause."""
    try:
        try:
            raise driver_error
        except Exception as exc:
            raise DBAPIError("INSERT ...", {}, exc) from exc
    except DBAPIError as outer:
        return outer


def test_a_value_postgres_cannot_store_is_invalid_argument() -> None:
    nul = asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00")
    found = translate(wrapped(nul))
    assert isinstance(found, InvalidArgument)
    assert found.reason == "UNSTORABLE_VALUE"
    assert "NUL" in found.violations[0].description
    overflow = translate(asyncpg.exceptions.NumericValueOutOfRangeError("numeric overflow"))
    assert isinstance(overflow, InvalidArgument)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_the_database_going_away_is_unavailable(error: Exception) -> None:
    assert isinstance(translate(wrapped(error)), Unavailable)


def test_anything_else_stays_a_bug() -> None:
    bug = KeyError("oops")
    assert translate(bug) is bug
    constraint = wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert translate(constraint) is constraint


def test_a_timestamp_out_of_range_names_its_field() -> None:
    with pytest.raises(InvalidArgument) as raised:
        from_timestamp(Timestamp(seconds=MAX_TIMESTAMP_SECONDS + 1), field="start_time")
    assert raised.value.violations[0].field == "start_time"
    with pytest.raises(InvalidArgument):
        from_timestamp(Timestamp(seconds=0, nanos=-1))
    assert from_timestamp(Timestamp(seconds=MAX_TIMESTAMP_SECONDS)) is not None
