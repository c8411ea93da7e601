"""`vitdistill analyze`: per-image SVD ranks, shared-basis PCA, subspace rotation and SEP."""

from __future__ import annotations

import argparse

from vitdistill.errors import UserError
from vitdistill.utils.overrides import add_set_option, parse_sets


def _percent_list(text: str, name: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UserError(
            f"{name} must be comma-separated percentages like 80,90,95,99 (got {text!r})"
        ) from None
    if not vals:
        raise UserError(f"{name} names no value")
    return vals


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
    p.add_argument(
        "--split", default="val", help="split of a train/val folder or synthetic set (default val)"
    )
    p.add_argument("--checkpoint", help="weights: .safetensors/.pt/.pth, a vitdistill run or export folder")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a legacy --checkpoint that pickles more than tensors (unpickling can run code)",
    )
    p.add_argument(
        "--pretrained", action="store_true", help="timm pretrained weights (needs them cached or network)"
    )
    p.add_argument("--num-classes", type=int, help="classifier size (default: from the checkpoint)")
    add_set_option(p, "extra timm model kwargs", "--set img_size=32 --set patch_size=8")
    p.add_argument("--images", type=int, help="analyse at most N images (evenly spread over the data)")
    p.add_argument(
        "--layers", default="all", help="all | last | comma list like 0,5,11 (negatives from the end)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument(
        "--final-norm",
        action="store_true",
        help="apply the model's final norm to the taps (for a Lift student: its lifted, teacher-wide tokens)",
    )
    p.add_argument("--center", action="store_true", help="subtract each image's mean token before analysis")
    p.add_argument("--standardize", action="store_true", help="z-score each channel over each image's tokens")
    p.add_argument("--thresholds", default="80,90,95,99", help="energy thresholds in percent")
    p.add_argument("--sep-thresholds", default="50,60,70,80,90", help="SEP thresholds in percent")
    p.add_argument("--sep-mode", default="full", choices=["full", "folded"], help="headline SEP convention")
    p.add_argument(
        "--permutations", type=int, default=50, help="channel permutations for SEP robustness (0 = off)"
    )
    p.add_argument(
        "--permutation-layers",
        default="last",
        choices=["last", "all"],
        help="layers that get the SEP channel-permutation test (default last)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap samples for the permutation CI")
    p.add_argument(
        "--rotation-images", type=int, default=64, help="images whose subspaces are kept (0 = off)"
    )
    p.add_argument(
        "--rotation-threshold", type=float, default=90.0, help="k_i = own d at this energy percent"
    )
    p.add_argument("--rotation-pairs", type=int, default=5000, help="at most this many image pairs")
    p.add_argument(
        "--pca-curves",
        default="last",
        choices=["last", "all", "off"],
        help="layers that get per-image shared-basis curves (a scratch copy of their features on disk)",
    )
    p.add_argument(
        "--rank-rtol", type=float, help="relative tolerance of the numerical rank (default max(N,C)*eps32)"
    )
    p.add_argument(
        "--precision",
        default="float64",
        choices=["float64", "mixed"],
        help="per-image eigenvalues in float64, or in float32 with a float64 re-check near every boundary "
        "(same integers; faster only where float32 LAPACK is)",
    )
    p.add_argument(
        "--overlap",
        action="store_true",
        help="compute the statistics of each batch on a worker thread while the next batch runs",
    )
    p.add_argument(
        "--crop-pct", type=float, help="override the eval transform's crop_pct (1.0 keeps the whole image)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for random weights, permutations and image sampling (default 0)",
    )
    p.add_argument("--out", help="result folder (default analysis/MODEL)")
    p.add_argument("--pdf", action="store_true", help="also write plots as PDF")
    p.add_argument("--no-plots", action="store_true", help="write the tables and JSON only, no figures")
    p.add_argument(
        "--strict", action="store_true", help="an unreadable image is an error (default: skip and count)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its statistics checkpoint"
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=20, help="batches between statistics checkpoints (0 = never)"
    )
    p.add_argument(
        "--save-features", action="store_true", help="keep the token features (see docs/analysis.md)"
    )
    p.add_argument(
        "--features-dtype",
        default="float16",
        choices=["float16", "float32"],
        help="dtype of the features kept by --save-features (default float16)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from vitdistill.analysis import analyze
    from vitdistill.utils.io import check_output

    check_output(args.out or "analysis/MODEL", "--out")
    thresholds = tuple(t / 100 for t in _percent_list(args.thresholds, "--thresholds"))
    summary = analyze(
        args.model,
        args.data,
        args.out,
        checkpoint=args.checkpoint,
        trust_checkpoint=args.trust_checkpoint,
        pretrained=args.pretrained,
        num_classes=args.num_classes,
        model_kwargs=parse_sets(args.overrides),
        layers=args.layers,
        images=args.images,
        batch_size=args.batch_size,
        device=args.device,
        split=args.split,
        center=args.center,
        standardize=args.standardize,
        thresholds=thresholds,
        sep_alphas=_percent_list(args.sep_thresholds, "--sep-thresholds"),
        sep_mode=args.sep_mode,
        permutations=args.permutations,
        permutation_layers=args.permutation_layers,
        bootstrap=args.bootstrap,
        rotation_images=args.rotation_images,
        rotation_threshold=args.rotation_threshold / 100,
        rotation_pairs=args.rotation_pairs,
        pca_curves=args.pca_curves,
        rank_rtol=args.rank_rtol,
        precision=args.precision,
        overlap=args.overlap,
        crop_pct=args.crop_pct,
        seed=args.seed,
        final_norm=args.final_norm,
        strict=args.strict,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        save_features=args.save_features,
        features_dtype=args.features_dtype,
        pdf=args.pdf,
        plots=not args.no_plots,
        num_workers=args.workers,
        progress=not args.no_progress,
    )
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
