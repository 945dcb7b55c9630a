"""Developer tools that are not part of any service (the local Stripe emulator)."""
