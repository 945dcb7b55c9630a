"""The console's settings (pydantic-settings, ``CONSOLE_*`` or unprefixed, like the gateway's)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from services.kit.settings import DEFAULT_GATEWAY_PORT, DEV_HS256_SECRET, CommonSettings

DEFAULT_CONSOLE_PORT = 8090
# Signs the session cookie in `make run` only; production must bring its own.
DEV_SESSION_SECRET = "tally-console-dev-session-secret-do-not-use-in-production"


class ConsoleSettings(CommonSettings):
    env_prefix_name: ClassVar[str] = "CONSOLE"

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=DEFAULT_CONSOLE_PORT, ge=0, le=65535)
    gateway_url: str = f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}"
    # One gateway call may take this long; a page makes a handful, some at once.
    gateway_timeout_seconds: float = Field(default=5.0, gt=0)
    session_secret: str = DEV_SESSION_SECRET
    # Secure cookies need https: off for `make run` (plain http on 127.0.0.1),
    # on by default in production.
    session_https_only: bool = False
    session_max_age_seconds: int = Field(default=8 * 3600, gt=0)
    # Read from TALLY_PROFILE only, as the gateway does: `dev` shows the dev sign-in page.
    profile: Literal["dev", "production"] = Field(default="dev", validation_alias="tally_profile")
    # The signer of dev tokens: the same secret, audience and issuer as
    # `tally dev token` (the gateway's defaults), so the gateway accepts them.
    dev_token_secret: str = DEV_HS256_SECRET
    dev_token_audience: str = "tally-billing"
    dev_token_issuer: str = "tally-dev"
    dev_token_ttl_seconds: int = Field(default=8 * 3600, gt=0)

    @model_validator(mode="after")
    def _production_needs_its_own_session_secret(self) -> ConsoleSettings:
        # The dev secret is public: with it anyone could forge a session cookie.
        if self.profile == "production" and (
            "session_secret" not in self.model_fields_set
            or self.session_secret == DEV_SESSION_SECRET
        ):
            raise ValueError("TALLY_PROFILE=production needs a CONSOLE_SESSION_SECRET of your own")
        if self.profile == "production" and "session_https_only" not in self.model_fields_set:
            self.session_https_only = True
        return self

    @property
    def dev_sign_in(self) -> bool:
        return self.profile == "dev"
