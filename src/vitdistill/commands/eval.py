"""`vitdistill eval` (not available in this version yet)."""

from __future__ import annotations

import argparse

from vitdistill.errors import NotAvailableError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    raise NotAvailableError("'vitdistill eval' is not available in this version yet")
