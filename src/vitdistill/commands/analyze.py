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
    p.add_argument(
        "--data",
        required=True,
        help="ImageFolder dir, image-list file, synthetic:NAME or hfds/NAME (see docs/training.md)",
    )
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
        _print_summary(summary, args.out or f"analysis/{summary['model']}")
    return 0


def _print_summary(summary: dict, out: str) -> None:
    print(
        f"{summary['model']} {summary['layer_unit']} {summary['layer']}: {summary['images']} images, "
        f"N={summary['tokens']} tokens, C={summary['channels']} channels"
    )
    print(f"  data: {_data_line(summary['provenance'].get('data') or {})}")
    svd, pca = summary["svd"]["p99"], summary["pca"].get("p99")
    energies = "/".join(f"{k}" for k in svd)
    print(
        f"  dimensions holding {energies}% of an image's energy, 99th percentile over images "
        "(interpolated between images, so fractional):"
    )
    print("    per-image SVD:     " + ", ".join(f"{v:g}" for v in svd.values()))
    if pca:
        print("    shared PCA basis:  " + ", ".join(f"{v:g}" for v in pca.values()))
    print(
        "  SEP bandwidth d ({} FFT order) for {}% of the spectral energy: ".format(
            summary["sep"]["mode"], "/".join(summary["sep"]["d"])
        )
        + ", ".join(str(v) for v in summary["sep"]["d"].values())
    )
    print(f"  results in {out}/")


def _data_line(data: dict) -> str:
    """Which images were read, and why so few when a generated set's val split is small."""
    split, spec = data.get("split"), data.get("spec", "?")
    line = f"the {split} split of {spec}" if split else str(spec)
    options = data.get("options") or {}
    if data.get("kind") == "synthetic" and split != "train" and "n_val=" not in spec:
        line += (
            f" (its val/test splits hold n // 6 = {options.get('n_val')} images; set n_val or --split train)"
        )
    return line
