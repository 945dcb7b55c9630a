"""Payment providers behind one protocol; ``provider_from_settings`` picks one."""

from __future__ import annotations

from services.payments.provider.base import (
    ChargeRequest,
    ChargeResult,
    InvalidWebhook,
    PaymentProvider,
    ProviderError,
    ProviderEvent,
    ProviderPaymentMethod,
    RefundResult,
    SetupIntentResult,
)
from services.payments.settings import PaymentsSettings, require_provider_settings


def provider_from_settings(settings: PaymentsSettings) -> PaymentProvider:
    require_provider_settings(settings)
    from services.payments.provider.stripe_provider import StripeProvider

    assert settings.stripe_api_key is not None
    secrets = tuple(
        s.get_secret_value()
        for s in (settings.stripe_webhook_secret, settings.stripe_webhook_secret_previous)
        if s is not None
    )
    return StripeProvider(
        settings.stripe_api_key.get_secret_value(),
        secrets,
        api_base=settings.stripe_api_base,
        timeout_seconds=settings.provider_timeout_seconds,
    )


__all__ = [
    "ChargeRequest",
    "ChargeResult",
    "InvalidWebhook",
    "PaymentProvider",
    "ProviderError",
    "ProviderEvent",
    "ProviderPaymentMethod",
    "RefundResult",
    "SetupIntentResult",
    "provider_from_settings",
]
