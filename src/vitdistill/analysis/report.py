"""Turn merged statistics into summary.json, per_image.csv, tables (md/csv/tex), curves and plots."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from vitdistill.analysis.sep import CAUTION
from vitdistill.analysis.stats import akey, tkey
from vitdistill.utils.io import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    link_or_copy,
    result_set,
)
from vitdistill.utils.tables import render


def _clean(o: Any) -> Any:
    """JSON-safe: NaN/inf become null (strict JSON readers reject NaN)."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


TOKENS_NOTE = {
    "block": "tokens = patch tokens per image (prefix tokens dropped); total_tokens = over all images",
    "stage": "tokens = N = H*W positions of each stage's feature map, channels = C (the map's depth); "
    "total_tokens = over all images; N and C differ from stage to stage",
}


def build_summary(stats, layer_ids, opts, provenance, sample_ids, n_total, skipped, timing) -> dict:
    last = layer_ids[-1]
    layers = []
    seps = {}  # the last layer's, with its permutation test, goes to the top level in full
    for L in layer_ids:
        st = stats[L]
        n, c = st.svd.shape
        entry = {"layer": L, "tokens": n, "channels": c, "svd": st.svd.compute(), "pca": st.pca.compute()}
        if st.curves is not None:
            entry["pca"].update(st.curves.compute())
        sep = seps[L] = st.sep.compute(opts.sep_mode, opts.bootstrap, opts.seed)
        entry["sep"] = {k: sep[k] for k in ("mode", "D", "d", "d_over_D")}
        entry["sep"]["folded"] = {k: sep["folded"][k] for k in ("bins", "d", "d_over_D")}
        if "permutation" in sep:
            entry["sep"]["permutation"] = sep["permutation"]
        if st.rotation is not None:
            entry["rotation"] = st.rotation.compute(st.pca.eig()[1])[0]
        layers.append(entry)
    st = stats[last]
    top = layers[-1]
    rotation = None
    if st.rotation is not None:
        basis = st.pca.eig()[1]
        rotation, _ = st.rotation.compute(basis)
    ids, _ = st.svd.per_image()
    unit = provenance.get("taps", {}).get("unit", "block")
    summary = {
        "model": provenance["model"],
        "weights": provenance["weights"],
        "layer": last,
        "layer_unit": unit,
        "images": int(len(ids)),
        "images_requested": int(n_total),
        "images_skipped": int(skipped),
        "tokens": top["tokens"],
        "channels": top["channels"],
        "total_tokens": int(top["pca"]["tokens"]),
        "svd": top["svd"],
        "pca": top["pca"],
        "sep": seps[last],
        "rotation": rotation,
        "layers": layers,
        "options": asdict(opts),
        "provenance": provenance,
        "timing": timing,
        "notes": {
            "tokens": TOKENS_NOTE[unit],
            "numerical_rank": "count of singular values above rank_rtol times the image's largest one",
            "percentiles": "linear interpolation across images (numpy method='linear')",
            "sep": CAUTION,
            "pca_curves": "per-image shared-basis d_t are computed for layers listed in pca_curve_layers",
        },
        "pca_curve_layers": [L for L in layer_ids if stats[L].curves is not None],
        "image_list": "images.txt",
    }
    return _clean(summary)


def _table_rows(summary: dict, label: str | None = None) -> dict:
    ts = list(summary["svd"]["p99"].keys())
    row = {
        "Model": label or summary["model"],
        "Dims": summary["channels"],
        "Tokens": summary["tokens"],
        "Images": summary["images"],
    }
    for t in ts:
        row[f"SVD {t}%"] = summary["svd"]["p99"][t]
    for t in ts:
        v = summary["pca"].get("p99", {}).get(t)
        row[f"Dataset {t}%"] = v
    for t in ts:
        row[f"Global PCA {t}%"] = summary["pca"]["global"].get(t)
    return row


def _sep_row(summary: dict, label: str | None = None) -> dict:
    sep = summary["sep"]
    full = sep.get("full", sep)
    row = {"Model": label or summary["model"], "Dimension (D)": sep["D"], "Num Tokens": sep["tokens"]}
    for a in full["d"]:
        row[f"d/D @ {a}%"] = f"{full['d_over_D'][a]:.6f}"
        row[f"d @ {a}%"] = full["d"][a]
    return row


def write_tables(out: Path, summaries: list[dict], labels: list[str] | None = None) -> None:
    labels = labels or [None] * len(summaries)
    rank_rows = [_table_rows(s, lab) for s, lab in zip(summaries, labels, strict=True)]
    sep_rows = [_sep_row(s, lab) for s, lab in zip(summaries, labels, strict=True)]
    cap_rank = (
        "99th percentile over images of the dimensions holding 80/90/95/99% of the energy: SVD = each "
        "image's own basis, Dataset = one shared PCA basis (per image); Global PCA = the dataset spectrum."
    )
    cap_sep = "SEP thresholds, full FFT order, pooled mean curve. " + CAUTION
    for fmt in ("md", "csv", "tex"):
        atomic_write_text(out / f"svd_rank_table.{fmt}", render(rank_rows, fmt, cap_rank))
        note = f"\n> {CAUTION}\n" if fmt == "md" else ""
        atomic_write_text(out / f"sep_table.{fmt}", render(sep_rows, fmt, cap_sep) + note)
    if len(summaries) == 1:
        s = summaries[0]
        layer_rows = []
        first = "Stage" if s.get("layer_unit") == "stage" else "Layer"
        for e in s["layers"]:
            r = {first: e["layer"], "Tokens": e["tokens"], "Dims": e["channels"]}
            for t, v in e["svd"]["p99"].items():
                r[f"SVD p99 {t}%"] = v
            for t, v in e["svd"]["mean"].items():
                r[f"SVD mean {t}%"] = round(v, 3)
            for t, v in e["pca"]["global"].items():
                r[f"Global PCA {t}%"] = v
            for a, v in e["sep"]["d"].items():
                r[f"SEP d@{a}%"] = v
            layer_rows.append(r)
        for fmt in ("md", "csv", "tex"):
            atomic_write_text(out / f"layers_table.{fmt}", render(layer_rows, fmt, _layers_caption(s)))


def _layers_caption(summary: dict) -> str:
    if summary.get("layer_unit") == "stage":
        return (
            "Per-stage statistics: Stage = index in the model's timm feature_info, Tokens = N = H*W of "
            "the stage's feature map, Dims = its C channels"
        )
    return "Per-layer statistics"


def write_per_image(out: Path, stats, layer: int, opts, sample_ids: list[str]) -> None:
    st = stats[layer]
    ids, rows = st.svd.per_image()
    ts = [tkey(t) for t in opts.thresholds]
    pca = {}
    if st.curves is not None:
        pids, prow = st.curves.per_image()
        pca = {int(i): r for i, r in zip(pids, prow, strict=True)}
    sids, srows = st.sep.rows.get()
    na = len(opts.sep_alphas)
    off = 0 if opts.sep_mode == "full" else na
    nb = st.sep.D if opts.sep_mode == "full" else st.sep.D // 2 + 1
    sep = {int(i): r[off : off + na].numpy() / nb for i, r in zip(sids, srows, strict=True)}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["index", "image"] + [f"svd_d{t}" for t in ts] + ["numerical_rank"] + [f"pca_d{t}" for t in ts]
    header += [f"sep_{opts.sep_mode}_bw{akey(a)}" for a in opts.sep_alphas]
    w.writerow(header)
    for i, r in zip(ids, rows, strict=True):
        i = int(i)
        p = pca.get(i)
        row = [i, sample_ids[i] if i < len(sample_ids) else i] + [int(v) for v in r]
        row += [int(v) for v in p] if p is not None else [""] * len(ts)
        row += [f"{v:.6f}" for v in sep[i]]
        w.writerow(row)
    atomic_write_text(out / "per_image.csv", buf.getvalue())


def curves_dict(stats, layer_ids) -> dict[str, np.ndarray]:
    """Arrays behind the plots, saved as curves.npz so `compare` can overlay analyses."""
    d: dict[str, np.ndarray] = {"layers": np.array(layer_ids)}
    for L in layer_ids:
        st = stats[L]
        d[f"L{L}/svd_mean_spectrum"] = st.svd.mean_spectrum()
        lam, _ = st.pca.eig()
        d[f"L{L}/pca_eigenvalues"] = lam.cpu().numpy()
        for m in ("full", "folded"):
            mean, std = st.sep.mean_std(m)
            d[f"L{L}/sep_{m}_mean"], d[f"L{L}/sep_{m}_std"] = mean, std
        if st.curves is not None:
            mean, std = st.curves.mean_curve()
            d[f"L{L}/pca_capture_mean"], d[f"L{L}/pca_capture_std"] = mean, std
            d[f"L{L}/pca_per_image_d"] = st.curves.per_image()[1]
        d[f"L{L}/svd_per_image_d"] = st.svd.per_image()[1]
        if st.sep.permutations:
            t = max(int(st.sep.tokens), 1)
            d[f"L{L}/sep_perm_means"] = (st.sep.sums["sum_perm"] / t).numpy()
        if st.rotation is not None:
            _, raw = st.rotation.compute(st.pca.eig()[1])
            for k, v in raw.items():
                d[f"L{L}/rotation_{k}"] = v
    return d


PLOTS = ("layer_ranks", "svd_vs_dataset_hist", "pca_spectrum", "sep_curves", "rotation", "compare")
TABLES = ("svd_rank_table", "sep_table", "layers_table")


def owned(name: str) -> bool:
    """Entries of a result folder that belong to an analysis or comparison (even one without a manifest)."""
    stem, _, ext = name.rpartition(".")
    return (
        name in ("summary.json", "images.txt", "per_image.csv", "curves.npz", "compare.json")
        or name in ("features", ".analysis_state")
        or (stem in TABLES and ext in ("md", "csv", "tex"))
        or (stem in PLOTS and ext in ("png", "pdf"))
    )


def write_outputs(
    out: Path, summary: dict, stats, layer_ids, opts, sample_ids, saved_manifest, features_dir=None
) -> None:
    """Write the whole result set into ``out`` at once (see :func:`vitdistill.utils.io.result_set`).

    Saved features (``save_features``) are taken from ``features_dir``, where the pass wrote them.
    """
    with result_set(out, owned) as stage:
        _write_set(stage, summary, stats, layer_ids, opts, sample_ids, saved_manifest, features_dir)


def _write_set(out: Path, summary, stats, layer_ids, opts, sample_ids, saved_manifest, features_dir) -> None:
    last = layer_ids[-1]
    atomic_write_json(out / "summary.json", summary)
    ids, _ = stats[last].svd.per_image()
    atomic_write_text(out / "images.txt", "".join(f"{i}\t{sample_ids[int(i)]}\n" for i in ids))
    write_per_image(out, stats, last, opts, sample_ids)
    write_tables(out, [summary])
    curves = curves_dict(stats, layer_ids)
    atomic_write_with(
        out / "curves.npz", lambda p: np.savez(p, **{k.replace("/", "__"): v for k, v in curves.items()})
    )
    if saved_manifest:
        (out / "features").mkdir()
        for parts in saved_manifest.values():
            for p in parts:
                src = Path(features_dir) / p["file"]
                if src.exists():
                    link_or_copy(src, out / "features" / p["file"])
                else:  # a rank that got no images wrote nothing
                    (out / "features" / p["file"]).touch()
        manifest = {
            "format": "raw little-endian arrays, one file per layer and rank; each holds images x N x C "
            "values in row-major order; image i of a file is dataset index ids[i]",
            "dtype": opts.features_dtype,
            "layers": {},
        }
        for L, parts in saved_manifest.items():
            manifest["layers"][str(L)] = [
                {"file": p["file"], "ids": p["ids"], "shape": p["shape"]} for p in parts
            ]
        atomic_write_json(out / "features" / "manifest.json", manifest)
    if opts.plots:
        from vitdistill.analysis import plots

        plots.plot_all(out, summary, curves, layer_ids, pdf=opts.pdf)


def load_features(result_dir: str | Path, layer: int) -> tuple[np.ndarray, np.ndarray]:
    """Read features saved with save_features: (ids (I,), array (I, N, C)) for one layer."""
    root = Path(result_dir) / "features"
    manifest = json.loads((root / "manifest.json").read_text())
    ids, arrays = [], []
    for part in manifest["layers"][str(layer)]:
        a = np.fromfile(root / part["file"], dtype=manifest["dtype"])
        arrays.append(a.reshape(len(part["ids"]), *part["shape"]) if part["ids"] else a.reshape(0, 0, 0))
        ids.extend(part["ids"])
    arrays = [a for a in arrays if a.size]
    order = np.argsort(ids, kind="stable")
    return np.asarray(ids)[order], np.concatenate(arrays)[order]
