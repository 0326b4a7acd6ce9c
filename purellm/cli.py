"""`purellm` command line. Each command lives in `purellm/commands/<name>.py` with
`add_parser(subparsers)` (argparse only) and `run(args) -> int` (imports what it needs).
Nothing heavy is imported before the arguments are parsed, so `--version` and `--help` work
even when torch is missing or broken."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("serve", "chat", "generate", "doctor")


def _version() -> str:
    from purellm import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purellm", description="OpenAI-compatible LLM inference in plain PyTorch"
    )
    parser.add_argument("-V", "--version", action="version", version=f"purellm {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        _command(name).add_parser(subparsers)
    return parser


def _command(name: str):
    return importlib.import_module(f"purellm.commands.{name}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return _command(args.command).run(args)


if __name__ == "__main__":
    sys.exit(main())
