"""Matplotlib figures of one analysis (PNG, and PDF with ``pdf=True``)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from vitdistill.utils.io import atomic_write_with
from vitdistill.utils.plotting import pyplot

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


_warming: threading.Thread | None = None


def _warm() -> None:
    plt = pyplot()
    fig = plt.figure(figsize=(2, 2))
    fig.add_subplot().set_title("warm")  # loads the fonts
    fig.canvas.draw()
    plt.close(fig)


def start_warming() -> None:
    """Import matplotlib and load its fonts on a thread, while the forward passes run (the main
    thread spends them in torch, which releases the GIL); :func:`plot_all` waits for it."""
    global _warming
    if _warming is None:
        _warming = threading.Thread(target=_warm, name="vitdistill-plots-warm", daemon=True)
        _warming.start()


def _subplots(*args, **kwargs):
    """``plt.subplots`` with every title at a fixed height. By default matplotlib measures each
    axes' tick labels at every draw to lift the title above any that sit on top (a third of the
    drawing time here). No plot here puts labels above its axes, and counts up to 1e9 are
    written out, so no "1e6" offset label sits under a title either."""
    plt = pyplot()
    with plt.rc_context({"axes.titley": 1.0, "axes.formatter.limits": (-5, 9)}):
        return plt.subplots(*args, **kwargs)


def save(fig, out: Path, name: str, pdf: bool, right: float = 0.98) -> None:
    # fixed margins: tight_layout needs an extra draw of every text artist, which was about half
    # the cost of a figure (the plots were a large share of analyze's fixed cost)
    fig.subplots_adjust(left=0.07, right=right, bottom=0.14, top=0.86, wspace=0.3)
    atomic_write_with(
        out / f"{name}.png", lambda p: fig.savefig(p, dpi=130, format="png", pil_kwargs={"compress_level": 3})
    )
    if pdf:
        atomic_write_with(out / f"{name}.pdf", lambda p: fig.savefig(p, format="pdf"))
    pyplot().close(fig)


def _shapes_vary(layers: list[dict]) -> bool:
    return len({(e["tokens"], e["channels"]) for e in layers}) > 1


def _where(summary: dict, layer: int) -> str:
    """'layer 11' or 'stage 4', with the layer's N tokens and C channels."""
    return f"{summary.get('layer_unit', 'layer')} {layer} (N={summary['tokens']}, C={summary['channels']})"


def plot_layer_ranks(out: Path, summary: dict, pdf: bool) -> None:
    layers = summary["layers"]
    x = [e["layer"] for e in layers]
    ts = list(layers[0]["svd"]["p99"].keys())
    fig, ax = _subplots(figsize=(10, 4.5))
    for k, t in enumerate(ts):
        c = COLORS[k % len(COLORS)]
        mean = [e["svd"]["mean"][t] for e in layers]
        lo = [e["svd"]["p25"][t] for e in layers]
        hi = [e["svd"]["p75"][t] for e in layers]
        p99 = [e["svd"]["p99"][t] for e in layers]
        ax.plot(x, mean, "-o", color=c, ms=3, label=f"{t}% energy: mean (band p25-p75)")
        ax.fill_between(x, lo, hi, color=c, alpha=0.2)
        ax.plot(x, p99, "--", color=c, lw=1, label=f"{t}% energy: p99")
    unit = summary.get("layer_unit", "block")
    ax.set_xlabel(f"{unit} index" + ("  (N tokens x C channels)" if _shapes_vary(layers) else ""))
    ax.set_ylabel("per-image SVD rank d_t (dimensions)")
    ax.set_ylim(bottom=0)
    if _shapes_vary(layers):  # every stage its own N and C: written under its tick
        ax.set_title(f"{summary['model']}: per-image ranks by {unit}")
        ax.set_xticks(x, [f"{e['layer']}\n{e['tokens']}x{e['channels']}" for e in layers], fontsize=7)
    else:
        ax.set_title(
            f"{summary['model']}: per-image ranks by {unit} (N={summary['tokens']}, C={summary['channels']})"
        )
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    save(fig, out, "layer_ranks", pdf, right=0.72)


def plot_hist(out: Path, summary: dict, curves: dict, layer: int, pdf: bool) -> None:
    svd = curves[f"L{layer}/svd_per_image_d"]
    pca = curves.get(f"L{layer}/pca_per_image_d")
    ts = list(summary["svd"]["p99"].keys())
    fig, axes = _subplots(1, len(ts), figsize=(3.2 * len(ts), 3.4), squeeze=False)
    top = int(max(svd.max(initial=1), pca.max(initial=1) if pca is not None and len(pca) else 1))
    bins = np.arange(top + 2) - 0.5 if top <= 60 else np.linspace(0, top + 1, 61)
    for k, t in enumerate(ts):
        ax = axes[0, k]
        ax.hist(
            svd[:, k], bins=bins, alpha=0.65, color=COLORS[0], label="per-image SVD", histtype="stepfilled"
        )
        if pca is not None and len(pca):
            ax.hist(
                pca[:, k],
                bins=bins,
                alpha=0.65,
                color=COLORS[1],
                label="shared PCA basis",
                histtype="stepfilled",
            )
        ax.axvline(summary["svd"]["p99"][t], color=COLORS[0], ls="--", lw=1)
        if summary["pca"].get("p99"):
            ax.axvline(summary["pca"]["p99"][t], color=COLORS[1], ls="--", lw=1)
        ax.set_xlim(-0.5, top + 1)
        ax.set_title(f"{t}% energy (dashed: p99)", fontsize=9)
        ax.set_xlabel("dimensions d_t")
        if k == 0:
            ax.set_ylabel("images")
            ax.legend(fontsize=7)
    fig.suptitle(f"{summary['model']} {_where(summary, layer)}: own basis vs one shared basis", fontsize=10)
    save(fig, out, "svd_vs_dataset_hist", pdf)


def plot_pca(out: Path, summary: dict, curves: dict, layer: int, pdf: bool) -> None:
    lam = curves[f"L{layer}/pca_eigenvalues"]
    c = len(lam)
    fig, (a1, a2) = _subplots(1, 2, figsize=(10, 4))
    tot = lam.sum() if lam.sum() > 0 else 1.0
    d = np.arange(1, c + 1)
    a1.semilogy(d, np.maximum(lam / tot, 1e-16), color=COLORS[0])
    a1.set_xlabel("principal direction (rank)")
    a1.set_ylabel("eigenvalue / trace (log)")
    a1.set_title("dataset second-moment spectrum")
    a1.grid(alpha=0.3)
    a2.plot(d, 100 * np.cumsum(lam) / tot, color=COLORS[0], label="dataset (global PCA)")
    mean = curves.get(f"L{layer}/pca_capture_mean")
    if mean is not None:
        std = curves[f"L{layer}/pca_capture_std"]
        a2.plot(d, 100 * mean, color=COLORS[1], label="per image under shared basis (mean ± std)")
        a2.fill_between(d, 100 * (mean - std), 100 * np.minimum(mean + std, 1), color=COLORS[1], alpha=0.2)
    spec = curves.get(f"L{layer}/svd_mean_spectrum")
    if spec is not None and len(spec):
        a2.plot(
            np.arange(1, len(spec) + 1),
            100 * np.cumsum(spec),
            color=COLORS[2],
            label="per image, own SVD basis (mean)",
        )
    for t in summary["svd"]["p99"]:
        a2.axhline(float(t), color="grey", lw=0.6, ls=":")
    a2.set_xscale("log")
    a2.set_xlabel("dimensions d (log)")
    a2.set_ylabel("captured energy (%)")
    a2.set_title("captured energy vs dimensions")
    a2.set_ylim(0, 101)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"{summary['model']} {_where(summary, layer)}, {summary['total_tokens']} tokens in all", fontsize=10
    )
    save(fig, out, "pca_spectrum", pdf)


def plot_sep(out: Path, summary: dict, curves: dict, layer: int, pdf: bool) -> None:
    sep = summary["sep"]
    fig, axes = _subplots(1, 2, figsize=(10, 4))
    for ax, m in zip(axes, ("full", "folded"), strict=True):
        mean, std = curves[f"L{layer}/sep_{m}_mean"], curves[f"L{layer}/sep_{m}_std"]
        nb = len(mean)
        x = np.arange(1, nb + 1) / nb
        ax.plot(x, mean, color=COLORS[0], label="mean over tokens")
        ax.fill_between(
            x,
            np.maximum(mean - std, 0),
            np.minimum(mean + std, 100),
            color=COLORS[0],
            alpha=0.2,
            label="± std",
        )
        perm = curves.get(f"L{layer}/sep_perm_means")
        if perm is not None and m == sep.get("permutation", {}).get("mode"):
            ax.plot(
                x, perm.mean(0), color=COLORS[3], ls="--", lw=1, label="channel-permuted (mean of trials)"
            )
        ax.plot([0, 1], [0, 100], color="grey", lw=0.6, ls=":", label="flat spectrum")
        for k, (a, dv) in enumerate(sep[m]["d"].items()):
            ax.plot([dv / nb], [float(a)], "o", color=COLORS[(k + 1) % len(COLORS)], ms=4)
            ax.annotate(
                f"{a}%: d={dv}", (dv / nb, float(a)), fontsize=7, xytext=(4, -10), textcoords="offset points"
            )
        ax.set_xlabel(
            "d / D'  (fraction of frequency bins)" if m == "folded" else "d / D  (fraction of FFT bins)"
        )
        ax.set_ylabel("SEP(d): energy in the first d bins (%)")
        ax.set_title(f"{m} order ({nb} bins)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"{summary['model']} {_where(summary, layer)}: SEP over channels (full order: d50 = D/2 is uninformative)",
        fontsize=10,
    )
    save(fig, out, "sep_curves", pdf)


def plot_rotation(out: Path, summary: dict, curves: dict, layer: int, pdf: bool) -> None:
    rot = summary.get("rotation")
    ov = curves.get(f"L{layer}/rotation_overlap")
    if not rot or ov is None or not len(ov):
        return
    fig, axes = _subplots(1, 3, figsize=(12, 3.6))
    axes[0].hist(ov, bins=30, range=(0, 1), color=COLORS[0], histtype="stepfilled")
    if rot.get("random_baseline") is not None:
        axes[0].axvline(rot["random_baseline"], color=COLORS[3], ls="--", label="random subspaces (mean)")
    axes[0].axvline(1.0, color="grey", ls=":", label="identical subspace")
    axes[0].set_xlabel("overlap ||Vi^T Vj||_F^2 / min(ki, kj)")
    axes[0].set_ylabel("image pairs")
    axes[0].set_title(f"pairwise overlap ({rot['pairs']} pairs)")
    axes[0].legend(fontsize=7)
    ang = curves.get(f"L{layer}/rotation_angles_deg")
    axes[1].hist(ang, bins=30, range=(0, 90), color=COLORS[1], histtype="stepfilled")
    axes[1].set_xlabel("principal angle (degrees)")
    axes[1].set_ylabel("angles (all pairs)")
    axes[1].set_title("principal angles")
    cap = curves.get(f"L{layer}/rotation_capture")
    if cap is not None and len(cap):
        axes[2].hist(cap, bins=20, range=(0, 1), color=COLORS[2], histtype="stepfilled")
    axes[2].set_xlabel("share of own top-k energy in shared top-k basis")
    axes[2].set_ylabel("images")
    axes[2].set_title("shared-basis capture")
    fig.suptitle(
        f"{summary['model']} {_where(summary, layer)}: subspace rotation (k = own d at "
        f"{100 * rot['threshold']:g}%, {rot['images']} images)",
        fontsize=10,
    )
    save(fig, out, "rotation", pdf)


def plot_all(out: Path, summary: dict, curves: dict, layer_ids: list[int], pdf: bool = False) -> None:
    if _warming is not None:
        _warming.join()  # pyplot is not thread-safe: no figure is made while the warm-up runs
    last = layer_ids[-1]
    plot_layer_ranks(out, summary, pdf)
    plot_hist(out, summary, curves, last, pdf)
    plot_pca(out, summary, curves, last, pdf)
    plot_sep(out, summary, curves, last, pdf)
    plot_rotation(out, summary, curves, last, pdf)
