"""Staff-only request fields: declared once in the protos, refused on portal routes.

Fields marked ``[(tally.api.v1.staff_only) = true]`` may be set by staff only:
on a portal route the transcoder answers 403 ``STAFF_ONLY_FIELD`` naming the
field, on the admin route of the same RPC it accepts it. The fields are
enumerated from the descriptors, so a newly marked field is covered without
touching this file. (That every field documented "staff only" is marked is
tests/unit/test_protos.py's job.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from tally.subscriptions.v1 import subscriptions_pb2

from gateway import problems
from gateway.descriptors import HttpBinding, http_bindings
from gateway.transcoding import (
    PORTAL_PREFIX,
    Route,
    build_request,
    compile_route,
    is_staff_only,
    staff_only_fields_in,
)

BINDINGS = list(http_bindings())


def _staff_only_paths(
    message: Descriptor, seen: frozenset[str] = frozenset()
) -> Iterator[list[FieldDescriptor]]:
    """The field chain to every staff-only field reachable from a request message."""
    for field in message.fields:
        if is_staff_only(field):
            yield [field]
        nested = field.message_type
        if (
            nested is not None
            and not nested.full_name.startswith("google.")
            and not nested.GetOptions().map_entry
            and nested.full_name not in seen
        ):
            for chain in _staff_only_paths(nested, seen | {message.full_name}):
                yield [field, *chain]


def _value(field: FieldDescriptor) -> Any:
    """A JSON value that sets the field (never its default)."""
    if field.message_type is not None:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return "2020-01-01T00:00:00Z"
        return {}
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].name
    if field.type == FieldDescriptor.TYPE_STRING:
        return "x"
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64):
        return "7"
    return 7


def _body(chain: list[FieldDescriptor]) -> dict[str, Any]:
    value: Any = _value(chain[-1])
    for field in reversed(chain):
        # A repeated field (leaf or message on the way down) gets one element.
        value = {field.json_name: [value] if field.is_repeated else value}
    return value  # type: ignore[no-any-return]


def _cases() -> list[tuple[Route, list[FieldDescriptor]]]:
    cases = []
    for binding in BINDINGS:
        if not binding.path.startswith(PORTAL_PREFIX):
            continue
        route = compile_route(binding)
        for chain in _staff_only_paths(binding.method.input_type):
            cases.append((route, chain))
    return cases


CASES = _cases()


def _admin_route(portal: Route) -> Route:
    admin = [
        b
        for b in BINDINGS
        if b.method.full_name == portal.binding.method.full_name
        and b.path.startswith("/super-admin/")
    ]
    assert admin, f"{portal.action} has no admin route for staff to set its staff-only fields"
    return compile_route(admin[0])


def _path_values(route: Route) -> dict[str, str]:
    return {
        variable: "org_a" if variable.endswith("org_id") else "id_1" for variable in route.variables
    }


def _request(route: Route, chain: list[FieldDescriptor]) -> Any:
    body = _body(chain)
    if route.binding.body not in ("", "*"):
        body = body.get(route.binding.body, {})
    if route.binding.body:
        return build_request(route, _path_values(route), [], body)
    # No body: a scalar staff-only field can come as a query parameter.
    query = [(".".join(f.name for f in chain), str(_value(chain[-1])).lower())]
    return build_request(route, _path_values(route), query, None)


def test_some_portal_route_has_staff_only_fields() -> None:
    names = {(route.binding.path, ".".join(f.name for f in chain)) for route, chain in CASES}
    for name in ("trial_days", "start_time", "allow_multiple"):
        assert ("/portal/billing/v1/subscriptions", name) in names


@pytest.mark.parametrize(
    ("route", "chain"),
    CASES,
    ids=[f"{r.binding.verb} {r.binding.path} {'.'.join(f.name for f in c)}" for r, c in CASES],
)
def test_portal_route_refuses_each_staff_only_field(
    route: Route, chain: list[FieldDescriptor]
) -> None:
    field = ".".join(f.name for f in chain)
    with pytest.raises(problems.Problem) as err:
        _request(route, chain)
    assert err.value.status == 403
    assert err.value.reason == "STAFF_ONLY_FIELD"
    assert [v.field for v in err.value.violations] == [field]
    body = err.value.body("rid")
    assert body["reason"] == "STAFF_ONLY_FIELD"
    assert body["violations"][0]["field"] == field


@pytest.mark.parametrize(
    ("route", "chain"),
    CASES,
    ids=[f"{r.binding.verb} {r.binding.path} {'.'.join(f.name for f in c)}" for r, c in CASES],
)
def test_admin_route_accepts_each_staff_only_field(
    route: Route, chain: list[FieldDescriptor]
) -> None:
    admin = _admin_route(route)
    message = _request(admin, chain)
    assert staff_only_fields_in(message) == [".".join(f.name for f in chain)]


def _portal_create() -> Route:
    binding = next(
        b for b in BINDINGS if b.path == "/portal/billing/v1/subscriptions" and b.verb == "post"
    )
    return compile_route(binding)


def test_every_staff_only_field_is_named_and_zero_values_count() -> None:
    route = _portal_create()
    with pytest.raises(problems.Problem) as err:
        build_request(
            route,
            {},
            [],
            {
                "packageId": "p",
                "trialDays": 0,  # optional: present even at 0 (it would remove the trial)
                "startTime": "2020-01-01T00:00:00Z",
                "allowMultiple": True,
            },
        )
    assert err.value.status == 403
    assert [v.field for v in err.value.violations] == [
        "trial_days",
        "start_time",
        "allow_multiple",
    ]


def test_portal_request_without_staff_only_fields_is_built() -> None:
    route = _portal_create()
    message = build_request(route, {}, [], {"packageId": "p", "requestId": "r1"})
    assert isinstance(message, subscriptions_pb2.CreateSubscriptionRequest)
    assert message.package_id == "p"
    assert not message.HasField("trial_days")
    # false is the default of a field without presence: the request is identical
    # to one that leaves it out, so nothing staff-only is set.
    message = build_request(route, {}, [], {"packageId": "p", "allowMultiple": False})
    assert message.allow_multiple is False


def test_staff_only_fields_found_at_any_depth() -> None:
    message = subscriptions_pb2.CreateSubscriptionRequest(package_id="p", trial_days=3)
    assert staff_only_fields_in(message) == ["trial_days"]
    assert staff_only_fields_in(subscriptions_pb2.CreateSubscriptionRequest()) == []


def test_internal_and_admin_bindings_are_never_refused() -> None:
    unrestricted: list[HttpBinding] = [b for b in BINDINGS if not b.path.startswith(PORTAL_PREFIX)]
    assert unrestricted
    route = compile_route(
        next(
            b
            for b in unrestricted
            if b.path == "/super-admin/billing/v1/orgs/{org_id}/subscriptions"
        )
    )
    message = build_request(
        route, {"org_id": "org_a"}, [], {"packageId": "p", "trialDays": 30, "allowMultiple": True}
    )
    assert (message.trial_days, message.allow_multiple) == (30, True)
