"""Verified tokens are taken again without the signature check, never past their validity."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.auth import TokenVerifier
from gateway.problems import Problem
from gateway.tokencache import VerifiedTokens
from tests.support.gateway import gateway_settings, token


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_hit_honours_exp_nbf_iat_with_the_leeway() -> None:
    clock = Clock(1000.0)
    cache: VerifiedTokens[str] = VerifiedTokens(ttl=60, leeway=5, clock=clock)
    cache.put("t", "principal", {"exp": 1010, "nbf": 990, "iat": 990})
    assert cache.get("t") == "principal"
    clock.now = 1014.9  # exp 1010 plus the 5 s leeway, as PyJWT counts it
    assert cache.get("t") == "principal"
    clock.now = 1015.0
    assert cache.get("t") is None
    assert cache.get("t") is None  # dropped, not resurrected

    clock.now = 1000.0
    cache.put("early", "p", {"exp": 2000, "nbf": 1010})  # not yet valid by its clock
    assert cache.get("early") is None
    cache.put("clock-went-back", "p", {"exp": 2000, "iat": 1006})
    assert cache.get("clock-went-back") is None


def test_trust_ends_after_ttl_and_capacity_evicts_the_oldest() -> None:
    clock = Clock(0.0)
    cache: VerifiedTokens[str] = VerifiedTokens(ttl=60, leeway=0, capacity=2, clock=clock)
    cache.put("a", "A", {"exp": 10_000})
    cache.put("b", "B", {"exp": 10_000})
    cache.put("c", "C", {"exp": 10_000})
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, "B", "C")
    clock.now = 60.0
    assert cache.get("b") is None


def test_the_verifier_answers_a_cached_token_without_decoding_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verifier = TokenVerifier(gateway_settings())
    good = token(org="org_a", permissions=["organization:billing"])
    first = verifier.verify(good)
    decodes = 0
    real_decode = jwt.decode

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting)
    assert verifier.verify(good) == first
    assert decodes == 0
    # Another token is verified in full, and a bad one is still refused.
    verifier.verify(token(org="org_b"))
    assert decodes == 1
    swapped = "A" if good[-5] != "A" else "B"
    with pytest.raises(Problem):
        verifier.verify(good[:-5] + swapped + good[-4:])


def test_an_expired_cached_token_gets_the_verifiers_own_401() -> None:
    verifier = TokenVerifier(gateway_settings(jwt_leeway_seconds=0))
    short = token(org="org_a", ttl=1)
    assert verifier.verify(short).org_id == "org_a"
    time.sleep(1.1)
    with pytest.raises(Problem) as refused:
        verifier.verify(short)
    assert (refused.value.status, refused.value.detail) == (401, "token expired")
