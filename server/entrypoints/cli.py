"""`ltx-server`: one console script, one module per sub-command.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its sub-command
and sets `handler` (a function taking the parsed namespace and returning an exit code). The
offline tools (`generate`, `weights`) live in the `tools` package and register here too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from server.core.errors import CommandError

COMMAND_MODULES = (
    "tools.generate",
    "server.entrypoints.serve",
    "server.entrypoints.worker",
    "tools.weights",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ltx-server",
        description="Self-hosted LTX-2.3 image-to-video with an Oxen-compatible API.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the sub-command; user errors become one line and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CommandError as exc:
        print(f"ltx-server {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ltx-server {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly as other Unix tools do, and point stdout at
        # /dev/null so the interpreter's final flush cannot raise it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by it


if __name__ == "__main__":
    sys.exit(main())
