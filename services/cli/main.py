"""``tally``: the one command-line entry point of the suite.

Start-up problems (bad configuration, an unreachable database, a port in use)
end with one ``tally: error: ...`` line and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Sequence

from services.kit.devstack.errors import DevStackError
from services.kit.errors import StartupError
from services.kit.settings import SERVICE_NAMES

EXIT_STARTUP = 1


def _serve(args: argparse.Namespace) -> int:
    if args.service == "gateway":
        from gateway.server import serve as serve_gateway

        serve_gateway()
        return 0
    from services.kit.runtime import ServiceRuntime
    from services.kit.settings import load_settings, settings_class_for
    from services.kit.telemetry import configure_logging

    settings = load_settings(settings_class_for(args.service))
    configure_logging(args.service, settings.log_level, settings.log_format)
    spec = importlib.import_module(f"services.{args.service}.bootstrap").SPEC
    asyncio.run(ServiceRuntime(spec, settings).serve_forever())
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tally", description="Tally billing suite")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run one service (or the gateway) in the foreground")
    serve.add_argument("service", choices=[*SERVICE_NAMES, "gateway"])
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
