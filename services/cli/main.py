"""``tally``: the one command-line entry point of the suite.

Start-up problems (bad configuration, an unreachable database, a port in use)
end with one ``tally: error: ...`` line and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from services.kit.cliargs import instant
from services.kit.devstack.errors import DevStackError
from services.kit.errors import StartupError
from services.kit.settings import SERVICE_NAMES

EXIT_STARTUP = 1


def _serve(args: argparse.Namespace) -> int:
    if args.service == "gateway":
        from gateway.server import serve as serve_gateway

        serve_gateway()
        return 0
    if args.service == "console":
        from console.server import serve as serve_console

        serve_console()
        return 0
    from services.kit import eventloop
    from services.kit.runtime import ServiceRuntime
    from services.kit.settings import load_settings, settings_class_for
    from services.kit.telemetry import configure_logging

    settings = load_settings(settings_class_for(args.service))
    configure_logging(args.service, settings.log_level, settings.log_format)
    spec = importlib.import_module(f"services.{args.service}.bootstrap").SPEC
    eventloop.run(ServiceRuntime(spec, settings).serve_forever(), settings.event_loop)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from services.kit import migrations
    from services.kit.settings import load_settings, settings_class_for

    targets = SERVICE_NAMES if args.service == "all" else (args.service,)
    for service in targets:
        settings = load_settings(settings_class_for(service))
        try:
            migrations.upgrade(service, settings.database_url, args.revision, settings.db_schema)
        except Exception as exc:
            first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
            raise StartupError(f"migrating {service} failed: {first}") from None
        print(f"migrated {service} to {args.revision}")
    return 0


def _dev_up(args: argparse.Namespace) -> int:
    from services.cli.dev import dev_up

    return dev_up(data_dir=args.data_dir)


def _close_periods(args: argparse.Namespace) -> int:
    import grpc
    from tally.subscriptions.v1 import subscriptions_pb2, subscriptions_pb2_grpc

    from services.kit.addresses import service_address
    from services.kit.protoconv import to_timestamp
    from services.kit.rpc.actor import cli_channel

    address = service_address("subscriptions")
    request = subscriptions_pb2.ClosePeriodsRequest(now=to_timestamp(args.now))
    with cli_channel(address) as channel:
        stub = subscriptions_pb2_grpc.SubscriptionsServiceStub(channel)
        try:
            reply = stub.ClosePeriods(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            print(
                f"tally: error: close-periods at {address} failed: {code}: {detail}",
                file=sys.stderr,
            )
            return EXIT_STARTUP
    print(
        f"closed {len(reply.closed_periods)} periods"
        f" (trials ended: {reply.trials_ended}, schedules applied: {reply.schedules_applied})"
    )
    return 0


def _usage_address(args: argparse.Namespace) -> str:
    from services.kit.addresses import service_address

    return service_address("usage", args.address)


def _usage_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from services.usage import cli as usage_cli

    try:
        report = usage_cli.import_file(
            Path(args.file),
            _usage_address(args),
            batch_size=args.batch_size,
            progress=None if args.quiet else sys.stderr,
        )
    except (OSError, usage_cli.BadImportFile) as exc:
        print(f"tally: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except Exception as exc:
        print(f"tally: error: import failed: {usage_cli.error_line(exc)}", file=sys.stderr)
        return EXIT_STARTUP
    print(
        f"{report.total} events: {report.accepted} accepted, {report.duplicates} duplicates,"
        f" {report.rejected} rejected"
        + "".join(f"\n  rejected {name}: {n}" for name, n in sorted((report.reasons or {}).items()))
    )
    return 0


def _usage_backfill(args: argparse.Namespace) -> int:
    from services.usage import cli as usage_cli

    try:
        reply = usage_cli.backfill(
            _usage_address(args),
            org_id=args.org,
            subscription_id=args.subscription or "",
            start=args.start,
            end=args.end,
            dry_run=args.dry_run,
        )
    except Exception as exc:
        print(f"tally: error: backfill failed: {usage_cli.error_line(exc)}", file=sys.stderr)
        return EXIT_STARTUP
    usage_cli.print_backfill(reply, args.dry_run, sys.stdout)
    return 0


def _rate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from services.invoicing.rating import Charge, Usage, rate
    from services.kit.errors import InvalidArgument

    def load(path: str, kind: type[Charge] | type[Usage]) -> Charge | Usage:
        try:
            return kind.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except OSError as exc:
            raise StartupError(f"{path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise StartupError(f"{path}: not JSON: {exc}") from None
        except InvalidArgument as exc:
            bad = "; ".join(f"{v.field or '(file)'}: {v.description}" for v in exc.violations)
            raise StartupError(f"{path}: {bad}") from None

    charge, usage = load(args.charge, Charge), load(args.usage, Usage)
    assert isinstance(charge, Charge) and isinstance(usage, Usage)
    try:
        result = rate(charge, quantity=usage.quantity, events=usage.events)
    except InvalidArgument as exc:
        bad = "; ".join(f"{v.field}: {v.description}" for v in exc.violations)
        raise StartupError(f"{args.usage}: {bad}") from None
    print(json.dumps(result.to_json(), indent=2))
    return 0


def _dev_token(args: argparse.Namespace) -> int:
    """Print an HS256 token signed with the gateway's dev secret (GATEWAY_JWT_HS256_SECRET)."""
    from gateway.auth import issue_dev_token
    from services.kit.settings import GatewaySettings, load_settings

    settings = load_settings(GatewaySettings)
    if not settings.jwt_hs256_secret:
        raise StartupError("no JWT_HS256_SECRET is configured for the gateway")
    print(
        issue_dev_token(
            settings.jwt_hs256_secret,
            subject=args.subject or (f"service:{args.service}" if args.service else "dev-user"),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            ttl_seconds=args.ttl,
            org_id=args.org,
            permissions=args.permission,
            roles=args.role,
            service=args.service,
            org_tags=args.org_tag,
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tally", description="Tally billing suite")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run one service (or the gateway, or the console) in the foreground"
    )
    serve.add_argument("service", choices=[*SERVICE_NAMES, "gateway", "console"])
    serve.set_defaults(func=_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("service", choices=[*SERVICE_NAMES, "all"])
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=_migrate)

    dev = commands.add_parser("dev", help="the embedded development stack")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="DEV_COMMAND")
    up = dev_commands.add_parser(
        "up", help="start PostgreSQL, NATS, every service and the gateway (Ctrl-C stops all)"
    )
    up.add_argument(
        "--data-dir", default=".tally", help="where data and logs live (default .tally)"
    )
    up.set_defaults(func=_dev_up)
    token = dev_commands.add_parser(
        "token", help="print a gateway dev token (HS256, signed with GATEWAY_JWT_HS256_SECRET)"
    )
    token.add_argument("--org", help="org_id claim (portal tokens)")
    token.add_argument("--permission", action="append", help="e.g. organization:billing")
    token.add_argument("--role", action="append", help="billing_admin or billing_support")
    token.add_argument("--service", help="service claim (internal tokens)")
    token.add_argument(
        "--org-tag", action="append", help="org_tags claim: a cohort tag of the org, e.g. beta"
    )
    token.add_argument("--subject", help="sub claim (default dev-user or service:<name>)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    token.set_defaults(func=_dev_token)

    billing = commands.add_parser("billing", help="drive billing operations")
    billing_commands = billing.add_subparsers(
        dest="billing_command", required=True, metavar="BILLING_COMMAND"
    )
    close = billing_commands.add_parser(
        "close-periods",
        help="run the billing clock at --now on the subscriptions service (SUBSCRIPTIONS_ADDR)",
    )
    close.add_argument(
        "--now", type=instant, required=True, help="the clock's instant, e.g. 2026-12-01T00:00:00Z"
    )
    close.add_argument(
        "--timeout", type=float, default=30.0, help="deadline of the call in seconds (default 30)"
    )
    close.set_defaults(func=_close_periods)

    usage = commands.add_parser("usage", help="usage metering operations (USAGE_ADDR)")
    usage_commands = usage.add_subparsers(
        dest="usage_command", required=True, metavar="USAGE_COMMAND"
    )
    usage_import = usage_commands.add_parser(
        "import",
        help="ingest historical events from JSON lines or CSV (idempotent: re-running is a no-op)",
    )
    usage_import.add_argument("file", help="a .jsonl/.ndjson/.json (JSON lines) or .csv file")
    usage_import.add_argument("--address", help="usage service host:port (default USAGE_ADDR)")
    usage_import.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        choices=range(1, 1001),
        metavar="N",
        help="events per call, 1..1000 (default 1000)",
    )
    usage_import.add_argument("--quiet", action="store_true", help="no progress line")
    usage_import.set_defaults(func=_usage_import)
    usage_backfill = usage_commands.add_parser(
        "backfill", help="recompute a window's aggregates from the stored events"
    )
    usage_backfill.add_argument("--org", required=True, help="organisation id")
    usage_backfill.add_argument("--subscription", help="only this subscription")
    usage_backfill.add_argument("--start", type=instant, required=True, help="ISO 8601")
    usage_backfill.add_argument("--end", type=instant, required=True, help="ISO 8601")
    usage_backfill.add_argument("--dry-run", action="store_true", help="report, change nothing")
    usage_backfill.add_argument("--address", help="usage service host:port (default USAGE_ADDR)")
    usage_backfill.set_defaults(func=_usage_backfill)

    rate = commands.add_parser(
        "rate", help="rate a charge on some usage, offline (CHARGE.json USAGE.json) -> JSON"
    )
    rate.add_argument("charge", help='a charge as the catalog stores it: {"model": ..., ...}')
    rate.add_argument("usage", help='{"quantity": "..."} or {"events": ["amount", ...]}')
    rate.set_defaults(func=_rate)

    from services.invoicing.cli import add_parser as add_invoicing_parser

    add_invoicing_parser(commands)  # tally invoicing run
    from services.payments.cli import add_parser as add_payments_parser

    add_payments_parser(commands)  # tally payments sync
    from services.cli.health import add_parser as add_health_parser

    add_health_parser(commands)  # tally health (container health checks)
    from services.cli.seed import add_parser as add_seed_parser

    add_seed_parser(commands)  # tally seed
    from services.verify.cli import add_parser as add_verify_parser

    add_verify_parser(commands)  # tally verify
    from services.cli.status import add_parser as add_status_parser

    add_status_parser(commands)  # tally status
    from devtools.loadtest.cli import add_parser as add_load_test_parser

    add_load_test_parser(commands)  # tally load-test (matplotlib/tqdm imported only when run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `tally health` runs every few seconds in every container: it gets a parser
    # of its own instead of importing the module of every other command.
    if argv[:1] == ["health"]:
        from services.cli.health import standalone_parser

        args = standalone_parser().parse_args(argv)
    else:
        args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (StartupError, DevStackError) as exc:
        print(f"tally: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
