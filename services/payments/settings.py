"""Knobs of the payments service only.

Read as ``PAYMENTS_*`` first, then unprefixed (``STRIPE_API_KEY``,
``PAYMENT_PROVIDER``), the names Stripe's own docs and compose files use.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from services.kit.errors import StartupError
from services.kit.settings import CommonSettings, load_settings


class PaymentsSettings(CommonSettings):
    env_prefix_name: ClassVar[str] = "PAYMENTS"

    payment_provider: Literal["stripe"] = "stripe"
    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    # Accepted beside the current secret while a rotation is under way.
    stripe_webhook_secret_previous: SecretStr | None = None
    # Points the SDK at an emulator or proxy; unset for api.stripe.com.
    stripe_api_base: str | None = None
    stripe_publishable_key: str = ""
    # Waits between dunning retries, in days ("1,3,5").
    dunning_retry_days: Annotated[tuple[int, ...], NoDecode] = (1, 3, 5)
    dunning_interval_seconds: float = Field(default=60.0, ge=0)
    # How often undispatched attempts are (re)sent; the dispatcher also wakes on demand.
    dispatch_interval_seconds: float = Field(default=5.0, gt=0)
    # How often provider events are reconciled; 0 disables the job.
    sync_interval_seconds: float = Field(default=300.0, ge=0)
    # The first sync (no cursor yet) looks back this far.
    sync_lookback_seconds: float = Field(default=86400.0, gt=0)
    # An attempt sent but unsettled this long is asked about by the sync.
    stale_attempt_seconds: float = Field(default=60.0, ge=0)
    provider_timeout_seconds: float = Field(default=20.0, gt=0)
    # Outbound webhooks: how often due deliveries are sent (it also wakes on
    # new ones) and how long one POST may take.
    webhook_dispatch_interval_seconds: float = Field(default=5.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("dunning_retry_days", mode="before")
    @classmethod
    def _days_from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(int(p) for p in value.split(",") if p.strip())
        return value

    @field_validator("dunning_retry_days")
    @classmethod
    def _days_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 0 for d in value):
            raise ValueError("retry days must not be negative")
        return value


def payments_settings() -> PaymentsSettings:
    return load_settings(PaymentsSettings)


def require_provider_settings(settings: PaymentsSettings) -> None:
    if settings.payment_provider == "stripe" and settings.stripe_api_key is None:
        raise StartupError(
            "payments: STRIPE_API_KEY (or PAYMENTS_STRIPE_API_KEY) is not set;"
            " set it (and STRIPE_API_BASE for a local emulator)"
        )
