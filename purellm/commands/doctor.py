"""`purellm doctor`: not built yet."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    subparsers.add_parser("doctor", help="(not available yet)")


def run(args: argparse.Namespace) -> int:
    print("purellm doctor is not available yet")
    return 2
