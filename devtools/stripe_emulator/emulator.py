"""``StripeEmulator``: the server, the account state and the webhook sender in one object."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any

import stripe
import uvicorn

from devtools.stripe_emulator import webhooks
from devtools.stripe_emulator.persistence import StateFile
from devtools.stripe_emulator.server import Api, build_app
from devtools.stripe_emulator.state import Store

DEFAULT_API_KEY = "sk_test_tally_emulator"
DEFAULT_WEBHOOK_SECRET = "whsec_tally_emulator"
DEFAULT_PUBLISHABLE_KEY = "pk_test_tally_emulator"

STARTUP_SECONDS = 10.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: whoever runs the loop owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class StripeEmulator:
    """The emulated account, in memory unless ``state_file`` names where it is kept.

    With a state file the account is loaded by :meth:`start` (raising
    ``StateFileError`` when the file is unreadable) and written after every
    change; without one nothing touches the disk.
    """

    def __init__(
        self,
        webhook_url: str | None = None,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        state_file: Path | None = None,
    ) -> None:
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.api_key = api_key
        self.host = host
        self.port = port
        self.deliver_webhooks = True
        self._sender = webhooks.WebhookSender(lambda: (self.webhook_url, self.webhook_secret))
        self._store = Store(stripe.api_version, self._on_event, self._schedule)
        self._api = Api(self._store, lambda: self.api_key)
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._state = StateFile(state_file) if state_file is not None else None
        if self._state is not None:
            self._api.after_post = self._save

    # -- life cycle -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._load()
        await self._sender.start()
        config = uvicorn.Config(
            build_app(self._api),
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = _EmbeddedServer(config)
        self._server = server
        self._task = asyncio.create_task(self._serve(server), name="stripe-emulator:http")
        async with asyncio.timeout(STARTUP_SECONDS):
            while not server.started:
                if self._task.done():
                    await self._sender.stop()
                    raise OSError(f"stripe emulator cannot listen on {self.host}:{self.port}")
                await asyncio.sleep(0.01)
        self.port = int(server.servers[0].sockets[0].getsockname()[1])

    @staticmethod
    async def _serve(server: uvicorn.Server) -> None:
        # uvicorn exits the process when it cannot bind; start() reports that instead.
        with contextlib.suppress(SystemExit):
            await server.serve()

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                async with asyncio.timeout(5):
                    await self._task
            except TimeoutError:
                self._task.cancel()
        self._server = None
        self._task = None
        await self._sender.stop()

    async def __aenter__(self) -> StripeEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- state and hooks ----------------------------------------------------------

    @property
    def processing_delay(self) -> float | None:
        return self._store.processing_delay

    @processing_delay.setter
    def processing_delay(self, value: float | None) -> None:
        self._store.processing_delay = value

    @property
    def events(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._store.events)

    @property
    def deliveries(self) -> list[tuple[str, int]]:
        return list(self._sender.deliveries)

    @property
    def requests(self) -> list[tuple[str, str, str | None]]:
        return list(self._api.requests)

    def _on_event(self, event: dict[str, Any]) -> None:
        if self.deliver_webhooks and self.webhook_url is not None:
            self._sender.enqueue(event)

    def _schedule(self, delay: float, callback: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            callback()
            self._save()

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    def _load(self) -> None:
        saved = self._state.load() if self._state is not None else None
        if saved is not None:
            self._store.restore(saved.account)
            self._api.idempotency.restore(saved.idempotency)

    def _save(self) -> None:
        if self._state is not None:
            self._state.save(self._store.snapshot(), self._api.idempotency.responses())

    # -- test controls ----------------------------------------------------------

    async def deliver(self, event_id: str, *, times: int = 1) -> list[int]:
        """Sends an existing event again now (freshly signed), bypassing the queue."""
        event = self._store.get_event(event_id)
        return [await self._sender.send(event) for _ in range(times)]

    def expire_idempotency_keys(self) -> None:
        """What Stripe does to keys 24 hours old: the same key now makes a new object."""
        self._api.idempotency.forget_all()
        self._save()

    async def wait_for_deliveries(self, timeout: float = 10) -> None:
        await self._sender.wait_idle(timeout)

    def sign(
        self, payload: bytes, *, timestamp: int | None = None, secret: str | None = None
    ) -> str:
        return webhooks.sign(payload, self.webhook_secret if secret is None else secret, timestamp)

    async def create_dispute(
        self, payment_intent_id: str, amount: int | None = None
    ) -> dict[str, Any]:
        dispute = copy.deepcopy(self._store.create_dispute(payment_intent_id, amount))
        self._save()
        return dispute
