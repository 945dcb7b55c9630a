"""POST /webhooks/stripe on the payments service's HTTP port.

The signature covers the exact bytes, so the body is read raw and verified by
the provider module (the SDK's own check) before anything is parsed. Anything
unverifiable answers 400 and changes nothing; a verified event is applied in
one transaction with its inbox row and answers 200, also when it was seen
before or is of a type payments does not use. A failure while applying
answers 500, so the provider delivers it again.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.payments.dispatch import Collector
from services.payments.provider import InvalidWebhook

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


def _problem(status: int, title: str, detail: str) -> Response:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=PROBLEM,
    )


def webhook_routes(collector: Collector) -> list[BaseRoute]:
    async def stripe_webhook(request: Request) -> Response:
        body = await request.body()
        try:
            event = collector.provider.verify_webhook(body, request.headers.get("stripe-signature"))
        except InvalidWebhook as exc:
            log.warning("payments: webhook refused: %s", exc)
            return _problem(400, "Invalid webhook", str(exc))
        try:
            applied = await collector.apply_event(event, "webhook")
        except Exception:
            log.exception("payments: webhook %s (%s) failed", event.event_id, event.kind)
            return _problem(500, "Webhook not applied", "retry later")
        return JSONResponse({"received": True, "duplicate": not applied.new})

    return [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
