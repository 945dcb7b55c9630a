"""The HTTP face: Stripe's routes, auth, idempotency, expansion and error bodies."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.stripe_emulator import forms
from devtools.stripe_emulator import params as p
from devtools.stripe_emulator.errors import StripeError
from devtools.stripe_emulator.idempotency import IdempotencyStore, StoredResponse, fingerprint
from devtools.stripe_emulator.ids import new_id
from devtools.stripe_emulator.state import Obj, Params, Store

# A handler gets the decoded parameters, the path parameters and the request URL path.
Handler = Callable[[Store, Params, dict[str, str], str], Obj]


class Api:
    """Everything a request needs besides the store: the key and the request log."""

    def __init__(self, store: Store, api_key: Callable[[], str]) -> None:
        self.store = store
        self.api_key = api_key
        self.idempotency = IdempotencyStore()
        self.requests: list[tuple[str, str, str | None]] = []
        # Runs after each POST's response is made (and stored for its key), before it is sent.
        self.after_post: Callable[[], None] = lambda: None


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, indent=2).encode()


def _json(status: int, payload: Any, request_id: str) -> Response:
    return _raw(status, _encode(payload), request_id)


def _raw(status: int, body: bytes, request_id: str, **headers: str) -> Response:
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"Request-Id": request_id, **headers},
    )


def _expand(store: Store, obj: Any, path: list[str]) -> None:
    if not path or not isinstance(obj, dict):
        return
    head, rest = path[0], path[1:]
    if obj.get("object") == "list" and head == "data":
        for item in obj["data"]:
            _expand(store, item, rest)
        return
    value = obj.get(head)
    if isinstance(value, str) and value in store.objects:
        obj[head] = value = copy.deepcopy(store.objects[value])
    _expand(store, value, rest)


def _endpoint(api: Api, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    respond = _responder(api, handler)

    async def endpoint(request: Request) -> Response:
        response = await respond(request)
        if request.method == "POST":
            api.after_post()
        return response

    return endpoint


def _responder(api: Api, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def respond(request: Request) -> Response:
        request_id = new_id("req")[:18]
        method = request.method
        path = request.url.path
        key = request.headers.get("idempotency-key") if method == "POST" else None
        api.requests.append((method, path, key))
        if request.headers.get("authorization") != f"Bearer {api.api_key()}":
            return _json(
                401,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": "Invalid API Key provided. The Stripe emulator expects"
                        " its configured secret key as a Bearer token.",
                    }
                },
                request_id,
            )
        if method == "POST":
            pairs = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        else:
            pairs = list(request.query_params.multi_items())
        params = forms.decode(pairs)
        try:
            if key is not None:
                stored = api.idempotency.lookup(key, fingerprint(method, path, params))
                if stored is not None:
                    return _raw(
                        stored.status,
                        stored.body,
                        stored.request_id,
                        **{"Idempotent-Replayed": "true"},
                    )
            api.store.request = {"id": request_id, "idempotency_key": key}
            try:
                result = copy.deepcopy(handler(api.store, params, dict(request.path_params), path))
                status, payload = 200, result
                for field in p.string_list(params, "expand") or []:
                    _expand(api.store, result, field.split("."))
            finally:
                api.store.request = {"id": None, "idempotency_key": None}
        except StripeError as exc:
            if exc.status != 402:
                return _json(exc.status, exc.payload(), request_id)
            status, payload = exc.status, exc.payload()
        body = _encode(payload)
        if key is not None:
            print_ = fingerprint(method, path, params)
            api.idempotency.save(key, StoredResponse(print_, status, body, request_id))
        return _raw(status, body, request_id)

    return respond


def _not_found(request: Request) -> Response:
    return _json(
        404,
        {
            "error": {
                "type": "invalid_request_error",
                "message": f"Unrecognized request URL ({request.method}: {request.url.path}).",
            }
        },
        new_id("req")[:18],
    )


def _getter(object_type: str) -> Handler:
    return lambda s, _params, path, _url: s.get(object_type, path["id"])


_ROUTES: list[tuple[str, str, Handler]] = [
    ("/v1/customers", "POST", lambda s, q, _p, _u: s.create_customer(q)),
    ("/v1/customers/{id}", "GET", _getter("customer")),
    ("/v1/customers/{id}", "POST", lambda s, q, a, _u: s.update_customer(a["id"], q)),
    (
        "/v1/customers/{id}/payment_methods",
        "GET",
        lambda s, q, a, u: s.list_payment_methods(q, u, customer_id=a["id"]),
    ),
    ("/v1/payment_methods", "GET", lambda s, q, _p, u: s.list_payment_methods(q, u)),
    ("/v1/payment_methods/{id}", "GET", _getter("payment_method")),
    (
        "/v1/payment_methods/{id}/attach",
        "POST",
        lambda s, q, a, _u: s.attach_payment_method(a["id"], q),
    ),
    (
        "/v1/payment_methods/{id}/detach",
        "POST",
        lambda s, _q, a, _u: s.detach_payment_method(a["id"]),
    ),
    ("/v1/setup_intents", "POST", lambda s, q, _p, _u: s.create_setup_intent(q)),
    ("/v1/setup_intents/{id}", "GET", _getter("setup_intent")),
    (
        "/v1/setup_intents/{id}/confirm",
        "POST",
        lambda s, q, a, _u: s.confirm_setup_intent(a["id"], q),
    ),
    ("/v1/payment_intents", "POST", lambda s, q, _p, _u: s.create_payment_intent(q)),
    ("/v1/payment_intents", "GET", lambda s, q, _p, u: s.list_payment_intents(q, u)),
    ("/v1/payment_intents/search", "GET", lambda s, q, _p, u: s.search_payment_intents(q, u)),
    ("/v1/payment_intents/{id}", "GET", _getter("payment_intent")),
    (
        "/v1/payment_intents/{id}/confirm",
        "POST",
        lambda s, q, a, _u: s.confirm_payment_intent(a["id"], q),
    ),
    (
        "/v1/payment_intents/{id}/cancel",
        "POST",
        lambda s, q, a, _u: s.cancel_payment_intent(a["id"], q),
    ),
    ("/v1/charges/{id}", "GET", _getter("charge")),
    ("/v1/refunds", "POST", lambda s, q, _p, _u: s.create_refund(q)),
    ("/v1/refunds", "GET", lambda s, q, _p, u: s.list_refunds(q, u)),
    ("/v1/refunds/{id}", "GET", _getter("refund")),
    ("/v1/disputes/{id}", "GET", _getter("dispute")),
    ("/v1/events", "GET", lambda s, q, _p, u: s.list_events(q, u)),
    ("/v1/events/{id}", "GET", lambda s, _q, a, _u: s.get_event(a["id"])),
]


def build_app(api: Api) -> Starlette:
    routes = [
        Route(path, _endpoint(api, handler), methods=[method]) for path, method, handler in _ROUTES
    ]
    routes.append(Route("/{rest:path}", _not_found, methods=["GET", "POST", "DELETE"]))
    return Starlette(routes=routes)
