"""``python -m devtools.stripe_emulator``: the emulator as a process for ``make run``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from devtools.stripe_emulator.emulator import (
    DEFAULT_API_KEY,
    DEFAULT_WEBHOOK_SECRET,
    StripeEmulator,
)
from devtools.stripe_emulator.persistence import StateFileError


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m devtools.stripe_emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument(
        "--processing-delay",
        type=float,
        default=None,
        help="seconds before a confirmed PaymentIntent settles (default: at once)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="keep the account in this JSON file across restarts (default: in memory only)",
    )
    return parser.parse_args()


async def _serve(args: argparse.Namespace) -> None:
    emulator = StripeEmulator(
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        state_file=args.state_file,
    )
    emulator.processing_delay = args.processing_delay
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await emulator.start()
    print(f"stripe emulator on {emulator.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await emulator.stop()


def main() -> None:
    try:
        asyncio.run(_serve(_parse()))
    except StateFileError as exc:
        sys.exit(f"stripe emulator: error: {exc}")


if __name__ == "__main__":
    main()
