"""`vitdistill demo`: run the whole study in miniature and write report.md / report.html."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vitdistill.demo.settings import DemoSettings

    full = DemoSettings.FULL
    parser.add_argument("--out", default="vitdistill-demo", help="output folder (default: ./vitdistill-demo)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny models, about a minute, no verdict drawn"
    )
    parser.add_argument(
        "--data", metavar="DIR", help="run the study on your ImageFolder (train/ and val/ subfolders)"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to analyse")
    parser.add_argument("--seeds", type=int, help=f"paired seeds per arm (default {full['seeds']})")
    parser.add_argument(
        "--seed-offset",
        type=int,
        default=0,
        help="first seed (default 0); a disjoint range gives an independent replication",
    )
    parser.add_argument(
        "--workers", type=int, help="parallel training processes (default: 2, or 1 on a one-core machine)"
    )
    parser.add_argument("--epochs", type=int, help=f"epochs per student (default {full['epochs']})")
    parser.add_argument(
        "--teacher-epochs", type=int, help=f"epochs for the teacher (default {full['teacher_epochs']})"
    )
    parser.add_argument(
        "--with-linear",
        action="store_true",
        help="add the arm 'feature KD through a trainable Linear projector' (not the paper's baseline)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete earlier stage results in --out and start over"
    )
    g = parser.add_argument_group("sizes (mostly for --data)")
    g.add_argument("--img-size", type=int, help=f"input resolution (default {full['img_size']})")
    g.add_argument("--patch-size", type=int, help=f"patch size (default {full['patch_size']})")
    g.add_argument("--teacher-width", type=int, help=f"teacher width (default {full['teacher_width']})")
    g.add_argument("--teacher-depth", type=int, help=f"teacher blocks (default {full['teacher_depth']})")
    g.add_argument("--student-width", type=int, help=f"student width (default {full['student_width']})")
    g.add_argument("--student-depth", type=int, help=f"student blocks (default {full['student_depth']})")
    g.add_argument(
        "--train-images",
        type=int,
        help=f"training images (default {full['train_images']}; --data: first N spread over classes)",
    )
    g.add_argument("--val-images", type=int, help=f"validation images (default {full['val_images']})")
    g.add_argument("--batch-size", type=int, help=f"batch size (default {full['batch_size']})")
    g.add_argument(
        "--analysis-images",
        type=int,
        help=f"validation images used by the feature analyses (default {full['analysis_images']})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from vitdistill.demo.methods import DEFAULT_METHODS
    from vitdistill.demo.settings import SIZE_FIELDS
    from vitdistill.demo.study import run_demo
    from vitdistill.utils.io import check_output

    check_output(args.out, "--out")

    methods = DEFAULT_METHODS + (("featkd_linear",) if args.with_linear else ())
    run_demo(
        args.out,
        fresh=args.fresh,
        progress=not args.no_progress,
        quick=args.quick,
        data=args.data,
        device=args.device,
        seed_offset=args.seed_offset,
        workers=args.workers,
        methods=methods,
        **{k: getattr(args, k) for k in SIZE_FIELDS},
    )
    return 0
