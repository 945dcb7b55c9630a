"""Token verification and the route-group rules."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.datastructures import Headers

from gateway.auth import Authorizer, TokenVerifier
from gateway.problems import Problem
from tests.support.gateway import AUDIENCE, ISSUER, SECRET, gateway_settings, token


def verifier(**overrides: object) -> TokenVerifier:
    return TokenVerifier(gateway_settings(**overrides))


def status_of(fn: object) -> int:
    try:
        result = fn()  # type: ignore[operator]
        if inspect.iscoroutine(result):  # Authorizer.authorize is async
            asyncio.run(result)
    except Problem as problem:
        return problem.status
    return 200


def claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "u", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 60, "nbf": now, **extra}


def test_good_token() -> None:
    principal = verifier().verify(token(org="org_a", permissions=["organization:billing"]))
    assert principal.org_id == "org_a"
    assert "organization:billing" in principal.permissions


@pytest.mark.parametrize(
    "bad",
    [
        # expired (beyond the 30 s leeway)
        token(org="a", now=time.time() - 3600, ttl=60),
        # forged: signed with another secret
        jwt.encode(claims(), "not-the-secret-but-just-as-long-0123456789", algorithm="HS256"),
        # wrong audience, wrong issuer
        jwt.encode(claims(aud="someone-else"), SECRET, algorithm="HS256"),
        jwt.encode(claims(iss="evil"), SECRET, algorithm="HS256"),
        # not yet valid
        jwt.encode(claims(nbf=int(time.time()) + 3600), SECRET, algorithm="HS256"),
        # no exp at all
        jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"),
        # alg none, unsigned
        jwt.encode(claims(), None, algorithm="none"),
        # HS512 with the right secret: not in the accepted list
        jwt.encode(claims(), SECRET, algorithm="HS512"),
        "not.a.token",
    ],
)
def test_bad_tokens_are_401(bad: str) -> None:
    assert status_of(lambda: verifier().verify(bad)) == 401


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_jwks_rs256_and_es256_and_no_algorithm_confusion(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    rsa_jwk.update(kid="r1", alg="RS256", use="sig")
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    ec_jwk.update(kid="e1", alg="ES256", use="sig")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
    v = verifier(jwt_jwks_file=str(jwks))

    good_rs = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "r1"})
    good_es = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "e1"})
    assert v.verify(good_rs).subject == "u"
    assert v.verify(good_es).subject == "u"

    # Algorithm confusion: HS256 "signed" with the RSA public key as the secret.
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": "JWT", "kid": "r1"}
    signing_input = (
        base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")
        + b"."
        + base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    )
    signature = base64.urlsafe_b64encode(
        hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    ).rstrip(b"=")
    confused = (signing_input + b"." + signature).decode()
    assert status_of(lambda: v.verify(confused)) == 401
    # An RS256 token claiming the EC key's id: the key type decides, so refused.
    wrong_kid = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "e1"})
    assert status_of(lambda: v.verify(wrong_kid)) == 401


def headers(bearer: str | None = None, **extra: str) -> Headers:
    values = {k.replace("_", "-"): v for k, v in extra.items()}
    if bearer:
        values["authorization"] = f"Bearer {bearer}"
    return Headers(values)


def test_group_rules() -> None:
    auth = Authorizer(gateway_settings())
    portal = token(org="org_a", permissions=["organization:billing"])
    no_perm = token(org="org_a", permissions=["organization:read"])
    no_org = token(permissions=["organization:billing"])
    admin = token(roles=["billing_admin"])
    support = token(roles=["billing_support"])
    service = token(service="product-api")

    assert status_of(lambda: auth.authorize("portal", "GET", headers(portal))) == 200
    assert status_of(lambda: auth.authorize("portal", "GET", headers(no_perm))) == 403
    assert status_of(lambda: auth.authorize("portal", "GET", headers(no_org))) == 403
    assert status_of(lambda: auth.authorize("portal", "GET", headers())) == 401

    assert status_of(lambda: auth.authorize("admin", "POST", headers(admin))) == 200
    assert status_of(lambda: auth.authorize("admin", "GET", headers(support))) == 200
    assert status_of(lambda: auth.authorize("admin", "POST", headers(support))) == 403
    assert status_of(lambda: auth.authorize("admin", "GET", headers(portal))) == 403

    assert status_of(lambda: auth.authorize("internal", "POST", headers(service))) == 200
    assert status_of(lambda: auth.authorize("internal", "POST", headers(portal))) == 403
    key_ok = headers(x_api_key="test-internal-key")
    assert status_of(lambda: auth.authorize("internal", "POST", key_ok)) == 200
    key_bad = headers(x_api_key="nope")
    assert status_of(lambda: auth.authorize("internal", "POST", key_bad)) == 401


def test_tally_dev_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli.main import main

    monkeypatch.setenv("GATEWAY_JWT_HS256_SECRET", SECRET)
    argv = ["dev", "token", "--org", "org_a", "--permission", "organization:billing"]
    assert main([*argv, "--role", "billing_admin", "--ttl", "120"]) == 0
    printed = capsys.readouterr().out.strip()
    principal = verifier().verify(printed)
    assert principal.org_id == "org_a"
    assert principal.permissions == {"organization:billing"}
    assert principal.roles == {"billing_admin"}
    assert principal.claims["exp"] - principal.claims["iat"] == 120
