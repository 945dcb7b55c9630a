"""Route-group flags by cohort: the grammar, evaluation, and the orgs a request names."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tally.subscriptions.v1 import subscriptions_pb2
from tally.usage.v1 import resources_pb2, usage_pb2

from gateway.flags import Cohort, Flags, parse_flag, parse_org_tags, request_orgs
from gateway.transcoding import org_ids_in
from services.kit.errors import StartupError
from services.kit.settings import GatewaySettings, load_settings

# Names as an operator writes them: no whitespace and none of , ; : (the separators).
names = st.text(
    alphabet=st.characters(codec="ascii", categories=["L", "N"], include_characters="_-."),
    min_size=1,
    max_size=12,
)
name_sets = st.frozensets(names, max_size=5)


def _cohort_text(orgs: frozenset[str], tags: frozenset[str]) -> str:
    clauses = [f"orgs:{','.join(sorted(orgs))}"] if orgs else []
    clauses += [f"tags:{','.join(sorted(tags))}"] if tags else []
    return ";".join(clauses)


@pytest.mark.parametrize(
    ("text", "everyone"),
    [(t, True) for t in ("true", "TRUE", "1", "yes", "on", " true ")]
    + [(f, False) for f in ("false", "False", "0", "no", "off")],
)
def test_boolean_spellings_keep_their_meaning(text: str, everyone: bool) -> None:
    cohort = parse_flag(text)
    assert cohort == Cohort(everyone=everyone)
    assert cohort.nobody is not everyone
    assert str(cohort) == ("true" if everyone else "false")


def test_a_cohort_merges_its_clauses_and_trims_names() -> None:
    cohort = parse_flag(" tags: internal , beta ; orgs:org_x; ORGS:org_y ")
    assert cohort == Cohort(
        orgs=frozenset({"org_x", "org_y"}), tags=frozenset({"internal", "beta"})
    )
    assert not cohort.nobody and not cohort.everyone
    assert str(cohort) == "tags:beta,internal;orgs:org_x,org_y"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tags:", "empty item"),
        ("tags:a,,b", "empty item"),
        ("tags:a;", "is not name:item"),
        ("tag:internal", "unknown kind 'tag'"),
        ("internal", "is not name:item"),
        (":org_a", "is not name:item"),
        ("orgs:org a", "holds whitespace"),
        ("orgs:x:y", "holds whitespace or one of"),
        ("enabled", "is not name:item"),
    ],
)
def test_malformed_flags_are_refused_naming_the_fault(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_flag(text)
    assert fragment in str(caught.value)
    assert "expected true, false or a cohort" in str(caught.value)


@given(orgs=name_sets, tags=name_sets, probe=names, probe_tags=name_sets)
def test_a_cohort_admits_exactly_its_orgs_and_tags(
    orgs: frozenset[str], tags: frozenset[str], probe: str, probe_tags: frozenset[str]
) -> None:
    if not (orgs or tags):
        return  # the grammar has no empty cohort; that is "false"
    cohort = parse_flag(_cohort_text(orgs, tags))
    assert cohort == Cohort(orgs=orgs, tags=tags)
    for org in orgs:
        assert cohort.admits(org)
    assert cohort.admits(probe, probe_tags) == (probe in orgs or bool(probe_tags & tags))
    assert parse_flag(str(cohort)) == cohort


@given(tagged=st.dictionaries(names, name_sets.filter(bool), max_size=5), probe=names)
def test_org_tags_answer_each_orgs_tags(tagged: dict[str, frozenset[str]], probe: str) -> None:
    text = ";".join(f"{tag}:{','.join(sorted(orgs))}" for tag, orgs in tagged.items())
    by_org = parse_org_tags(text)
    expected = frozenset(tag for tag, orgs in tagged.items() if probe in orgs)
    assert by_org.get(probe, frozenset()) == expected


def test_org_tags_grammar() -> None:
    assert dict(parse_org_tags("")) == {}
    assert dict(parse_org_tags("internal:org_a,org_b;beta:org_a")) == {
        "org_a": frozenset({"internal", "beta"}),
        "org_b": frozenset({"internal"}),
    }
    for bad in ("internal", "internal:", "internal:org_a;", "a b:org_a"):
        with pytest.raises(ValueError, match="expected tag:org,org;tag:org"):
            parse_org_tags(bad)


def _flags(**values: object) -> Flags:
    return Flags.from_settings(GatewaySettings(**values))  # type: ignore[arg-type]


def test_evaluation_per_group_with_configured_and_claimed_tags() -> None:
    flags = _flags(
        portal_billing_enabled="tags:internal,beta;orgs:org_x",
        admin_billing_enabled="tags:internal",
        internal_billing_enabled="tags:internal",
        org_tags="internal:org_a;beta:org_b",
    )
    assert [flags.per_org(g) for g in ("portal", "admin", "internal")] == [True] * 3
    assert flags.admits("portal", "org_a")  # configured tag
    assert flags.admits("portal", "org_b")
    assert flags.admits("portal", "org_x")  # listed
    assert not flags.admits("portal", "org_c")
    assert flags.admits("portal", "org_c", frozenset({"beta"}))  # the token's claim
    assert not flags.admits("portal", "org_c", frozenset({"gamma"}))
    assert not flags.admits("admin", "")  # a staff token without an org
    assert flags.admits("admin", "", frozenset({"internal"}))
    # Internal calls: every org the request names, configured tags only.
    assert flags.admits_request({"org_a"}, "")
    assert not flags.admits_request({"org_a", "org_b"}, "")
    assert flags.admits_request(set(), "org_a")  # none named: the token's own org
    assert not flags.admits_request(set(), "")
    assert flags.features("org_b", frozenset()) == {
        "portal": True,
        "admin": False,
        "internal": False,
    }
    assert flags.features("org_c", frozenset({"internal"})) == {
        "portal": True,
        "admin": True,
        "internal": False,  # a portal token's claim says nothing to internal callers
    }
    assert (
        flags.describe()
        == "portal=tags:beta,internal;orgs:org_x admin=tags:internal internal=tags:internal"
    )


def test_true_and_false_decide_without_an_org() -> None:
    flags = _flags(portal_billing_enabled=True, admin_billing_enabled="false")
    assert not flags.off("portal") and not flags.per_org("portal")
    assert flags.admits("portal", "")
    assert flags.off("admin") and not flags.per_org("admin")
    assert not flags.admits("admin", "org_a", frozenset({"internal"}))
    assert flags.admits_request(set(), "")  # internal is on for everyone


@pytest.mark.parametrize("group", ["PORTAL", "ADMIN", "INTERNAL"])
def test_a_malformed_flag_stops_the_start_in_one_line(group: str) -> None:
    env = {f"GATEWAY_{group}_BILLING_ENABLED": "tags:internal;"}
    with mock.patch.dict(os.environ, env, clear=True):
        settings = load_settings(GatewaySettings)  # the kit carries the text as given
        with pytest.raises(StartupError) as caught:
            Flags.from_settings(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"invalid configuration: GATEWAY_{group}_BILLING_ENABLED or {group}_BILLING_ENABLED: "
    )


def test_malformed_org_tags_stop_create_app() -> None:
    from gateway.app import create_app

    with pytest.raises(StartupError, match="GATEWAY_ORG_TAGS or ORG_TAGS: expected tag:org"):
        create_app(GatewaySettings(org_tags="internal", audit_dir=""))
    with pytest.raises(StartupError, match="GATEWAY_PORTAL_BILLING_ENABLED"):
        create_app(GatewaySettings(portal_billing_enabled="orgs:", audit_dir=""))


def test_settings_keep_booleans_and_carry_cohorts() -> None:
    env = {
        "PORTAL_BILLING_ENABLED": "tags:internal",
        "GATEWAY_ADMIN_BILLING_ENABLED": "off",
        "INTERNAL_BILLING_ENABLED": "1",
        "GATEWAY_ORG_TAGS": "internal:org_a",
    }
    with mock.patch.dict(os.environ, env, clear=True):
        settings = load_settings(GatewaySettings)
    assert settings.portal_billing_enabled == "tags:internal"
    assert settings.admin_billing_enabled is False
    assert settings.internal_billing_enabled is True
    assert settings.org_tags == "internal:org_a"
    with mock.patch.dict(os.environ, {"TALLY_PROFILE": "production"}, clear=True):
        production = load_settings(GatewaySettings)
    assert Flags.from_settings(production).describe() == "portal=false admin=false internal=false"


# --- the orgs a request names --------------------------------------------------

org_ids = st.sampled_from(["", "org_a", "org_b", "org_c"])


def _event(org: str) -> resources_pb2.UsageEvent:
    event = resources_pb2.UsageEvent(org_id=org, metric_code="api_calls", value="1")
    event.properties["org_id"] = "not-an-org"  # a map entry is never a field path
    event.event_time.GetCurrentTime()
    return event


@given(orgs=st.lists(org_ids, max_size=30), single=org_ids, reads=st.lists(org_ids, max_size=5))
def test_request_orgs_agree_with_the_generic_walk(
    orgs: list[str], single: str, reads: list[str]
) -> None:
    messages = [
        usage_pb2.RecordUsageBatchRequest(events=[_event(o) for o in orgs]),
        usage_pb2.RecordUsageRequest(event=_event(single)),
        usage_pb2.RecordUsageRequest(),
        subscriptions_pb2.CheckEntitlementRequest(org_id=single, feature_key="seats"),
        usage_pb2.BatchGetAggregatesRequest(
            requests=[usage_pb2.GetAggregateRequest(org_id=o, metric_code="m") for o in reads]
        ),
    ]
    for message in messages:
        assert request_orgs(message) == {org for _, org in org_ids_in(message)}
    assert request_orgs(messages[0]) == set(orgs) - {""}
