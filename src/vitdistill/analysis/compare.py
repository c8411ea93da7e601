"""Put several analyses (teacher, students) side by side: one table set and overlay plots."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from vitdistill.analysis import plots
from vitdistill.analysis.options import CompareOptions
from vitdistill.analysis.report import owned, write_tables
from vitdistill.errors import UserError, first_line
from vitdistill.utils.io import atomic_write_json, result_set
from vitdistill.utils.lock import hold_folder, releases_folders
from vitdistill.utils.markers import refuse_inside
from vitdistill.utils.options import from_keywords
from vitdistill.utils.plotting import pyplot


def _load(d: Path) -> tuple[dict, dict]:
    f = d / "summary.json"
    if not f.is_file():
        raise UserError(
            f"{d} is not an analysis result folder (no summary.json); run `vitdistill analyze` first"
        )
    try:
        summary = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{f} is not valid JSON ({e.msg} at line {e.lineno})") from None
    for key in ("model", "svd", "pca", "sep", "layers", "channels"):
        if key not in summary:
            raise UserError(f"{f} lacks '{key}': not written by `vitdistill analyze`")
    curves: dict = {}
    if (d / "curves.npz").is_file():
        try:  # plain arrays only: an object array (a pickle) is refused, never unpickled
            with np.load(d / "curves.npz", allow_pickle=False) as z:
                curves = {k.replace("__", "/"): z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - whatever numpy says, the file is unusable
            raise UserError(
                f"{d / 'curves.npz'} is not a curves file written by `vitdistill analyze` ({first_line(e)})"
            ) from None
    return summary, curves


@releases_folders
def compare(result_dirs: list[str | os.PathLike], out: str | os.PathLike, **options) -> dict:
    """Write comparison tables (svd_rank_table / sep_table in md, csv, tex) and overlay plots to ``out``.

    ``options`` are the fields of :class:`~vitdistill.analysis.options.CompareOptions`.
    """
    opts = from_keywords(CompareOptions, options)
    labels, pdf = opts.labels, opts.pdf
    if not result_dirs:
        raise UserError("compare needs at least one analysis folder")
    dirs = [Path(d) for d in result_dirs]
    if any(Path(out).resolve() == d.resolve() for d in dirs):
        raise UserError(
            f"'out' {out} is one of the analyses being compared; choose another folder", settings=("out",)
        )
    if labels is not None and len(labels) != len(dirs):
        raise UserError(f"'labels' gives {len(labels)} names for {len(dirs)} folders", settings=("labels",))
    loaded = [_load(d) for d in dirs]
    labels = labels or _default_labels([s for s, _ in loaded], dirs)
    summaries = [s for s, _ in loaded]
    index = _index(dirs, labels, summaries)
    refuse_inside(out, dirs)
    hold_folder(out, "compare")
    with result_set(out, owned) as stage:  # the old comparison or the new one, never a mix
        write_tables(stage, summaries, labels)
        _overlay(stage, loaded, labels, pdf)
        atomic_write_json(stage / "compare.json", index)
    return index


def _index(dirs: list[Path], labels: list[str], summaries: list[dict]) -> dict:
    return {
        "inputs": [str(d) for d in dirs],
        "labels": labels,
        "rows": [
            {
                "label": lab,
                "model": s["model"],
                "layer": s.get("layer"),
                "layer_unit": s.get("layer_unit", "block"),
                "channels": s["channels"],
                "tokens": s["tokens"],
                "images": s["images"],
                "svd_p99": s["svd"]["p99"],
                "pca_p99": s["pca"].get("p99"),
                "pca_global": s["pca"]["global"],
                "sep_d": s["sep"]["d"],
                "sep_d_over_D": s["sep"]["d_over_D"],
            }
            for s, lab in zip(summaries, labels, strict=True)
        ],
    }


def _default_labels(summaries: list[dict], dirs: list[Path]) -> list[str]:
    names = [s["model"] for s in summaries]
    if len(set(names)) == len(names):
        return names
    return [f"{n} ({d.name})" for n, d in zip(names, dirs, strict=True)]


def _overlay(out: Path, loaded, labels, pdf: bool) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for k, ((s, cv), lab) in enumerate(zip(loaded, labels, strict=True)):
        c = plots.COLORS[k % len(plots.COLORS)]
        L = s["layer"]
        layers = s["layers"]
        depth = np.array([e["layer"] for e in layers], dtype=float)
        rel = (depth + 1) / (depth.max() + 1) if len(depth) else depth
        t = "99" if "99" in layers[0]["svd"]["p99"] else list(layers[0]["svd"]["p99"])[-1]
        axes[0].plot(
            rel, [e["svd"]["p99"][t] / e["channels"] for e in layers], "-o", ms=3, color=c, label=lab
        )
        sep = cv.get(f"L{L}/sep_full_mean")
        if sep is not None:
            axes[1].plot(np.arange(1, len(sep) + 1) / len(sep), sep, color=c, label=f"{lab} (D={len(sep)})")
        lam = cv.get(f"L{L}/pca_eigenvalues")
        if lam is not None and lam.sum() > 0:
            x = np.arange(1, len(lam) + 1) / len(lam)
            axes[2].plot(x, 100 * np.cumsum(lam) / lam.sum(), color=c, label=f"{lab}: dataset PCA")
            spec = cv.get(f"L{L}/svd_mean_spectrum")
            if spec is not None and len(spec):
                axes[2].plot(
                    np.arange(1, len(spec) + 1) / len(lam),
                    100 * np.cumsum(spec),
                    color=c,
                    ls="--",
                    label=f"{lab}: per-image SVD (mean)",
                )
    axes[0].set_xlabel("relative depth (layer / number of layers)")
    axes[0].set_ylabel(f"p99 per-image rank at {t}% / C")
    axes[0].set_title("per-image rank by depth")
    axes[1].plot([0, 1], [0, 100], color="grey", lw=0.6, ls=":")
    axes[1].set_xlabel("d / D (full FFT order)")
    axes[1].set_ylabel("SEP(d) (%)")
    axes[1].set_title("SEP mean curves, last analysed layer")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("d / C (log)")
    axes[2].set_ylabel("captured energy (%)")
    axes[2].set_title("shared basis (solid) vs own basis (dashed)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    plots.save(fig, out, "compare", pdf)
