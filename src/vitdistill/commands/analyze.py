"""`vitdistill analyze`: per-image SVD ranks, shared-basis PCA, subspace rotation and SEP."""

from __future__ import annotations

import argparse

from vitdistill.analysis.options import AnalysisOptions
from vitdistill.commands.flags import add_options, add_set_option, options_from
from vitdistill.utils.overrides import parse_sets


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        nargs="?",
        default="",
        help="timm model name, or a student lift:BASE:DIM / widelast:BASE:DIM[:NUM_WIDE] "
        "(optional with a run/export --checkpoint carrying config.json)",
    )
    p.add_argument("--data", required=True, help="ImageFolder dir, image-list file, or synthetic:NAME")
    p.add_argument("--out", help="result folder (default analysis/MODEL)")
    add_set_option(p, "extra timm model kwargs", "--set img_size=32 --set patch_size=8")
    add_options(p, AnalysisOptions)


def run(args: argparse.Namespace) -> int:
    from vitdistill.analysis import analyze
    from vitdistill.utils.io import check_output

    check_output(args.out or "analysis/MODEL", "--out")
    options = options_from(args, AnalysisOptions)
    summary = analyze(args.model, args.data, args.out, model_kwargs=parse_sets(args.overrides), **options)
    if summary is not None:
        out = args.out or f"analysis/{summary['model']}"
        t = summary["svd"]["p99"]
        print(
            f"{summary['model']} layer {summary['layer']}: {summary['images']} images, N={summary['tokens']}, "
            f"C={summary['channels']}"
        )
        print("  per-image SVD p99 d_t: " + ", ".join(f"{k}%: {v:g}" for k, v in t.items()))
        if summary["pca"].get("p99"):
            print(
                "  shared-basis  p99 d_t: "
                + ", ".join(f"{k}%: {v:g}" for k, v in summary["pca"]["p99"].items())
            )
        print(
            "  SEP d ({}): ".format(summary["sep"]["mode"])
            + ", ".join(f"{k}%: {v}" for k, v in summary["sep"]["d"].items())
        )
        print(f"  results in {out}/")
    return 0
