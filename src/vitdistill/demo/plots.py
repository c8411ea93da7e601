"""The demo report's figures. Legends sit outside the axes so they never cover data."""

from __future__ import annotations

from pathlib import Path

from vitdistill.utils.io import atomic_write_with
from vitdistill.utils.plotting import pyplot

ARCH_COLORS = {"narrow": "#7aa6c2", "lift": "#d9874f", "widelast": "#b0413e", "uniform": "#8c8c8c"}


def save(fig, path: Path) -> None:
    atomic_write_with(path, lambda p: fig.savefig(p, dpi=110, format="png", bbox_inches="tight"))
    pyplot().close(fig)


def accuracy(report: dict, path: Path) -> None:
    """Top-1 per arm: each seed a dot, the mean a bar; the teacher a dashed line."""
    plt = pyplot()
    res, models = report["results"], report["models"]
    keys = list(res)
    fig, ax = plt.subplots(figsize=(7.0, 0.42 * len(keys) + 1.6))
    for i, k in enumerate(keys):
        r = res[k]
        ax.barh(i, r["mean"], color=ARCH_COLORS.get(r["arch"], "#999"), alpha=0.8)
        ax.plot(r["top1"], [i] * len(r["top1"]), "o", color="k", ms=3.5, alpha=0.7)
    t = report["teacher"]["top1"]
    ax.axvline(t, color="#444", ls="--", lw=1)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([res[k]["label"] for k in keys], fontsize=8)
    ax.invert_yaxis()
    lo = min(min(r["top1"]) for r in res.values())
    ax.set_xlim(max(0.0, lo - 5), max(t, max(max(r["top1"]) for r in res.values())) + 3)
    ax.set_xlabel("validation top-1 (%), last epoch")
    ax.set_title(
        f"Students of a {models['teacher']} teacher (dashed: {t:.1f}%)\n"
        f"narrow = {models['narrow']}; bars: mean over seeds, dots: single seeds",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.8) for c in ARCH_COLORS.values()]
    labels = [models[a] for a in ARCH_COLORS]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="student")
    save(fig, path)


def contrasts(report: dict, names: list[str], path: Path) -> None:
    """Paired contrasts: per-seed differences (dots), mean and 95% t interval (bar), zero line."""
    plt = pyplot()
    cs = [(n, report["contrasts"][n]) for n in names if n in report["contrasts"]]
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(cs) + 1.5))
    for i, (_, c) in enumerate(cs):
        ax.plot(c["per_seed"], [i + 0.18] * len(c["per_seed"]), "o", color="#999", ms=3)
        if c["ci"] is not None:
            ax.plot(c["ci"], [i, i], "-", color="k", lw=2)
        ax.plot([c["mean"]], [i], "D", color="#b0413e", ms=5)
    ax.axvline(0, color="#444", lw=1)
    ax.set_yticks(range(len(cs)))
    ax.set_yticklabels([n for n, _ in cs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("difference in top-1 points (paired by seed)")
    m = report["models"]
    ax.set_title(
        f"Paired contrasts; teacher {m['teacher']}, narrow student {m['narrow']}\n"
        "diamond: mean, black line: 95% t interval, grey dots: single seeds",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    save(fig, path)


def teacher_vs_paper(ta: dict, ref: dict, teacher_label: str, path: Path) -> None:
    """Left: per-image vs shared-basis dims as d/C; right: SEP d/D; miniature teacher and CaiT-S24."""
    plt = pyplot()
    th = ["80", "90", "95", "99"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.6))
    x = [int(t) for t in th]
    a1.plot(
        x,
        [ta["svd_p99"][t] / ta["channels"] for t in th],
        "o-",
        color="#b0413e",
        label=f"{teacher_label}: per image",
    )
    a1.plot(
        x,
        [ta["pca_p99"][t] / ta["channels"] for t in th],
        "s--",
        color="#b0413e",
        label=f"{teacher_label}: shared basis",
    )
    a1.plot(
        x,
        [ref["svd_p99"][t] / ref["channels"] for t in th],
        "o-",
        color="#444",
        label="CaiT-S24 (paper): per image",
    )
    a1.plot(
        x,
        [ref["pca_p99"][t] / ref["channels"] for t in th],
        "s--",
        color="#444",
        label="CaiT-S24 (paper): shared basis",
    )
    a1.set_xlabel("energy kept (%)")
    a1.set_ylabel("dimensions needed / width C (99th pct over images)")
    a1.set_title("Per-image SVD vs one shared PCA basis", fontsize=9)
    a1.set_ylim(0, 1.05)
    a1.grid(alpha=0.3)
    al = ["50", "60", "70", "80", "90"]
    xa = [int(a) for a in al]
    a2.plot(
        xa, [ta["sep_d_over_D"][a] for a in al], "o-", color="#b0413e", label=f"{teacher_label}: full order"
    )
    a2.plot(
        xa,
        [ta["sep_folded_d_over_D"][a] for a in al],
        "^:",
        color="#b0413e",
        label=f"{teacher_label}: folded",
    )
    a2.plot(
        xa, [ref["sep_d_over_D"][a] for a in al], "o-", color="#444", label="CaiT-S24 (paper): full order"
    )
    a2.set_xlabel("spectral energy kept (%)")
    a2.set_ylabel("channel frequencies needed / D")
    a2.set_title("Spectral Energy Pattern (SEP)", fontsize=9)
    a2.set_ylim(0, 1.05)
    a2.grid(alpha=0.3)
    h1, l1 = a1.get_legend_handles_labels()
    h2, l2 = a2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=7)
    fig.suptitle("Final-block patch tokens: the miniature teacher beside the paper's CaiT-S24", fontsize=10)
    fig.tight_layout()
    save(fig, path)
