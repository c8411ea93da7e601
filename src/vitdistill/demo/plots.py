"""The demo report's figures. Legends sit outside the axes so they never cover data."""

from __future__ import annotations

import math
from pathlib import Path

from vitdistill.demo import stats
from vitdistill.utils.io import atomic_write_with
from vitdistill.utils.plotting import pyplot

ARCH_COLORS = {"narrow": "#7aa6c2", "lift": "#d9874f", "widelast": "#b0413e", "uniform": "#8c8c8c"}


def save(fig, path: Path) -> None:
    atomic_write_with(path, lambda p: fig.savefig(p, dpi=110, format="png", bbox_inches="tight"))
    pyplot().close(fig)


def accuracy(report: dict, path: Path) -> dict:
    """Top-1 per arm as a dot plot on a 0-100 axis: each seed a dot, the mean a diamond.

    Returns what was drawn (row labels, x limits), which the tests read.
    """
    plt = pyplot()
    res, models = report["results"], report["models"]
    keys = list(res)
    fig, ax = plt.subplots(figsize=(7.0, 0.42 * len(keys) + 1.6))
    for i, k in enumerate(keys):
        r = res[k]
        color = ARCH_COLORS.get(r["arch"], "#999")
        ax.plot(r["top1"], [i] * len(r["top1"]), "o", color=color, ms=4, alpha=0.75, mec="none")
        ax.plot([r["mean"]], [i], "D", color="k", ms=5, mfc=color)
    t = report["teacher"]["top1"]
    ax.axvline(t, color="#444", ls="--", lw=1)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([res[k]["label"] for k in keys], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("validation top-1 (%), scored model after the last epoch")
    ax.set_title(
        f"Students of a {models['teacher']} teacher (dashed: {t:.1f}%)\n"
        f"narrow = {models['narrow']}; dots: single seeds, diamond: mean",
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    drawn_archs = [a for a in ARCH_COLORS if any(r["arch"] == a for r in res.values())]  # legend: only these
    handles = [plt.Line2D([], [], ls="none", marker="o", color=ARCH_COLORS[a]) for a in drawn_archs]
    labels = [models[a] for a in drawn_archs]
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="student")
    drawn = {
        "rows": [t.get_text() for t in ax.get_yticklabels()],
        "xlim": [float(x) for x in ax.get_xlim()],
        "legend": labels,
    }
    save(fig, path)
    return drawn


def _interval(ax, y: float, ci: list[float], bounds: tuple[float, float]) -> bool:
    """An interval as a line, cut at the values the contrast can take; an arrow head where it is cut."""
    lo, hi = max(ci[0], bounds[0]), min(ci[1], bounds[1])
    ax.plot([lo, hi], [y, y], "-", color="k", lw=2)
    for end, cut, marker in ((lo, ci[0] < bounds[0], "<"), (hi, ci[1] > bounds[1], ">")):
        if cut:
            ax.plot([end], [y], marker, color="k", ms=6)
    return ci[0] < bounds[0] or ci[1] > bounds[1]


def contrasts(report: dict, path: Path) -> dict | None:
    """Every paired contrast of the table: per-seed differences, mean and 95% t interval; headlines marked.

    Intervals are cut at the values a contrast can take (a difference of two top-1 values lies in
    -100..+100), so a two-seed interval of +-700 points does not squeeze every other row to a dot.
    No contrasts (the run lacks the arms): no figure, and an earlier one is removed.
    """
    plt = pyplot()
    names = list(report["contrasts"])
    if not names:
        path.unlink(missing_ok=True)
        return None
    cs = [report["contrasts"][n] for n in names]
    gains = report["verdict"].get("published_gain") or {}
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(cs) + 1.7))
    marks, cut = {}, False
    for i, (name, c) in enumerate(zip(names, cs, strict=True)):
        if c.get("headline"):
            ax.axhspan(i - 0.45, i + 0.45, color="#f6e3c8", zorder=0)
        if name in gains:  # the verdict's other alternative: the gain the paper publishes
            ax.plot([gains[name]], [i], "|", color="#2b6cb0", ms=14, mew=2)
            marks[name] = gains[name]
        ax.plot(c["per_seed"], [i + 0.2] * len(c["per_seed"]), "o", color="#999", ms=3)
        if c["ci"] is not None:
            cut = _interval(ax, i, c["ci"], stats.bounds(name)) or cut
        if math.isfinite(c["mean"]):
            ax.plot([c["mean"]], [i], "D", color="#b0413e", ms=5)
        else:
            # at the left edge, above the row's marks, so it never sits on the paper's gain
            ax.text(
                0.01,
                i - 0.3,
                "no number (NaN top-1)",
                transform=ax.get_yaxis_transform(),
                fontsize=7,
                bbox={"fc": "white", "ec": "none", "pad": 1},
            )
    ax.axvline(0, color="#444", lw=1)
    ax.set_yticks(range(len(cs)))
    ax.set_yticklabels([("HEADLINE: " if c.get("headline") else "") + c["label"] for c in cs], fontsize=8)
    for tick, c in zip(ax.get_yticklabels(), cs, strict=True):
        if c.get("headline"):
            tick.set_fontweight("bold")
    ax.set_ylim(len(cs) - 0.5, -0.5)  # every row whole, top to bottom, even one with nothing drawn
    ax.set_xlabel("difference in top-1 points (paired by seed); right of 0: the first arm is better")
    m = report["models"]
    ax.set_title(
        f"Paired contrasts; teacher {m['teacher']}, narrow student {m['narrow']}\n"
        "shaded: the two headline contrasts that decide the verdict; blue bar: the paper's ImageNet gain\n"
        "diamond: mean, black line: 95% t interval, grey dots: single seeds"
        + ("\narrow head: an interval cut where it passes the values the contrast can take" if cut else ""),
        fontsize=9,
    )
    ax.grid(axis="x", alpha=0.3)
    drawn = {
        "rows": [t.get_text() for t in ax.get_yticklabels()],
        "xlim": [float(x) for x in ax.get_xlim()],
        "ylim": [float(y) for y in ax.get_ylim()],
        "paper_gain": marks,
        "cut": cut,
    }
    save(fig, path)
    return drawn


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


def save_sample_grid(ds, path: Path, n: int = 24, cols: int = 8) -> None:
    """A grid of the first image of each class (then further images), titled by class name."""
    import numpy as np

    plt = pyplot()
    picked, seen = [], set()

    def label(i: int) -> int:  # without decoding the image where the data set allows it
        if hasattr(ds, "labels"):
            return int(ds.labels[i])
        return int(ds.render(i)[1]) if hasattr(ds, "render") else int(ds[i][1])

    for i in range(min(len(ds), 20000)):
        y = label(i)
        if y not in seen:
            seen.add(y)
            picked.append(i)
        if len(picked) >= n:
            break
    picked += [i for i in range(len(ds)) if i not in picked][: max(0, n - len(picked))]
    picked = picked[:n]
    rows = math.ceil(len(picked) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.75))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), picked, strict=False):
        img, y, _ = ds[i]
        arr = img.permute(1, 2, 0).numpy() if img is not None else np.zeros((8, 8, 3))
        ax.imshow(arr.clip(0, 1), interpolation="nearest")
        name = ds.classes[y] if 0 <= y < len(ds.classes) else "?"
        ax.set_title(name.replace("-above-", "\nabove ") if "-above-" in name else name, fontsize=7)
    fig.suptitle("Sample training images with their class", fontsize=10)
    save(fig, path)
