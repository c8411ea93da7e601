"""`vitdistill inspect`: parameters, MACs, token grid, per-block widths and throughput of models."""

from __future__ import annotations

import argparse
import sys

from vitdistill.commands.flags import add_options, add_set_option, options_from
from vitdistill.utils.inspect_options import InspectOptions
from vitdistill.utils.overrides import parse_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="timm model names (vitdistill's students included) or remedies on a base: "
        "lift:BASE:DIM / widelast:BASE:DIM[:NUM_WIDE]",
    )
    add_options(parser, InspectOptions)
    add_set_option(parser, "model keyword argument", "--set img_size=32 --set patch_size=4")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from vitdistill.models.profile import format_table, inspect_models
    from vitdistill.utils.io import atomic_write_json, check_output

    check_output(args.json, "--json", "file")
    options = options_from(args, InspectOptions)
    rows = inspect_models(args.models, model_kwargs=parse_sets(args.overrides), **options)
    print(format_table(rows))
    for r in rows:
        if r.get("macs_error"):
            print(f"vitdistill inspect: {r['model']}: MACs not counted ({r['macs_error']})", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, rows)
    return 0
