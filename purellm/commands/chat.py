"""`purellm chat`: not built yet."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    subparsers.add_parser("chat", help="(not available yet)")


def run(args: argparse.Namespace) -> int:
    print("purellm chat is not available yet")
    return 2
