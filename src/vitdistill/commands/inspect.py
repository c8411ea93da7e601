"""`vitdistill inspect`: parameters, MACs, token grid, per-block widths and throughput of models."""

from __future__ import annotations

import argparse
import sys

from vitdistill.commands.flags import add_set_option
from vitdistill.utils.overrides import parse_sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help="timm model names (vitdistill's students included) or remedies on a base: "
        "lift:BASE:DIM / widelast:BASE:DIM[:NUM_WIDE]",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="batch size for the throughput run (default 64)"
    )
    parser.add_argument(
        "--device", default="cpu", help="device for the throughput run: cpu or cuda (default cpu)"
    )
    parser.add_argument(
        "--num-classes", type=int, default=None, help="classifier size (default: the model's)"
    )
    parser.add_argument("--no-throughput", action="store_true", help="skip the timed run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before timing (default 3)")
    parser.add_argument("--iters", type=int, default=10, help="timed batches (default 10)")
    parser.add_argument(
        "--amp", choices=["bf16", "fp16"], default=None, help="autocast dtype for the throughput run"
    )
    add_set_option(parser, "model keyword argument", "--set img_size=32 --set patch_size=4")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")


def run(args: argparse.Namespace) -> int:
    from vitdistill.models.profile import format_table, inspect_models
    from vitdistill.utils.io import atomic_write_json, check_output

    check_output(args.json, "--json", "file")
    rows = inspect_models(
        args.models,
        batch_size=args.batch_size,
        device=args.device,
        num_classes=args.num_classes,
        throughput=not args.no_throughput,
        model_kwargs=parse_sets(args.overrides),
        warmup=args.warmup,
        iters=args.iters,
        amp=args.amp,
    )
    print(format_table(rows))
    for r in rows:
        if r.get("macs_error"):
            print(f"vitdistill inspect: {r['model']}: MACs not counted ({r['macs_error']})", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, rows)
    return 0
