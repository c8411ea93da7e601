"""`vitdistill compare`: several `analyze` results side by side."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", help="folders written by `vitdistill analyze`")
    p.add_argument("--out", required=True, help="folder for the comparison tables and plots")
    p.add_argument("--labels", help="comma-separated row labels, one per folder")
    p.add_argument("--pdf", action="store_true", help="also write plots as PDF")


def run(args: argparse.Namespace) -> int:
    from vitdistill.analysis import compare
    from vitdistill.utils.io import check_output

    check_output(args.out, "--out")

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    res = compare(args.results, args.out, labels=labels, pdf=args.pdf)
    print(f"compared {len(res['rows'])} analyses -> {args.out}/svd_rank_table.md, sep_table.md, compare.png")
    return 0
