"""`vitdistill results`: the paper's accuracy table from finished runs (md, csv, tex)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="finished run folders (seeds of a recipe are grouped)"
    )
    parser.add_argument(
        "--out", help="write results.md, results.csv, results.tex (and results_runs.json) here"
    )
    parser.add_argument(
        "--no-published", action="store_true", help="leave out the figures published with the paper"
    )


def run(args: argparse.Namespace) -> int:
    from vitdistill.distill.results import CAPTION, results
    from vitdistill.utils.tables import render

    rows = results(args.runs, out=args.out, published=not args.no_published)
    print(render(rows, "md", text_cols=("Method",)), end="")
    print(f"\n{CAPTION}")
    if args.out:
        print(f"wrote {args.out}/results.md, results.csv and results.tex")
    return 0
