"""A local Stripe emulator for development and tests (see README.md beside this file)."""

from devtools.stripe_emulator.emulator import (
    DEFAULT_API_KEY,
    DEFAULT_PUBLISHABLE_KEY,
    DEFAULT_WEBHOOK_SECRET,
    StripeEmulator,
)

__all__ = ["DEFAULT_API_KEY", "DEFAULT_PUBLISHABLE_KEY", "DEFAULT_WEBHOOK_SECRET", "StripeEmulator"]
