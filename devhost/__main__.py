"""Command line: ``python -m devhost serve ...`` and ``python -m devhost token ...``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from devhost.easy_auth import issue_token, load_or_create_signing_key


def _on_off(value: str) -> bool:
    if value.lower() not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected on or off")
    return value.lower() == "on"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devhost", description="Local stand-in for the Functions host")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the app with the emulators until SIGINT/SIGTERM")
    serve.add_argument("--port", type=int, default=7071, help="0 picks a free port (default 7071)")
    serve.add_argument("--state", type=Path, default=Path(".devhost"), help="state folder (default .devhost)")
    serve.add_argument("--clock", choices=("real", "virtual"), default="real")
    serve.add_argument("--app", type=Path, default=Path("."), help="folder holding function_app.py (default .)")
    serve.add_argument("--easy-auth", type=_on_off, default=True, metavar="on|off", help="simulate Easy Auth (on)")
    serve.add_argument("--no-timers", action="store_true", help="never fire timer triggers by themselves")
    serve.add_argument("--no-emulators", action="store_true", help="host only: do not start the emulators")
    serve.add_argument("--activity-workers", type=int, default=None, help="default: host.json")
    serve.add_argument(
        "--worker",
        choices=("process", "thread"),
        default="process",
        help="run the app's worker on a process of its own, as Azure does (default), or inside devhost",
    )

    token = sub.add_parser("token", help="print a bearer token the host's Easy Auth simulation accepts")
    token.add_argument("--name", required=True)
    token.add_argument("--role", action="append", default=[], help="an app role; repeat for several")
    token.add_argument("--oid", default=None, help="object id (default: stable per name)")
    token.add_argument("--state", type=Path, default=Path(".devhost"))
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "token":
        key = load_or_create_signing_key(args.state)
        print(issue_token(key, args.name, args.role, oid=args.oid, ttl=args.ttl))
        return 0
    from devhost.server import ServeOptions, serve

    options = ServeOptions(
        port=args.port,
        state=args.state,
        clock=args.clock,
        app_dir=args.app,
        easy_auth=args.easy_auth,
        timers=not args.no_timers,
        emulators=not args.no_emulators,
        activity_workers=args.activity_workers,
        worker=args.worker,
    )
    return asyncio.run(serve(options))


if __name__ == "__main__":
    sys.exit(main())
