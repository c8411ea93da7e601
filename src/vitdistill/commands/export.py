"""`vitdistill export`: a run as model.safetensors + config.json loadable by timm."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder written by `vitdistill train`")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights")
    parser.add_argument("--checkpoint", help="a specific checkpoint (default: RUN/checkpoints/last.pt)")


def run(args: argparse.Namespace) -> int:
    from vitdistill.distill import export
    from vitdistill.utils.io import check_output

    check_output(args.out, "--out")

    cfg = export(args.run, args.out, ema=args.ema, checkpoint=args.checkpoint)
    arch = cfg["architecture"]
    how = (
        f"timm.create_model({arch!r}, pretrained=True, pretrained_cfg_overlay=dict(file=..., num_classes="
        f"{cfg['num_classes']}), num_classes={cfg['num_classes']}, **model_args)"
        if arch
        else "vitdistill.distill.load_exported(DIR)"
    )
    print(f"wrote {args.out}/model.safetensors and config.json; load with {how}")
    return 0
