"""The demo report's prose: each section turns the collected numbers into blocks.

A block is ``("h", level, text)``, ``("p", text)``, ``("ul", items)``, ``("table", head, rows)``
or ``("img", file, alt)``; text may use ``**bold**``, ``*italic*`` and ```code```. The renderers
(:mod:`vitdistill.demo.render`) only format blocks, and the numbers come from
:func:`vitdistill.demo.collect.collect`.
"""

from __future__ import annotations

import math

from vitdistill.demo.collect import SEP_ALPHAS, THRESHOLDS
from vitdistill.demo.verdict import READINGS, fmt
from vitdistill.utils.tables import human

Block = tuple


def _f(v, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int):
        return str(v)
    return f"{v:.{nd}f}"


def _seeds_text(s: dict) -> str:
    first = s["seed_offset"]
    return f"seeds {first}..{first + s['seeds'] - 1}"


def section_top(report: dict) -> list[Block]:
    """Title, the smoke-run warning, and the "what this shows" paragraph."""
    s, m, v = report["settings"]["settings"], report["models"], report["verdict"]
    b: list[Block] = [("h", 1, "vitdistill demo: the paper's claim in miniature")]
    if s["quick"]:
        b.append(
            (
                "p",
                "**Smoke run (quick settings): the numbers in this report are not evidence.** Models are "
                "tiny and trained for about one epoch, near chance accuracy; no verdict is drawn. "
                "Run the demo without the quick settings for the study.",
            )
        )
    n_arms = len(report["results"])
    b.append(("h", 2, "What this shows"))
    b.append(
        (
            "p",
            (
                f"The paper (Tian, Xu, Li, ICML 2026) claims that feature distillation fails when a narrow ViT "
                f"student learns from a wide teacher, and that it works once the student's end is as wide as the "
                f"teacher (Lift: a kept lifting projector; WideLast: a wide last block). This demo tests that claim "
                f"on a CPU: a {m['teacher']} teacher and {n_arms} kinds of students built on a {m['narrow']} "
                f"backbone (width ratio {s['teacher_width'] // s['student_width']}x and depth ratio "
                f"{s['teacher_depth'] / s['student_depth']:g}x, as CaiT-S24 over DeiT-Tiny), trained from scratch on "
                f"a synthetic {report['data']['num_classes']}-class shapes task with {s['seeds']} paired seeds per "
                f"arm. **{v['sentence']}**"
            ),
        )
    )
    return b


def section_verdict(report: dict) -> list[Block]:
    cs, v = report["contrasts"], report["verdict"]
    b: list[Block] = [("h", 2, "Verdict")]
    holds = {True: "**holds: true**", False: "**holds: false**", None: "**holds: null** (undecided)"}[
        v["holds"]
    ]
    b.append(("p", f"{holds}. Rule, fixed in the code: {v['rule']}."))
    headroom = _headroom(report)
    if headroom:
        b.append(("p", headroom))
    if not cs:
        b.append(("p", "No contrast could be formed: this run lacks the arms that every contrast compares."))
        return b
    head = ["Contrast", "What it measures", "Mean (points)", "95% CI", "Width", "n"]
    rows = []
    for name, c in cs.items():
        ci = c["ci"]
        rows.append(
            [
                f"`{name}`",
                f"{'**Headline.** ' if c.get('headline') else ''}{c['label']}: {c['description']}",
                f"{c['mean']:+.2f}" if math.isfinite(c["mean"]) else "n/a",
                "n/a" if ci is None else f"{ci[0]:+.2f} to {ci[1]:+.2f}",
                "n/a" if ci is None else f"{ci[1] - ci[0]:.2f}",
                str(c["n"]),
            ]
        )
    b.append(("table", head, rows))
    b.append(
        (
            "p",
            f"{report['contrasts_method']}: for each seed the arms' top-1 values are combined, then "
            "the interval is mean +- t(0.975, n-1) x sd / sqrt(n) over seeds. Per-seed values are in "
            "`6-report/report.json`.",
        )
    )
    b.append(("img", "contrasts.png", "paired contrasts with 95% t intervals"))
    return b


def _headroom(report: dict) -> str | None:
    """Where the baseline sits against the teacher and 100%, beside the paper's gains."""
    base, teacher = report["results"].get("featkd"), report.get("teacher", {}).get("top1")
    gains = report["verdict"].get("published_gain") or {}
    if base is None or teacher is None or not gains or report["settings"]["settings"]["quick"]:
        return None
    if not (math.isfinite(base["mean"]) and math.isfinite(teacher)):
        return None  # a NaN top-1 leaves no headroom to state
    room = 100.0 - base["mean"]
    text = (
        f"The baseline reaches {base['mean']:.1f}% (mean over seeds) against the teacher's {teacher:.1f}%, "
        f"{room:.1f} points below 100%."
    )
    too_big = [
        f"{'Lift' if name.startswith('lift') else 'WideLast'} {gain:+.1f}"
        for name, gain in gains.items()
        if gain > room
    ]
    if too_big:
        text += (
            f" That is less room than the paper's gain ({', '.join(too_big)}), so a gain that large "
            "cannot appear here "
            "whatever the mechanism: what this miniature can show is whether a remedy adds anything over this "
            "baseline, and the verdict reads `false` when it rules out the paper's effect, not only when it "
            "shows the remedy hurts."
        )
    if base["mean"] > teacher + 0.5:
        text += (
            f" The pooled baseline already beats its teacher by {base['mean'] - teacher:.1f} points, so at this "
            "scale there is none of the teacher's accuracy left for a remedy to recover."
        )
    elif base["mean"] >= teacher - 0.5:
        text += (
            " The pooled baseline already does about as well as its teacher, so at this scale it leaves little "
            "of the teacher's accuracy for a remedy to recover."
        )
    return text


def section_noise(report: dict) -> list[Block]:
    """How much of each contrast's seed-to-seed spread is evaluation and how much is training."""
    split, cs = report.get("noise") or {}, report["contrasts"]
    if not split:
        return []
    n_val = report["settings"]["settings"]["val_images"]
    b: list[Block] = [("h", 2, "Where the spread comes from")]
    b.append(
        (
            "p",
            (
                "The spread of a contrast over seeds has two parts. **Evaluation noise**: each run is scored on "
                f"{n_val} validation images, so even fixed models would give another difference on another "
                "validation set of that size (computed per seed from which images each arm got right, so images "
                "both arms get wrong cancel). **Training noise**: the rest, how the trained models themselves "
                "differ from seed to seed. The interval narrows with more seeds whichever part dominates; more "
                "validation images cut only the first."
            ),
        )
    )
    head = ["Contrast", "sd over seeds", "Evaluation sd", "Training sd", "Evaluation share of variance"]
    rows = [
        [
            f"`{name}`",
            _f(x["sd"]),
            _f(x["eval_sd"]),
            _f(x["train_sd"]),
            "n/a" if x["eval_share"] is None else f"{100 * x['eval_share']:.0f}%",
        ]
        for name, x in split.items()
        if name in cs
    ]
    if not rows:
        return []
    b.append(("table", head, rows))
    return b


def section_mechanism(report: dict) -> list[Block]:
    """What the miniature supports, does not support, and cannot tell, in plain words."""
    b: list[Block] = [("h", 2, "The mechanism, in plain words")]
    mech = sorted(report["verdict"]["mechanism"], key=lambda x: READINGS.index(x["reading"]))
    items = [f"**{x['reading'].capitalize()}.** *{x['question']}*: {x['text']}." for x in mech]
    if items:
        b.append(("p", "What the miniature supports, does not support, and cannot tell:"))
        b.append(("ul", items))
    else:
        b.append(
            (
                "p",
                "No mechanism contrast has an interval here: each needs at least two seeds of every arm it "
                "compares.",
            )
        )
    m = report["models"]
    b.append(
        (
            "p",
            (
                "What it cannot tell at all: whether these effects hold at ImageNet scale with CaiT-S24 and "
                f"DeiT-Tiny, with augmentation and 300 epochs. Here the teacher is a {m['teacher']} trained for "
                "minutes on synthetic shapes, and an interval that includes 0 means no effect was detected at this "
                "budget, not that there is none."
            ),
        )
    )
    return b


def section_results(report: dict) -> list[Block]:
    res, t, m = report["results"], report["teacher"], report["models"]
    b: list[Block] = [("h", 2, "Accuracy of every arm")]
    head = ["Arm", "Student", "Top-1 % (mean +- sd)", "Per seed", "Params", "MACs", "Images/s"]
    rows = [
        [
            f"{t['label']} (1 run)",
            m["teacher"],
            _f(t["top1"]),
            _f(t["top1"]),
            human(t["params"], 2),
            human(t["macs"], 2),
            _f(t["images_per_s"], 0),
        ]
    ]
    for r in res.values():
        rows.append(
            [
                r["label"],
                m[r["arch"]],
                f"{_f(r['mean'])} +- {_f(r['std'])}",
                " / ".join(_f(v, 1) for v in r["top1"]),
                human(r["params"], 2),
                human(r["macs"], 2),
                _f(r["images_per_s"], 0),
            ]
        )
    b.append(("table", head, rows))
    params = report["data"].get("uniform_params") or {}
    b.append(
        (
            "p",
            (
                f"Top-1 of the scored model after the last epoch (the moving average of its weights where the "
                f"recipe keeps one), {report['settings']['settings']['val_images']} validation images. The uniform "
                f"control is {m['uniform']} ({human(params.get('uniform'), 2)} parameters against WideLast's "
                f"{human(params.get('widelast'), 2)}). MACs per image; images/s at batch {report['profile_batch_size']} "
                "on this machine (a busy machine measures less)."
            ),
        )
    )
    b.append(("img", "accuracy.png", "top-1 per arm and seed"))
    return b


def _expected_differences(ta: dict, ref: dict) -> str:
    ratio_here = ta["pca_p99"]["90"] / max(ta["svd_p99"]["90"], 1e-9)
    ratio_paper = ref["pca_p99"]["90"] / ref["svd_p99"]["90"]
    return (
        f"At 90% energy one shared basis needs {ratio_here:.1f}x the dimensions of each image's own basis "
        f"here, {ratio_paper:.1f}x for CaiT-S24. Differences expected at this scale: widths and token counts "
        f"are far smaller (C = {ta['channels']} vs {ref['channels']}, N = {ta['tokens']} vs {ref['tokens']}), "
        "so compare fractions d/C, never raw dimensions; per-image ranks are capped by N; a teacher trained "
        "for minutes on a 20-class synthetic task spreads its images over fewer directions than an ImageNet "
        "model, so the gap between per-image and shared dimensions is expected to be smaller. The SEP "
        "fractions come out similar for almost any model (the paper reports about 0.5 to 0.9 for every model "
        "studied), and in the full FFT order d50 sits at D/2 whenever the DC bin outweighs the Nyquist bin, "
        "so read the folded curve beside it."
    )


def section_teacher_analysis(report: dict) -> list[Block]:
    ta, ref = report["teacher_analysis"], report["reference"]
    b: list[Block] = [("h", 2, f"The teacher's features beside the paper's {ref['model']}")]
    b.append(
        (
            "p",
            (
                f"Final block, patch tokens, uncentered; {ta['images']} validation images here, 1000 ImageNet images "
                "in the paper. SVD = dimensions an image needs in its own basis; shared = in one dataset-level PCA "
                "basis; both the 99th percentile over images, as fractions of the width."
            ),
        )
    )
    head = ["Model", "C", "N"] + [f"SVD {x}%" for x in THRESHOLDS] + [f"Shared {x}%" for x in THRESHOLDS]
    rows = []
    for label, a in ((f"{ta['label']} (this demo)", ta), (f"{ref['model']} (paper)", ref)):
        rows.append(
            [label, str(a["channels"]), str(a["tokens"])]
            + [f"{a['svd_p99'][x]:.0f} ({a['svd_p99'][x] / a['channels']:.2f})" for x in THRESHOLDS]
            + [f"{a['pca_p99'][x]:.0f} ({a['pca_p99'][x] / a['channels']:.2f})" for x in THRESHOLDS]
        )
    b.append(("table", head, rows))
    head = ["Model", "D"] + [f"SEP d/D @ {a}%" for a in SEP_ALPHAS]
    rows = [
        [f"{ta['label']} (this demo), full order", str(ta["channels"])]
        + [_f(ta["sep_d_over_D"][a], 3) for a in SEP_ALPHAS],
        [f"{ta['label']} (this demo), folded", str(ta["channels"])]
        + [_f(ta["sep_folded_d_over_D"][a], 3) for a in SEP_ALPHAS],
        [f"{ref['model']} (paper), full order", str(ref["sep_D"])]
        + [_f(ref["sep_d_over_D"][a], 3) for a in SEP_ALPHAS],
    ]
    b.append(("table", head, rows))
    b.append(("img", "teacher_vs_paper.png", "miniature teacher beside CaiT-S24"))
    b.append(("p", _expected_differences(ta, ref)))
    if ta["rotation_overlap_mean"] is not None:
        b.append(
            (
                "p",
                (
                    f"Subspace rotation: two images' own subspaces (each keeping 90% of its energy, median k = "
                    f"{_f(ta['rotation_k_median'], 1)}) overlap {_f(ta['rotation_overlap_mean'], 3)} on average "
                    f"(1 = same subspace; random subspaces give {_f(ta['rotation_random_baseline'], 3)})."
                ),
            )
        )
    return b


def section_students_analysis(report: dict) -> list[Block]:
    ta = report["teacher_analysis"]
    b: list[Block] = [("h", 2, "The students' final features beside the teacher's")]
    b.append(
        (
            "p",
            "First seed of each arm, final block (Lift: after its lifting projector), same images "
            "and options as the teacher.",
        )
    )
    head = ["Model", "C", "SVD 90%", "Shared 90%", "Shared 99% / C", "SEP d/D @ 70%", "SEP d/D @ 90%"]
    rows = [
        [
            a["label"],
            str(a["channels"]),
            _f(a["svd_p99"]["90"], 1),
            _f(a["pca_p99"]["90"], 1),
            _f(a["pca_p99"]["99"] / a["channels"]),
            _f(a["sep_d_over_D"]["70"], 3),
            _f(a["sep_d_over_D"]["90"], 3),
        ]
        for a in [ta] + report["student_analysis"]
    ]
    b.append(("table", head, rows))
    return b


def section_setup(report: dict) -> list[Block]:
    s, timing = report["settings"]["settings"], report.get("timing") or {}
    stages = timing.get("stages", {})
    wall = sum(x["wall_s"] for x in stages.values())
    b: list[Block] = [("h", 2, "Setup, cost and where the numbers come from")]
    b.append(
        (
            "p",
            (
                f"Data: {report['data']['spec']}, {s['img_size']}x{s['img_size']} pixels, patch {s['patch_size']} "
                f"({(s['img_size'] // s['patch_size']) ** 2} tokens), decoded once without augmentation. Teacher: "
                f"{report['teacher']['epochs']} epochs. Students: {s['epochs']} epochs, batch {s['batch_size']}, "
                f"{_seeds_text(s)}; seed s gives every arm the same batch order and the same initial weights for the "
                "parts it shares with the narrow student. The teacher's logits and tokens on the training set are "
                "computed once and cached. Stages 1-5 took "
                f"{wall / 60:.1f} min wall on {timing.get('workers', '?')} worker(s), {timing.get('cpu_count', '?')} CPUs."
            ),
        )
    )
    head = ["Stage", "Wall (s)", "CPU of the main process (s)", "CPU of the training runs (s)"]
    rows = [
        [
            k,
            f"{v['wall_s']:.0f}",
            _f(v.get("cpu_s"), 0),
            _f(v.get("runs_cpu_s"), 0) if v.get("runs_cpu_s") else "",
        ]
        for k, v in stages.items()
    ]
    b.append(("table", head, rows))
    b.append(
        (
            "p",
            (
                "Every number is read from a stage's files: `2-teacher/` and `4-students/<arm>-seed<k>/` hold "
                "`summary.json` and `checkpoints/last.pt`; `3-teacher-analysis/` and `5-student-analysis/<arm>/` are "
                "`vitdistill analyze` results; `5-student-analysis/profile.json` is `vitdistill inspect`; "
                "`6-report/report.json` holds everything shown here."
            ),
        )
    )
    return b


def blocks(report: dict) -> list[Block]:
    """The report as blocks: ("h", level, text), ("p", text), ("ul", items), ("table", head, rows), ("img", file, alt)."""
    b: list[Block] = []
    for section in (
        section_top,
        section_verdict,
        section_noise,
        section_mechanism,
        section_results,
        section_teacher_analysis,
        section_students_analysis,
        section_setup,
    ):
        b += section(report)
    b.append(("img", "../1-data/samples.png", "sample training images with their class"))
    return b


def summary_text(report: dict) -> str:
    """The plain-text summary printed at the end of the demo."""
    lines = [f"{'arm':52s} {'top-1 % (mean +- sd)':>22s}"]
    t = report["teacher"]
    lines.append(f"{t['label']:52s} {t['top1']:22.2f}")
    for r in report["results"].values():
        lines.append(f"{r['label']:52s} {r['mean']:13.2f} +- {_f(r['std'])}")
    lines.append("")
    split = report.get("noise") or {}
    for name, c in report["contrasts"].items():
        x = split.get(name) or {}
        spread = ""
        if x.get("train_sd") is not None:
            spread = f"  sd {_f(x['sd'], 1)} = evaluation {_f(x['eval_sd'], 1)} (+) training {_f(x['train_sd'], 1)}"
        lines.append(f"{name:24s} {fmt(c)}{spread}")
    lines += ["", report["verdict"]["sentence"]]
    return "\n".join(lines)
