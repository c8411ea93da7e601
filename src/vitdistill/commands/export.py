"""`vitdistill export`: a run as model.safetensors + config.json loadable by timm."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder written by `vitdistill train`")
    parser.add_argument("--out", dest="out_dir", required=True, help="output folder")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights")
    parser.add_argument("--checkpoint", help="a specific checkpoint (default: RUN/checkpoints/last.pt)")


def run(args: argparse.Namespace) -> int:
    from vitdistill.distill import export
    from vitdistill.distill.export import load_recipe
    from vitdistill.utils.io import check_output

    check_output(args.out_dir, "--out")

    cfg = export(args.run, args.out_dir, ema=args.ema, checkpoint=args.checkpoint)
    print(
        f"wrote {args.out_dir}/model.safetensors and config.json ({cfg['architecture']}, "
        f"{cfg['num_classes']} classes); load it in Python with:"
    )
    print(load_recipe(args.out_dir))
    return 0
