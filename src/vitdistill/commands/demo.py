"""`vitdistill demo`: run the whole study in miniature and write report.md / report.html."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="vitdistill-demo", help="output folder (default: ./vitdistill-demo)")
    parser.add_argument(
        "--quick", action="store_true", help="tiny models and data: about two minutes end to end"
    )
    parser.add_argument(
        "--data", metavar="DIR", help="run the study on your ImageFolder (train/ and val/ subfolders)"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train and analyse")
    parser.add_argument("--seeds", type=int, help="seeds per student method (default 2)")
    parser.add_argument("--epochs", type=int, help="epochs per student (default 7; --quick 1)")
    parser.add_argument("--teacher-epochs", type=int, help="epochs for the teacher (default 12; --quick 2)")
    parser.add_argument(
        "--fresh", action="store_true", help="delete earlier stage results in --out and start over"
    )
    g = parser.add_argument_group("sizes (mostly for --data)")
    g.add_argument("--img-size", type=int, help="input resolution (default 32)")
    g.add_argument("--patch-size", type=int, help="patch size (default 4: an 8x8 token grid at 32 px)")
    g.add_argument("--teacher-width", type=int, help="teacher embedding width (default 128)")
    g.add_argument("--teacher-depth", type=int, help="teacher blocks (default 4)")
    g.add_argument("--student-width", type=int, help="student embedding width (default 32)")
    g.add_argument("--student-depth", type=int, help="student blocks (default 4)")
    g.add_argument(
        "--train-images",
        type=int,
        help="training images (default 2000; synthetic: generated, --data: first N spread over classes)",
    )
    g.add_argument("--val-images", type=int, help="validation images (default 500)")
    g.add_argument("--batch-size", type=int, help="global batch size (default 64)")
    g.add_argument(
        "--analysis-images", type=int, help="validation images used by the feature analyses (default 300)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from vitdistill.demo.study import SIZE_FIELDS, run_demo
    from vitdistill.utils.io import check_output

    check_output(args.out, "--out")

    run_demo(
        args.out,
        fresh=args.fresh,
        progress=not args.no_progress,
        quick=args.quick,
        data=args.data,
        device=args.device,
        **{k: getattr(args, k) for k in SIZE_FIELDS},
    )
    return 0
