"""JWKS from a URL: a real HTTP server on 127.0.0.1 serving a key set made here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.datastructures import Headers

from gateway.auth import Authorizer, TokenVerifier
from gateway.problems import Problem
from services.kit.devstack import free_port
from tests.support.gateway import AUDIENCE, ISSUER, gateway_settings

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    rsa_jwk.update(kid="r1", alg="RS256", use="sig")
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    ec_jwk.update(kid="e1", alg="ES256", use="sig")
    return {"keys": [rsa_jwk, ec_jwk]}


class JwksServer:
    """stdlib http.server in a thread; counts fetches, can answer slowly."""

    def __init__(self) -> None:
        self.fetches = 0
        self.delay = 0.0
        body = json.dumps(_jwks()).encode()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                time.sleep(owner.delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    try:
        yield server
    finally:
        server.close()


def claims() -> dict[str, object]:
    now = int(time.time())
    return {"sub": "u", "aud": AUDIENCE, "iss": ISSUER, "exp": now + 60, "nbf": now}


def problem_of(verifier: TokenVerifier, token: str) -> Problem:
    with pytest.raises(Problem) as caught:
        asyncio.run(verifier.verify_async(token))
    return caught.value


def test_rs256_and_es256_from_the_url_with_the_set_cached(jwks_server: JwksServer) -> None:
    v = TokenVerifier(gateway_settings(jwt_jwks_url=jwks_server.url))
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    es = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "e1"})
    assert asyncio.run(v.verify_async(rs)).subject == "u"
    assert asyncio.run(v.verify_async(es)).subject == "u"
    assert v.verify(rs).subject == "u"  # the synchronous path uses the same client
    assert jwks_server.fetches == 1  # PyJWKClient's set cache


def test_unknown_kid_and_wrong_key_type_are_401(jwks_server: JwksServer) -> None:
    v = TokenVerifier(gateway_settings(jwt_jwks_url=jwks_server.url))
    unknown = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "nope"})
    assert problem_of(v, unknown).status == 401
    # An RS256 token naming the EC key: the key's type decides, so refused.
    crossed = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "e1"})
    assert problem_of(v, crossed).status == 401
    no_kid = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert problem_of(v, no_kid).status == 401


def test_hs256_signed_with_the_public_key_is_401(jwks_server: JwksServer) -> None:
    # Even with no HS256 secret configured, and with one: HMAC never meets the JWKS keys.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
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
    for secret in (None, "another-secret-long-enough-for-hs256-0123456789"):
        v = TokenVerifier(gateway_settings(jwt_jwks_url=jwks_server.url, jwt_hs256_secret=secret))
        assert problem_of(v, confused).status == 401


def test_server_down_is_401_key_set_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}/jwks.json"  # nobody listens there
    v = TokenVerifier(gateway_settings(jwt_jwks_url=url, jwt_jwks_timeout_seconds=2))
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    problem = problem_of(v, token)
    assert problem.status == 401
    assert problem.reason == "KEY_SET_UNAVAILABLE"
    body = problem.body("rid-1")
    assert "key set" in body["detail"] and "unavailable" in body["detail"]
    assert problem.headers["WWW-Authenticate"].startswith("Bearer")


def test_authorizer_401_problem_when_the_server_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}/jwks.json"
    auth = Authorizer(gateway_settings(jwt_jwks_url=url, jwt_jwks_timeout_seconds=2))
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    headers = Headers({"authorization": f"Bearer {token}"})
    with pytest.raises(Problem) as caught:
        asyncio.run(auth.authorize("admin", "GET", headers))
    response = caught.value.response("rid-2")
    assert response.status_code == 401
    assert json.loads(bytes(response.body))["reason"] == "KEY_SET_UNAVAILABLE"


def test_the_fetch_does_not_block_the_event_loop(jwks_server: JwksServer) -> None:
    jwks_server.delay = 0.5
    v = TokenVerifier(gateway_settings(jwt_jwks_url=jwks_server.url))
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.create_task(ticker())
        await v.verify_async(token)
        task.cancel()
        return ticks

    # A blocked loop would not tick at all during the half-second fetch.
    assert asyncio.run(scenario()) >= 10
