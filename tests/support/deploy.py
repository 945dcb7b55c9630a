"""Reading deploy/ the way Docker Compose, Docker and Kubernetes would, without them.

Compose interpolates ``${VAR}`` in values after parsing the YAML and before
checking the result against its schema; Kubernetes checks each document
against the schema of its kind. The schemas are the copies in deploy/schemas.
What each Tally process accepts comes from its own settings classes.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from services.kit.settings import (
    SERVICE_NAMES,
    CommonSettings,
    GatewaySettings,
    settings_class_for,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCHEMAS = DEPLOY / "schemas"
K8S_SCHEMAS = SCHEMAS / "kubernetes-v1.37.0-local-strict"
PROCESSES = (*SERVICE_NAMES, "gateway", "console")

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error},
# ${NAME:+alt}, ${NAME+alt}, $NAME; $$ is a literal $ for the container.
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?$", re.S)


class InterpolationError(ValueError):
    pass


def interpolate_text(text: str, env: Mapping[str, str], used: set[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            used.add(match["named"])
            return env.get(match["named"], "")
        braced = match["braced"]
        if "$" in braced:
            raise InterpolationError(f"nested interpolation is not checked here: ${{{braced}}}")
        parsed = _BRACED.match(braced)
        if parsed is None:
            raise InterpolationError(f"not a compose variable: ${{{braced}}}")
        name, op, arg = parsed["name"], parsed["op"], parsed["arg"] or ""
        used.add(name)
        value = env.get(name)
        present = value is not None and (value != "" or not (op or "").startswith(":"))
        if op in (":-", "-"):
            return value if present and value is not None else arg
        if op in (":?", "?"):
            if not present or value is None:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op in (":+", "+"):
            return arg if present else ""
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate(document: Any, env: Mapping[str, str], used: set[str]) -> Any:
    """Every string value interpolated; keys are left alone, as compose does."""
    if isinstance(document, str):
        return interpolate_text(document, env, used)
    if isinstance(document, list):
        return [interpolate(item, env, used) for item in document]
    if isinstance(document, dict):
        return {key: interpolate(value, env, used) for key, value in document.items()}
    return document


def env_example() -> dict[str, str]:
    values = dotenv_values(DEPLOY / ".env.example")
    return {key: value or "" for key, value in values.items()}


@dataclass(frozen=True)
class Compose:
    raw: dict[str, Any]
    resolved: dict[str, Any]  # interpolated with deploy/.env.example
    variables: frozenset[str]  # every ${VAR} the file names

    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.resolved["services"]
        return services


@cache
def compose() -> Compose:
    raw = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    used: set[str] = set()
    resolved = interpolate(raw, env_example(), used)
    return Compose(raw, resolved, frozenset(used))


def load_schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def schema_errors(validator: Draft202012Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    ]


@cache
def compose_validator() -> Draft202012Validator:
    return Draft202012Validator(load_schema(SCHEMAS / "compose-spec.json"))


@cache
def _k8s_registry() -> Registry[Any]:
    definitions = load_schema(K8S_SCHEMAS / "_definitions.json")
    resource: Resource[Any] = Resource.from_contents(definitions)
    return resource @ Registry()


def k8s_validator(api_version: str, kind: str) -> Draft202012Validator:
    """The strict schema of one kind: apps/v1 Deployment -> deployment-apps-v1.json."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = K8S_SCHEMAS / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        raise AssertionError(f"no schema kept for {api_version} {kind} (looked for {path.name})")
    return Draft202012Validator(load_schema(path), registry=_k8s_registry())


@cache
def k8s_documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                documents.append((path.name, document))
    return tuple(documents)


# --- what each process accepts ------------------------------------------------


def settings_classes(process: str) -> list[type[CommonSettings]]:
    """Every settings class the process reads: the kit's and the service's own."""
    if process == "gateway":
        return [GatewaySettings]
    if process == "console":
        from console.settings import ConsoleSettings

        return [ConsoleSettings]
    for module in (f"services.{process}.bootstrap", f"services.{process}.settings"):
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    own = [
        cls
        for cls in _subclasses(CommonSettings)
        if cls.__module__.startswith(f"services.{process}.")
        and cls.env_prefix_name == process.upper()
    ]
    return [settings_class_for(process), *own]


def _subclasses(cls: type[CommonSettings]) -> Iterable[type[CommonSettings]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def env_names(cls: type[CommonSettings]) -> set[str]:
    """The variables one class reads: ``NAME`` and ``<PREFIX>_NAME``, or its alias alone."""
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if alias is not None:
            if not isinstance(alias, str):
                raise AssertionError(f"{cls.__name__}.{field_name}: alias {alias!r} not handled")
            names.add(alias.upper())  # pydantic-settings never prefixes an alias
            continue
        names.add(field_name.upper())
        if cls.env_prefix_name:
            names.add(f"{cls.env_prefix_name}_{field_name.upper()}")
    return names


@cache
def known_names(process: str) -> frozenset[str]:
    return frozenset().union(*(env_names(cls) for cls in settings_classes(process)))


def all_known_names() -> frozenset[str]:
    return frozenset().union(*(known_names(p) for p in PROCESSES))


# --- Dockerfile and .dockerignore --------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.arguments)
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise AssertionError(f"{self.keyword} is not in exec form: {self.arguments}")
        return value


def dockerfile() -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """The ENV of the last stage's lineage, as KEY=VALUE pairs (the form used here)."""
    env: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.arguments):
                key, sep, value = pair.partition("=")
                if not sep:
                    raise AssertionError(f"ENV without '=': {instruction.arguments}")
                env[key] = value
    return env


def _ignore_matches(pattern: str, candidate: str) -> bool:
    if pattern.startswith("**/"):  # any depth: compare the last segment
        return fnmatch.fnmatchcase(candidate.rsplit("/", 1)[-1], pattern[3:])
    # Docker's * never crosses a /: compare paths of the same depth only.
    return candidate.count("/") == pattern.count("/") and fnmatch.fnmatchcase(candidate, pattern)


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or a parent of it decides."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!")
        if any(_ignore_matches(body, c) for c in candidates):
            excluded = not negated
    return excluded
