"""deploy/ proven without Docker: the compose file against the Compose
specification's schema, the Kubernetes manifests against theirs, and every
command and variable they hand to Tally against `tally`'s own parser and the
settings classes that will read them."""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from functools import cache
from typing import Any
from unittest import mock

import pytest

from gateway.auth import TokenVerifier
from gateway.flags import GROUPS, Cohort, Flags
from services.cli.main import build_parser
from services.kit.addresses import service_address
from services.kit.settings import (
    DEFAULT_GATEWAY_PORT,
    DEFAULT_GRPC_PORTS,
    DEFAULT_HTTP_PORTS,
    SERVICE_NAMES,
    CommonSettings,
    GatewaySettings,
    ServiceSettings,
    load_settings,
)
from tests.support.deploy import (
    DEPLOY,
    PROCESSES,
    REPO,
    all_known_names,
    compose,
    compose_validator,
    dockerfile,
    dockerfile_env,
    dockerignore_excludes,
    env_example,
    k8s_documents,
    k8s_validator,
    known_names,
    schema_errors,
    settings_classes,
)

# Variables compose reads for itself, never handed to a Tally process: image
# names and tags, published ports, and the official PostgreSQL image's own.
COMPOSE_ONLY = {
    "TALLY_IMAGE",
    *(f"TALLY_{p.upper()}_VERSION" for p in PROCESSES),
    "TALLY_HTTP_BIND",
    "TALLY_HTTP_PORT",
    "POSTGRES_IMAGE",
    "NATS_IMAGE",
    "OTEL_COLLECTOR_IMAGE",
    "JAEGER_IMAGE",
    "PROMETHEUS_IMAGE",
    "JAEGER_UI_PORT",
    "PROMETHEUS_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
}
POSTGRES_IMAGE_ENV = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
# Where the ops commands (`tally status`, `tally verify`, ...) find each service.
CLI_ADDRESSES = {f"{s.upper()}_ADDR" for s in SERVICE_NAMES}
# Images without a shell or HTTP client to probe with; nothing depends on them.
NO_PROBE = {"otel-collector", "jaeger"}
RESTARTING = {"unless-stopped", "always", "on-failure"}


@cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _tally_args(argv: list[str]) -> argparse.Namespace:
    try:
        return _parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"`tally {' '.join(argv)}` does not parse") from None


def _process_of(command: list[str]) -> str:
    """serve/migrate/health <process> -> process, checked by tally's own parser."""
    args = _tally_args(command)
    assert args.command in {"serve", "migrate", "health"}, command
    process: str = args.service
    return process


def _tally_containers() -> dict[str, str]:
    """compose service -> the Tally process it runs."""
    return {
        name: _process_of(service["command"])
        for name, service in compose().services.items()
        if str(service.get("image", "")).startswith(env_example()["TALLY_IMAGE"])
    }


def _load(classes: list[type[CommonSettings]], env: dict[str, str]) -> list[CommonSettings]:
    with mock.patch.dict(os.environ, env, clear=True):
        return [load_settings(cls) for cls in classes]


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/", 1)[0])


# --- compose ----------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    assert schema_errors(compose_validator(), compose().resolved) == []


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = {"services": {"usage": {"image": "x", "healthchek": {"test": ["CMD", "true"]}}}}
    assert any("healthchek" in e for e in schema_errors(compose_validator(), broken))


def test_every_compose_variable_is_documented_and_every_documented_one_used() -> None:
    documented = set(env_example())
    assert compose().variables - documented == set(), "used in compose, missing in .env.example"
    assert documented - compose().variables == set(), "in .env.example, never used by compose"


def test_env_example_names_only_settings_and_compose_variables() -> None:
    unknown = set(env_example()) - all_known_names() - COMPOSE_ONLY
    assert unknown == set()


def test_env_example_loads_into_every_settings_class() -> None:
    env = env_example()
    for process in PROCESSES:
        loaded = _load(settings_classes(process), env)
        assert loaded, process
    with mock.patch.dict(os.environ, env, clear=True):
        gateway = load_settings(GatewaySettings)
    assert gateway.profile == "production"
    TokenVerifier(gateway)  # refuses a production profile with no key source


def _shipped_flags(env: dict[str, str]) -> Flags:
    with mock.patch.dict(os.environ, env, clear=True):
        return Flags.from_settings(load_settings(GatewaySettings))  # a bad value raises


def test_shipped_flags_open_the_groups_to_internal_tenants_only() -> None:
    # docs/runbooks/rollout.md: internal tenants, then beta, then everyone.
    (config,) = [d for _, d in k8s_documents() if d["kind"] == "ConfigMap"]
    internal_only = Cohort(tags=frozenset({"internal"}))
    for shipped in (env_example(), config["data"]):
        flags = _shipped_flags(shipped)
        assert {g: flags.cohorts[g] for g in GROUPS} == dict.fromkeys(GROUPS, internal_only)
        assert flags.org_tags == {"org_change_me": frozenset({"internal"})}
        assert flags.features("org_change_me", frozenset()) == dict.fromkeys(GROUPS, True)
        assert flags.features("org_customer", frozenset()) == dict.fromkeys(GROUPS, False)
    # Compose without a value for a flag: the group stays off.
    environment = compose().raw["services"]["gateway"]["environment"]
    for group in GROUPS:
        assert environment[f"GATEWAY_{group.upper()}_BILLING_ENABLED"].endswith(":-false}")


def test_every_tally_process_has_its_container_and_migrate_job() -> None:
    containers = _tally_containers()
    expected = {p: p for p in PROCESSES} | {f"{s}-migrate": s for s in SERVICE_NAMES}
    assert containers == expected


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_a_service_starts_after_its_migration_and_its_infrastructure(service: str) -> None:
    services = compose().services
    job, app = services[f"{service}-migrate"], services[service]
    assert job["command"] == ["migrate", service]
    assert job["restart"] == "no"
    assert job["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert job["image"] == app["image"]
    assert app["command"] == ["serve", service]
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "nats": {"condition": "service_healthy"},
        f"{service}-migrate": {"condition": "service_completed_successfully"},
    }


def test_the_gateway_starts_once_every_service_is_healthy() -> None:
    assert compose().services["gateway"]["depends_on"] == {
        s: {"condition": "service_healthy"} for s in SERVICE_NAMES
    }


def test_every_long_running_container_has_health_restart_and_limits() -> None:
    for name, service in compose().services.items():
        if name.endswith("-migrate"):
            continue
        assert service.get("restart") in RESTARTING, name
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert {"cpus", "memory"} <= set(limits), name
        health = service.get("healthcheck", {})
        if name in NO_PROBE:
            assert health == {"disable": True}, name
        else:
            assert health.get("test"), name


def test_health_checks_of_tally_containers_run_tally_health() -> None:
    for name, process in _tally_containers().items():
        if name.endswith("-migrate"):
            continue
        test = compose().services[name]["healthcheck"]["test"]
        assert test[:2] == ["CMD", "tally"], name
        assert _tally_args(test[2:]).command == "health"
        assert _process_of(test[2:]) == process


def test_the_cli_reads_the_service_addresses_compose_gives_it() -> None:
    for variable in CLI_ADDRESSES:
        service = variable.removesuffix("_ADDR").lower()
        with mock.patch.dict(os.environ, {variable: f"{service}:1"}):
            assert service_address(service) == f"{service}:1"


def test_tally_containers_set_only_variables_their_settings_read() -> None:
    for name, process in _tally_containers().items():
        environment = compose().services[name].get("environment", {})
        assert set(environment) - known_names(process) - CLI_ADDRESSES == set(), name
    assert set(compose().services["postgres"]["environment"]) == POSTGRES_IMAGE_ENV


def test_each_container_environment_loads_into_its_settings() -> None:
    image_env = dockerfile_env(dockerfile())
    for name, process in _tally_containers().items():
        environment = {k: str(v) for k, v in compose().services[name]["environment"].items()}
        loaded = _load(settings_classes(process), {**image_env, **environment})
        if process in SERVICE_NAMES and not name.endswith("-migrate"):
            kit = loaded[0]
            assert isinstance(kit, ServiceSettings)
            assert (kit.grpc_host, kit.http_host) == ("0.0.0.0", "0.0.0.0"), name
            assert kit.database_url.startswith("postgresql://"), name


def test_addresses_between_containers_use_each_service_default_ports() -> None:
    services = compose().services
    gateway = services["gateway"]["environment"]
    for service in SERVICE_NAMES:
        assert gateway[f"GATEWAY_{service.upper()}_ADDR"] == (
            f"{service}:{DEFAULT_GRPC_PORTS[service]}"
        )
    assert _port(gateway["GATEWAY_PAYMENTS_WEBHOOK_URL"]) == DEFAULT_HTTP_PORTS["payments"]
    assert services["invoicing"]["environment"]["INVOICING_USAGE_ADDR"] == (
        f"usage:{DEFAULT_GRPC_PORTS['usage']}"
    )
    published = services["gateway"]["ports"][0]
    assert _port(published) == DEFAULT_GATEWAY_PORT


def test_prometheus_scrapes_every_process_metrics_port() -> None:
    import yaml

    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    }
    expected = {f"{s}:{port}" for s, port in DEFAULT_HTTP_PORTS.items()}
    assert targets == expected | {f"gateway:{DEFAULT_GATEWAY_PORT}"}


def test_observability_is_an_optional_profile() -> None:
    services = compose().services
    for name in ("otel-collector", "jaeger", "prometheus"):
        assert services[name]["profiles"] == ["observability"]
    # Nothing in the default profile may need them.
    for service in services.values():
        assert not set(service.get("depends_on", {})) & {"otel-collector", "jaeger", "prometheus"}


# --- Dockerfile ---------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_enters_through_tally() -> None:
    instructions = dockerfile()
    stages = [i.arguments for i in instructions if i.keyword == "FROM"]
    assert len(stages) >= 3
    users = [i.arguments for i in instructions if i.keyword == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]), "numeric, not root"
    (entrypoint,) = [i for i in instructions if i.keyword == "ENTRYPOINT"]
    assert entrypoint.exec_form() == ["tally"]
    assert any(i.keyword == "RUN" and "protos/generate.py" in i.arguments for i in instructions), (
        "gen/ is not committed: the build must generate it"
    )


def test_dockerfile_has_one_target_per_process_serving_it() -> None:
    targets: dict[str, list[str]] = {}
    stage = ""
    for instruction in dockerfile():
        if instruction.keyword == "FROM":
            stage = instruction.arguments.split(" AS ")[-1].strip()
        elif instruction.keyword == "CMD" and stage in PROCESSES:
            targets[stage] = instruction.exec_form()
    assert targets == {p: ["serve", p] for p in PROCESSES}
    for name, service in compose().services.items():
        build = service.get("build")
        if build:
            assert build["dockerfile"] == "deploy/Dockerfile"
            assert build["target"] == _process_of(service["command"]), name


def test_dockerfile_pins_grpcio_tools_like_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (pin,) = [
        d for d in pyproject["project"]["optional-dependencies"]["dev"] if "grpcio-tools" in d
    ]
    args = [i.arguments for i in dockerfile() if i.keyword == "ARG"]
    assert f"GRPCIO_TOOLS_VERSION={pin.split('==')[1]}" in args


def test_dockerfile_env_names_settings() -> None:
    image_env = set(dockerfile_env(dockerfile()))
    runtime = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    pip = {"PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
    assert image_env - runtime - pip - all_known_names() == set()


def test_dockerignore_lets_in_only_what_the_image_copies() -> None:
    for path in (".venv", ".venv/bin/python", "gen/tally", ".git", ".tally", "tests", "bench"):
        assert dockerignore_excludes(path), path
    for path in ("services/kit/settings.py", "gateway/app.py", "protos/generate.py"):
        assert not dockerignore_excludes(path), path
    assert dockerignore_excludes("services/kit/__pycache__/settings.cpython-311.pyc")
    copied = [
        i.arguments.split()[0]
        for i in dockerfile()
        if i.keyword == "COPY" and not i.arguments.startswith("--from")
    ]
    assert copied and not [c for c in copied if dockerignore_excludes(c)]


# --- Kubernetes ------------------------------------------------------------------


def test_k8s_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    documents = k8s_documents()
    assert documents
    for filename, document in documents:
        validator = k8s_validator(document["apiVersion"], document["kind"])
        assert schema_errors(validator, document) == [], filename


def test_the_k8s_schema_check_catches_a_misspelt_field() -> None:
    _, deployment = next(d for d in k8s_documents() if d[1]["kind"] == "Deployment")
    broken: dict[str, Any] = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    assert schema_errors(k8s_validator("apps/v1", "Deployment"), broken)


def _pod_containers(kind: str) -> list[dict[str, Any]]:
    return [
        container
        for _, document in k8s_documents()
        if document["kind"] == kind
        for container in document["spec"]["template"]["spec"]["containers"]
    ]


def test_k8s_runs_every_process_with_grpc_readiness_and_a_migration_job_each() -> None:
    serving = {_process_of(c["args"]): c for c in _pod_containers("Deployment")}
    assert set(serving) == set(PROCESSES)
    for service in SERVICE_NAMES:
        container = serving[service]
        assert "grpc" in container["readinessProbe"], service
        grpc_probes = [p["grpc"] for p in container.values() if isinstance(p, dict) and "grpc" in p]
        assert {p["port"] for p in grpc_probes} == {DEFAULT_GRPC_PORTS[service]}, service
    assert serving["gateway"]["readinessProbe"]["httpGet"]["path"] == "/openapi.json"
    migrations = {_process_of(c["args"]): c for c in _pod_containers("Job")}
    assert set(migrations) == set(SERVICE_NAMES)
    for service, container in migrations.items():
        assert container["args"] == ["migrate", service]
        assert container["image"] == serving[service]["image"]


def test_k8s_configuration_names_only_settings() -> None:
    (config,) = [d for _, d in k8s_documents() if d["kind"] == "ConfigMap"]
    assert set(config["data"]) - all_known_names() == set()
    image_env = dockerfile_env(dockerfile())
    for kind in ("Deployment", "Job"):
        for container in _pod_containers(kind):
            process = _process_of(container["args"])
            names = {e["name"] for e in container.get("env", [])}
            assert names - known_names(process) == set(), container["name"]
            # Secrets are referenced, never inlined; load with stand-ins for them.
            env = {**image_env, **config["data"], **dict.fromkeys(names, "x")}
            if "DATABASE_URL" in names:
                env["DATABASE_URL"] = "postgresql://tally@postgres:5432/tally"
            _load(settings_classes(process), env)


def test_k8s_pods_run_as_the_image_non_root_user() -> None:
    (user,) = [i.arguments for i in dockerfile() if i.keyword == "USER"]
    uid = int(user.split(":")[0])
    for _, document in k8s_documents():
        if document["kind"] in {"Deployment", "Job"}:
            pod = document["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == uid
