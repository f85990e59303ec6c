"""`keyrotation`: argument parsing and exit codes (docs/cli.md). argparse for the grammar (standard
library), rich for tables and progress (render.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from keyrotation_cli import commands, render
from keyrotation_cli.connection import INTERNAL, OK, USAGE, Failure, Options, connect

EXIT_CODES = """exit codes:
  0  done                      5  not found (404)
  1  internal error (500)      6  conflict: a rotation runs, wrong stage, target forbids it (409)
  2  usage or invalid input    7  the app or Azure unreachable (network, 502/503/504)
  3  not signed in (401)       8  the rotation ended without completing (watch, or --watch)
  4  forbidden: role (403)     9  emergency not confirmed
"""


def common() -> argparse.ArgumentParser:
    """Options accepted before or after the command (SUPPRESS: a later one does not reset an earlier one)."""
    parent = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    parent.add_argument("--json", action="store_true", default=s, help="print the API's JSON answer")
    parent.add_argument("--url", default=s, help="the app's URL (env KEYROTATION_URL; config 'url')")
    parent.add_argument(
        "--audience", default=s, help="Easy Auth audience, e.g. api://<client id> (env KEYROTATION_AUDIENCE)"
    )
    parent.add_argument("--config", type=Path, default=s, help="config file (env KEYROTATION_CONFIG)")
    parent.add_argument("--local", action="store_true", default=s, help="the local stack even when a URL is configured")
    parent.add_argument(
        "--state", type=Path, default=s, help="local stack's state folder (default .devhost, then .devhost/demo)"
    )
    parent.add_argument("--as", dest="name", default=s, help="local: the name in the minted token (default $USER)")
    parent.add_argument(
        "--role",
        dest="roles",
        action="append",
        default=s,
        help="local: an app role for the token (repeat; default all but Consumer)",
    )
    return parent


def parser() -> argparse.ArgumentParser:
    parent = common()
    top = argparse.ArgumentParser(
        prog="keyrotation", description="Plan, run and follow key rotations.", parents=[parent],
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[parent], epilog=EXIT_CODES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip

    add("targets", "list the targets and their latest rotation")
    p = add("plan", "what a rotation would do now (changes nothing); every target when none is named")
    p.add_argument("target", nargs="?")
    p.add_argument("--mode", choices=("scheduled", "on-demand", "emergency"))
    for name, text in (("rotate", "start an on-demand rotation"), ("emergency", "rotate now and kill every old key")):
        p = add(name, text)
        p.add_argument("target")
        p.add_argument("--reason", required=name == "emergency", help="why (kept in the audit trail)")
        if name == "emergency":
            p.add_argument("--overlap", help="ISO 8601, default PT0S (the old keys die at once)")
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
            p.add_argument("--no-watch", dest="watch", action="store_false", help="return once accepted")
        else:
            p.add_argument("--watch", action="store_true", help="follow it until it ends")
        waits(p)
    p = add("status", "a rotation's stage and timeline")
    p.add_argument("rotation")
    p = add("watch", "follow a rotation live until it ends")
    p.add_argument("rotation")
    waits(p)
    p = add("history", "past rotations of a target, newest first")
    p.add_argument("target")
    p.add_argument("--limit", type=int, default=20, help="rotations per page (1-100)")
    p.add_argument("--all", action="store_true", help="every page")
    for name in ("approve", "abort", "extend"):
        p = add(name, f"{name} a held rotation")
        p.add_argument("rotation")
        p.add_argument("--reason")
        if name == "extend":
            p.add_argument("--by", required=True, help="ISO 8601, e.g. PT6H")
    return top


def waits(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", dest="wait_timeout", type=float, default=3600, help="seconds to follow (default 3600)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between reads (default 1)")


HANDLERS = {
    "targets": commands.targets, "plan": commands.plan, "rotate": commands.rotate, "emergency": commands.emergency,
    "status": commands.status, "watch": commands.watch, "history": commands.history,
    "approve": commands.decide, "abort": commands.decide, "extend": commands.decide,
}  # fmt: skip


def options(args: Any) -> Options:
    return Options(
        url=getattr(args, "url", None),
        audience=getattr(args, "audience", None),
        state=getattr(args, "state", None),
        local=getattr(args, "local", False),
        name=getattr(args, "name", None),
        roles=tuple(getattr(args, "roles", ()) or ()),
        config=getattr(args, "config", None),
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)  # usage errors: argparse prints them and exits 2 (USAGE)
    args.json = getattr(args, "json", False)
    try:
        return HANDLERS[args.command](connect(options(args)), args)
    except Failure as failure:
        render.fail(failure.message)
        return failure.code
    except KeyboardInterrupt:
        render.fail("interrupted")
        return 130
    except Exception as exc:  # a bug here, never a traceback with a token in it
        render.fail(f"internal error ({type(exc).__name__})")
        return INTERNAL


assert USAGE == 2 and OK == 0  # argparse's own exit code for usage errors is USAGE

if __name__ == "__main__":
    sys.exit(main())
