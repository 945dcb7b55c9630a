"""Ingestion API keys: their shape and how a presented secret is recognised.

A secret is ``tally_<key_id>_<random>`` with 256 random bits. Only its SHA-256
digest is stored. A slow password hash (bcrypt, scrypt, argon2) buys nothing
here: its cost protects low-entropy secrets people choose, and guessing a
256-bit random secret is infeasible at any hash speed. It would instead cost
tens of milliseconds of CPU on every ingestion call the gateway cannot
answer from its cache, and its per-hash salt would rule out finding the key by
an indexed lookup of the digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from services.kit.errors import Violations

SECRET_PREFIX = "tally_"
KEY_ID_PREFIX = "key_"
MAX_NAME_LENGTH = 200
# Anything longer cannot be one of ours; hashed nonetheless it would only cost CPU.
MAX_SECRET_LENGTH = 200


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    org_id: str
    name: str
    create_time: datetime
    revoke_time: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoke_time is not None


def secret_for(key_id: str, random_part: str) -> str:
    return f"{SECRET_PREFIX}{key_id}_{random_part}"


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def plausible_secret(secret: str) -> bool:
    """Whether ``secret`` has our shape at all (saves a database round trip for junk)."""
    return secret.startswith(SECRET_PREFIX + KEY_ID_PREFIX) and len(secret) <= MAX_SECRET_LENGTH


def validate_new_key(org_id: str, name: str) -> None:
    v = Violations()
    v.require(org_id, "org_id")
    v.check(len(name) <= MAX_NAME_LENGTH, "name", f"at most {MAX_NAME_LENGTH} characters")
    v.raise_if_any()
