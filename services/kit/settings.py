"""Service configuration from environment variables (pydantic-settings).

Every variable can be given per service (``USAGE_DATABASE_URL``) or once for
all (``DATABASE_URL``); the prefixed one wins. Compose sets the unprefixed
names per container, while ``tally dev up`` and tests can run five services
from one environment with prefixed overrides.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from services.kit.eventloop import DEFAULT_EVENT_LOOP, EventLoopName

SERVICE_NAMES: tuple[str, ...] = ("catalog", "subscriptions", "usage", "invoicing", "payments")

# The ports the README promises; each overridable by <SERVICE>_GRPC_PORT.
DEFAULT_GRPC_PORTS: dict[str, int] = {
    "catalog": 50051,
    "subscriptions": 50052,
    "usage": 50053,
    "invoicing": 50054,
    "payments": 50055,
}
# Each service's own HTTP port (health, /metrics, payments' Stripe webhooks);
# each overridable by <SERVICE>_HTTP_PORT.
DEFAULT_HTTP_PORTS: dict[str, int] = {
    "catalog": 8081,
    "subscriptions": 8082,
    "usage": 8083,
    "invoicing": 8084,
    "payments": 8085,
}
DEFAULT_GATEWAY_PORT = 8080
# The gateway's HS256 secret when none is set, for `make run` only; never used
# in the production profile.
DEV_HS256_SECRET = "tally-dev-secret-do-not-use-in-production"
GATEWAY_FLAGS = ("portal_billing_enabled", "admin_billing_enabled", "internal_billing_enabled")


def libpq_url(url: str) -> str:
    """What asyncpg's own ``connect`` wants: the plain libpq form, also from SQLAlchemy's."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def asyncpg_url(url: str) -> str:
    """Accept the libpq-style URL ops write and give SQLAlchemy its asyncpg dialect."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host:port/db)")


class CommonSettings(BaseSettings):
    """Settings every process shares; subclasses add their own fields."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, env_ignore_empty=True)

    # Subclasses set the prefix; empty means "no per-service override".
    env_prefix_name: ClassVar[str] = ""

    log_level: str = "INFO"
    log_format: str = Field(default="text", pattern="^(text|json)$")
    # uvloop unless a loop-specific problem needs ruling out (services/kit/eventloop.py).
    event_loop: EventLoopName = DEFAULT_EVENT_LOOP
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        if cls.env_prefix_name:
            sources.append(EnvSettingsSource(settings_cls, env_prefix=f"{cls.env_prefix_name}_"))
        sources.append(EnvSettingsSource(settings_cls, env_prefix=""))
        return tuple(sources)


class ServiceSettings(CommonSettings):
    """What a gRPC service process needs: its database schema, NATS and ports."""

    service_name: ClassVar[str] = ""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/tally"
    db_schema: str = ""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # A pooled connection idle this long is pinged before use (kit/db.py).
    db_ping_idle_seconds: float = Field(default=1.0, ge=0)
    nats_url: str = "nats://127.0.0.1:4222"
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    # Largest gRPC request accepted; bigger ones get RESOURCE_EXHAUSTED. The
    # biggest legitimate request, a 1,000-event usage batch, stays far below.
    grpc_max_receive_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024)
    # Off only where nothing needs it (some tests); payments' webhooks live there.
    http_enabled: bool = True
    # Ops run API-only and worker-only replicas of one image with this switch.
    worker_billing_enabled: bool = True
    shutdown_grace_seconds: float = Field(default=10.0, gt=0)
    startup_timeout_seconds: float = Field(default=10.0, gt=0)
    # Outbox relay and consumers.
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    outbox_batch_size: int = Field(default=500, ge=1)
    consumer_batch_size: int = Field(default=100, ge=1)
    consumer_max_deliver: int = Field(default=5, ge=1)
    consumer_backoff_seconds: tuple[float, ...] = (1.0, 5.0, 30.0, 120.0)
    # Aggregates applied at once by the consumers that opt in (period closes);
    # each holds a pooled connection, so it is capped at db_pool_size.
    consumer_concurrency: int = Field(default=8, ge=1, le=64)
    # Messages those consumers apply in one transaction (see kit/consumer.py):
    # fewer commits and round trips per event, longer-held row locks.
    consumer_messages_per_transaction: int = Field(default=10, ge=1, le=500)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str) -> str:
        asyncpg_url(value)
        return value

    @field_validator("nats_url")
    @classmethod
    def _nats_url_has_scheme(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"not a NATS URL: {url!r} (expected nats://host:port)")
        return value

    def model_post_init(self, context: Any) -> None:
        if not self.db_schema:
            self.db_schema = self.service_name
        if not self.grpc_port:
            self.grpc_port = DEFAULT_GRPC_PORTS.get(self.service_name, 0)
        if not self.http_port:
            self.http_port = DEFAULT_HTTP_PORTS.get(self.service_name, 0)
        self.consumer_concurrency = min(self.consumer_concurrency, self.db_pool_size)

    @property
    def sqlalchemy_url(self) -> str:
        return asyncpg_url(self.database_url)


def settings_class_for(service: str) -> type[ServiceSettings]:
    """The settings class of one service, reading ``<SERVICE>_*`` before the shared names."""
    if service not in SERVICE_NAMES:
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICE_NAMES)}")
    return type(
        f"{service.capitalize()}Settings",
        (ServiceSettings,),
        {"service_name": service, "env_prefix_name": service.upper(), "__module__": __name__},
    )


_ORIGIN = re.compile(r"^https?://[^/?#\s]+$")


def _split_commas(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


class GatewaySettings(CommonSettings):
    env_prefix_name: ClassVar[str] = "GATEWAY"

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=DEFAULT_GATEWAY_PORT, ge=0, le=65535)
    catalog_addr: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS['catalog']}"
    subscriptions_addr: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS['subscriptions']}"
    usage_addr: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS['usage']}"
    invoicing_addr: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS['invoicing']}"
    payments_addr: str = f"127.0.0.1:{DEFAULT_GRPC_PORTS['payments']}"
    grpc_deadline_seconds: float = Field(default=5.0, gt=0)
    health_deadline_seconds: float = Field(default=1.0, gt=0)
    # true, false, or a cohort such as "tags:internal;orgs:org_a" (gateway/flags.py
    # parses and checks them at start-up; the kit only carries the text).
    # left_to_right: a boolean spelling (true, 0, off...) stays a bool as before.
    portal_billing_enabled: bool | str = Field(default=True, union_mode="left_to_right")
    admin_billing_enabled: bool | str = Field(default=True, union_mode="left_to_right")
    internal_billing_enabled: bool | str = Field(default=True, union_mode="left_to_right")
    # Which orgs carry which cohort tag: "internal:org_a,org_b;beta:org_c".
    org_tags: str = ""
    # `dev` (make run, tally dev up) or `production`. Read from TALLY_PROFILE only:
    # an alias is not prefixed, so GATEWAY_TALLY_PROFILE is not a second spelling.
    profile: Literal["dev", "production"] = Field(default="dev", validation_alias="tally_profile")
    # JWT: HS256 with a shared secret for dev, RS256/ES256 from a JWKS file or URL
    # in production. The default secret is for `make run` only; the production
    # profile drops it (see _production_defaults).
    jwt_hs256_secret: str | None = DEV_HS256_SECRET
    jwt_jwks_file: str | None = None
    # Fetched with PyJWKClient, cached this long; a fetch waits at most the timeout.
    jwt_jwks_url: str | None = None
    jwt_jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwt_jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    jwt_audience: str = "tally-billing"
    jwt_issuer: str = "tally-dev"
    jwt_leeway_seconds: float = Field(default=30.0, ge=0)
    # A static key services may send as X-Api-Key instead of a service JWT.
    internal_api_key: str | None = None
    # Ingestion API keys (the dialect routes) verified by the usage service are
    # cached this long: a revoked key stops working within it (at once when it
    # is revoked through this gateway process).
    api_key_cache_seconds: float = Field(default=10.0, ge=0)
    # Fernet key sealing Stripe v2 meter event session tokens; unset: one per
    # process (then a session works only on the replica that opened it).
    meter_session_key: str | None = None
    # `limits` notation ("120/minute"); storage is in-memory unless a URI is given.
    rate_limit_per_subject: str = "600/minute"
    rate_limit_per_org: str = "1200/minute"
    rate_limit_storage_uri: str = "async+memory://"
    # Where Stripe webhooks are forwarded (the payments service's HTTP port).
    payments_webhook_url: str | None = None
    # CORS for a browser front end on another origin: comma-separated origins
    # ("https://app.example.com,http://localhost:5173"); empty is off, no headers.
    cors_allowed_origins: str = ""
    # Cookies or HTTP auth sent by the browser; bearer tokens in Authorization need it not.
    cors_allow_credentials: bool = False
    cors_max_age_seconds: int = Field(default=600, ge=0)

    @field_validator("cors_allowed_origins")
    @classmethod
    def _origins_are_origins(cls, value: str) -> str:
        for origin in _split_commas(value):
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return value

    @model_validator(mode="after")
    def _no_credentials_for_every_origin(self) -> GatewaySettings:
        # Starlette would echo any Origin back with credentials allowed: every
        # site could then call the API as the browser's signed-in user.
        if self.cors_allow_credentials and "*" in self.cors_origins():
            raise ValueError("cors_allow_credentials needs explicit origins, not '*'")
        return self

    def cors_origins(self) -> tuple[str, ...]:
        return _split_commas(self.cors_allowed_origins)

    @model_validator(mode="after")
    def _production_defaults(self) -> GatewaySettings:
        # Production must opt in to each route group and to a secret: defaults
        # that suit `make run` would otherwise ship open groups and a public secret.
        # model_fields_set holds what init or the environment gave explicitly.
        if self.profile == "production":
            for name in GATEWAY_FLAGS:
                if name not in self.model_fields_set:
                    setattr(self, name, False)
            if "jwt_hs256_secret" not in self.model_fields_set:
                self.jwt_hs256_secret = None
        return self

    def service_addresses(self) -> dict[str, str]:
        return {name: getattr(self, f"{name}_addr") for name in SERVICE_NAMES}


S = TypeVar("S", bound=CommonSettings)


def load_settings(cls: type[S]) -> S:
    """Build settings, turning validation errors into one line naming the variables."""
    from pydantic import ValidationError

    from services.kit.errors import StartupError

    try:
        return cls()
    except ValidationError as exc:
        prefix = f"{cls.env_prefix_name}_" if cls.env_prefix_name else ""
        problems = "; ".join(
            f"{prefix}{name} or {name}: {err['msg']}"
            for err in exc.errors()
            for name in ["_".join(str(p) for p in err["loc"]).upper()]
        )
        raise StartupError(f"invalid configuration: {problems}") from None
