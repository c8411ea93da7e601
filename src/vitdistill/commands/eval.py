"""`vitdistill eval`: top-1/top-5 of a run, an export folder or a timm model on a data set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    parser.add_argument("--split", default="val", help="split of --data to evaluate (default: val)")
    parser.add_argument("--checkpoint", help="weights file (a run's checkpoint, .pt or .safetensors)")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a legacy --checkpoint that pickles more than tensors (unpickling can run code)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--ema", action="store_true", help="use the run's EMA weights")
    parser.add_argument(
        "--device", default="auto", help="cpu | cuda | cuda:N | auto (default: cuda when available)"
    )
    parser.add_argument(
        "--max-images", type=int, default=None, help="evaluate at most N images (default: all)"
    )
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default 0)")
    parser.add_argument(
        "--crop-pct",
        type=float,
        default=None,
        help="evaluation crop in (0, 1] (default: a run's data.eval_crop_pct, else the model's timm default)",
    )
    parser.add_argument(
        "--amp", choices=("none", "bf16", "fp16"), default="none", help="autocast dtype (default none)"
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="timm's pretrained weights for a model name (what a name without --checkpoint gets anyway)",
    )
    parser.add_argument("--strict", action="store_true", help="an unreadable image is fatal")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")


def run(args: argparse.Namespace) -> int:
    from vitdistill.distill import evaluate
    from vitdistill.errors import UserError
    from vitdistill.utils.dist import current
    from vitdistill.utils.io import atomic_write_json, check_output

    check_output(args.json, "--json", "file")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0 (got {args.workers})")
    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UserError(f"--crop-pct must be in (0, 1] (got {args.crop_pct})")
    if args.pretrained and (args.checkpoint or Path(args.model).exists()):
        raise UserError(
            "--pretrained loads timm's weights for a model name; a run or export folder, a weights file or --checkpoint, "
            "brings its own weights"
        )
    res = evaluate(
        args.model,
        args.data,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        ema=args.ema,
        device=args.device,
        split=args.split,
        max_images=args.max_images,
        num_workers=args.workers,
        strict=args.strict,
        trust_checkpoint=args.trust_checkpoint,
        crop_pct=args.crop_pct,
        amp=args.amp,
    )
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
