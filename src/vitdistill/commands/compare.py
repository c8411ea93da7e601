"""`vitdistill compare`: several `analyze` results side by side."""

from __future__ import annotations

import argparse

from vitdistill.analysis.options import CompareOptions
from vitdistill.commands.flags import add_options, options_from


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="folders written by `vitdistill analyze`")
    p.add_argument("--out", required=True, help="folder for the comparison tables and plots")
    add_options(p, CompareOptions)


def run(args: argparse.Namespace) -> int:
    from vitdistill.analysis import compare
    from vitdistill.utils.io import check_output

    check_output(args.out, "--out")

    res = compare(args.results, args.out, **options_from(args, CompareOptions))
    print(f"compared {len(res['rows'])} analyses -> {args.out}/svd_rank_table.md, sep_table.md, compare.png")
    return 0
