"""`vitdistill train`: train or distil a student from a YAML recipe (single process or torchrun)."""

from __future__ import annotations

import argparse
import json

from vitdistill.commands.flags import add_set_option, add_shortcuts, shortcut_overrides

# The flags a timm user types, each a shortcut for one config key: `--FLAG VALUE` is
# `--set KEY=VALUE` (a flag that takes no value sets the key to true).
SHORTCUTS = {
    "epochs": "epochs",
    "batch-size": "data.batch_size",
    "lr": "optim.lr",
    "amp": "amp",
    "workers": "data.num_workers",
    "pretrained": "model.pretrained",
    "device": "device",
    "seed": "seed",
}
SWITCHES = ("model.pretrained",)  # shortcuts that take no value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", required=True, help="YAML recipe (see docs/training.md; configs/paper, configs/cpu)"
    )
    add_set_option(parser, "override a config key", "--set loss.alpha=0.9")
    parser.add_argument(
        "--data",
        help="training data: ImageFolder dir, image list file, synthetic:NAME, hfds/NAME, hfids/NAME or wds/DIR",
    )
    parser.add_argument("--output", help="run folder (default: runs/<config name>)")
    parser.add_argument(
        "--resume", help="'auto' (continue RUN/checkpoints/last.pt if present) or a checkpoint path"
    )
    parser.add_argument("--strict", action="store_true", default=None, help="an unreadable image is fatal")
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow legacy model/teacher checkpoints that pickle more than tensors (can run code)",
    )
    add_shortcuts(parser, SHORTCUTS, SWITCHES)


def set_keys() -> dict[str, str]:
    """Every config key ``--set`` takes, with an example value (for the unknown-flag hint)."""
    from vitdistill.distill.config import SCHEMA

    return {key: "true" if bool in decl.types else "VALUE" for key, decl in SCHEMA.items()}


def run(args: argparse.Namespace) -> int:
    from vitdistill.distill import train
    from vitdistill.utils.dist import current
    from vitdistill.utils.io import check_output

    check_output(args.output, "--output")

    summary = train(
        args.config,
        overrides=args.overrides
        + shortcut_overrides(args, SHORTCUTS)
        + (["model.trust_checkpoint=true", "teacher.trust_checkpoint=true"] if args.trust_checkpoint else []),
        output=args.output,
        resume=args.resume,
        data=args.data,
        strict=args.strict,
    )
    if current().is_main:
        last, best = summary.get("last") or {}, summary.get("best") or {}
        print(
            json.dumps(
                {
                    "run_dir": summary["run_dir"],
                    "last": last,
                    "best": best,
                    "best_ema": summary.get("best_ema"),
                    "wall_time_s": round(summary["wall_time_s"], 2),
                }
            )
        )
    return 0
