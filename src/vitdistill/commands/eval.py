"""`vitdistill eval`: top-1/top-5 of a run, an export folder or a timm model on a data set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vitdistill.commands.flags import add_options, options_from
from vitdistill.utils.eval_options import EvalOptions

# flags of `train` that a timm user may type here too, and why they do not apply
NOT_HERE = {
    "--epochs": "eval does not train",
    "--lr": "eval does not train",
    "--seed": "eval draws nothing at random",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="RUN_OR_MODEL", help="run folder, export folder, or timm model name")
    parser.add_argument(
        "--data",
        required=True,
        help="ImageFolder dir (its val/ split if present), list file, synthetic:NAME, hfds/NAME, hfids/NAME or wds/DIR",
    )
    add_options(parser, EvalOptions)
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="timm's pretrained weights for a model name (what a name without --checkpoint gets anyway)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")


def run(args: argparse.Namespace) -> int:
    from vitdistill.distill import evaluate
    from vitdistill.errors import UserError
    from vitdistill.utils.dist import current
    from vitdistill.utils.io import atomic_write_json, check_output

    check_output(args.json, "--json", "file", own=_an_eval_result)
    options = options_from(args, EvalOptions)
    if args.pretrained and (options.get("checkpoint") or Path(args.model).exists()):
        raise UserError(
            "--pretrained loads timm's weights for a model name; a run or export folder, a weights file or --checkpoint, "
            "brings its own weights"
        )
    res = evaluate(args.model, args.data, **options)
    if current().is_main:
        extra = f", {res['skipped']} unreadable skipped" if res["skipped"] else ""
        print(f"top-1 {res['top1']:.2f}  top-5 {res['top5']:.2f}  ({res['n']} images{extra})")
        if res["training_data"]:
            print(
                f"vitdistill eval: note: {args.data} holds the images {args.model} was trained on, so this "
                "is training accuracy; evaluate on its validation data (a val/ split or data.val)",
                file=sys.stderr,
            )
        if args.json:
            atomic_write_json(args.json, res)
    return 0


def _an_eval_result(data) -> bool:
    """Whether a JSON file is an earlier ``eval --json`` result (which a new one may replace)."""
    return isinstance(data, dict) and {"top1", "top5", "n"} <= data.keys()
