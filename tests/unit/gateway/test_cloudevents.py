"""CloudEvents JSON -> UsageEvent mapping, and the 400s naming the attribute."""

from __future__ import annotations

from typing import Any

import pytest
from tally.subscriptions.v1 import subscriptions_pb2
from tally.usage.v1 import usage_pb2

from gateway import cloudevents
from gateway.problems import Problem

SINGLE_REQUEST = usage_pb2.RecordUsageRequest.DESCRIPTOR
BATCH_REQUEST = usage_pb2.RecordUsageBatchRequest.DESCRIPTOR


def event(**extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "//product",
        "type": "api_calls",
        "subject": "org_1",
        **extra,
    }


def test_every_attribute_mapped() -> None:
    body = cloudevents.request_body(
        SINGLE_REQUEST,
        cloudevents.SINGLE,
        event(
            time="2026-11-24T10:00:00Z",
            orgid="org_2",
            subscriptionid="sub_1",
            data={"metric": "tokens", "value": 2.5, "properties": {"model": "m"}},
        ),
    )
    assert body == {
        "event": {
            "orgId": "org_2",  # the extension wins over subject
            "idempotencyKey": "evt-1",
            "eventTime": "2026-11-24T10:00:00Z",
            "subscriptionId": "sub_1",
            "metricCode": "tokens",  # data.metric wins over type
            "value": "2.5",
            "properties": {"model": "m"},
        }
    }
    minimal = cloudevents.request_body(SINGLE_REQUEST, cloudevents.SINGLE, event())
    assert minimal == {
        "event": {"orgId": "org_1", "idempotencyKey": "evt-1", "metricCode": "api_calls"}
    }


def test_batch_maps_each_event() -> None:
    body = cloudevents.request_body(
        BATCH_REQUEST, cloudevents.BATCH, [event(), event(id="evt-2", data={"value": "3"})]
    )
    assert [e["idempotencyKey"] for e in body["events"]] == ["evt-1", "evt-2"]
    assert body["events"][1]["value"] == "3"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**event(), "specversion": "0.3"}, "specversion"),
        ({**event(), "id": ""}, "id"),
        ({k: v for k, v in event().items() if k != "source"}, "source"),
        ({k: v for k, v in event().items() if k != "subject"}, "subject"),
        (event(time="tomorrow"), "time"),
        (event(data=[1]), "data"),
        (event(data={"value": True}), "data.value"),
        (event(data={"value": float("inf")}), "data.value"),
        (event(data={"properties": {"a": 1}}), "data.properties.a"),
        (event(data={"unit": "ms"}), "data.unit"),
        (event(data_base64="AA=="), "data_base64"),
        (event(datacontenttype="text/plain"), "datacontenttype"),
        ("not an object", "body"),
    ],
)
def test_malformed_event_names_the_attribute(payload: Any, field: str) -> None:
    with pytest.raises(Problem) as caught:
        cloudevents.request_body(SINGLE_REQUEST, cloudevents.SINGLE, payload)
    assert caught.value.status == 400
    assert [v.field for v in caught.value.violations] == [field]


def test_batch_errors_carry_the_index_and_wrong_shapes_are_refused() -> None:
    with pytest.raises(Problem) as caught:
        cloudevents.request_body(BATCH_REQUEST, cloudevents.BATCH, [event(), event(id=5)])
    assert [v.field for v in caught.value.violations] == ["[1].id"]
    with pytest.raises(Problem) as not_a_list:
        cloudevents.request_body(BATCH_REQUEST, cloudevents.BATCH, event())
    assert not_a_list.value.status == 400
    with pytest.raises(Problem) as wrong_route:
        cloudevents.request_body(SINGLE_REQUEST, cloudevents.BATCH, [event()])
    assert wrong_route.value.status == 415
    other = subscriptions_pb2.CheckEntitlementRequest.DESCRIPTOR
    assert not cloudevents.accepts(other, cloudevents.SINGLE)
    assert (
        cloudevents.media_type("Application/CloudEvents+JSON; charset=utf-8") == cloudevents.SINGLE
    )
