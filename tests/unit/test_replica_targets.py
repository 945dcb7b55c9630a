"""Several processes of one service behind one gRPC target, calls spread round robin."""

from __future__ import annotations

import argparse
import json

import pytest

from devtools.bench.runner import replica_counts
from gateway.transcoding import service_config
from services.kit.rpc.channels import ROUND_ROBIN, replicas_target, round_robin_options


def test_one_address_is_its_own_target() -> None:
    assert replicas_target(["127.0.0.1:50052"]) == "127.0.0.1:50052"


def test_several_addresses_make_one_ipv4_target() -> None:
    target = replicas_target(["127.0.0.1:50052", "127.0.0.1:61000"])
    assert target == "ipv4:127.0.0.1:50052,127.0.0.1:61000"


def test_round_robin_options_carry_the_policy() -> None:
    ((name, value),) = round_robin_options()
    assert name == "grpc.service_config"
    assert json.loads(value)["loadBalancingConfig"] == [{"round_robin": {}}]


@pytest.mark.parametrize("methods", [(), ("GetPlan", "ListPlans")])
def test_the_gateway_spreads_calls_with_or_without_retried_reads(methods: tuple[str, ...]) -> None:
    config = json.loads(service_config("tally.catalog.v1.CatalogService", methods))
    assert config["loadBalancingConfig"] == ROUND_ROBIN["loadBalancingConfig"]
    assert ("methodConfig" in config) == bool(methods)


def test_bench_replica_counts_parse_and_refuse() -> None:
    assert replica_counts("") == {}
    assert replica_counts("subscriptions=1, usage=2") == {"subscriptions": 1, "usage": 2}
    with pytest.raises(argparse.ArgumentTypeError):
        replica_counts("subscriptions")
