"""The demo's verdict and its plain-words reading, generated from the contrasts' intervals only.

Every sentence is chosen by where an interval lies (all above 0, all below 0, or straddling 0),
so a sentence cannot say more than its interval does.
"""

from __future__ import annotations

import math

from vitdistill.demo.stats import HEADLINE, holds, published_gain, rules_out_published, side

BASELINE = "the paper's baseline (narrow student, soft KD + feature KD against the channel-pooled teacher)"


def fmt(c: dict) -> str:
    """``+2.3 points (95% CI +0.8 to +3.9, 6 seeds)``."""
    if not math.isfinite(c["mean"]):
        return f"no number (a top-1 among its {c['n']} seeds is NaN)"
    if c.get("ci") is None:
        return f"{c['mean']:+.1f} points ({c['n']} seed: no interval)"
    lo, hi = c["ci"]
    return f"{c['mean']:+.1f} points (95% CI {lo:+.1f} to {hi:+.1f}, {c['n']} seeds)"


def _headline_part(name: str, c: dict | None) -> str:
    remedy = "Lift" if name.startswith("lift") else "WideLast"
    if c is None:
        return f"{remedy} is not compared (this run lacks {remedy} or the baseline, or they share no seed)"
    where = side(c)
    if where is None:
        return f"{remedy}: {fmt(c)}"
    verb = {"above": "beats it:", "below": "falls below it:", "includes": "is not separated from it:"}[where]
    gain = f"the paper's gain of {published_gain(name):+.1f}"
    if where == "includes":
        reach = f"rules out {gain}" if rules_out_published(name, c) else f"reaches {gain}"
        tail = f", an interval that includes 0 and {reach}"
    elif where == "above":
        tail = f", short of {gain}" if rules_out_published(name, c) else ""
    else:
        tail = ""
    return f"{remedy} {verb} {fmt(c)}{tail}"


def sentence(cs: dict, quick: bool) -> str:
    """One sentence that states the headline result and never goes beyond the intervals."""
    if quick:
        return (
            "Smoke run (quick settings): tiny models trained for about one epoch, so accuracies sit near chance; "
            "no verdict is drawn and these numbers are not evidence."
        )
    parts = "; ".join(_headline_part(h, cs.get(h)) for h in HEADLINE)
    verdict = holds(cs, quick)
    if verdict is True:
        return f"The paper's headline holds in this miniature: against {BASELINE}, {parts}."
    if verdict is False:
        return f"The paper's headline does not hold in this miniature: against {BASELINE}, {parts}."
    return f"This miniature does not decide the paper's headline: against {BASELINE}, {parts}."


# contrast -> what the paper's mechanism predicts, and the reading for each side of 0
MECHANISM = {
    "featkd_vs_softkd": (
        "Feature KD on the narrow student (paper: it does not help)",
        {
            "above": (
                "does not support",
                "feature KD with the pooled teacher helps even the narrow student here",
            ),
            "below": ("supports", "feature KD with the pooled teacher hurts the narrow student here"),
            "includes": ("cannot tell", "no detectable effect of feature KD on the narrow student"),
        },
    ),
    "revival_lift": (
        "Revival with Lift (paper: feature KD helps once the output is teacher-wide)",
        {
            "above": ("supports", "feature KD gains more on Lift than on the narrow student"),
            "below": ("does not support", "feature KD gains less on Lift than on the narrow student"),
            "includes": (
                "cannot tell",
                "no detectable difference in feature KD's gain between Lift and narrow",
            ),
        },
    ),
    "revival_widelast": (
        "Revival with WideLast (paper: feature KD helps once the last block is teacher-wide)",
        {
            "above": ("supports", "feature KD gains more on WideLast than on the narrow student"),
            "below": ("does not support", "feature KD gains less on WideLast than on the narrow student"),
            "includes": (
                "cannot tell",
                "no detectable difference in feature KD's gain between WideLast and narrow",
            ),
        },
    ),
    "widelast_vs_uniform": (
        "Wide end or more parameters (paper: the wide end matters)",
        {
            "above": ("supports", "WideLast beats a uniform student with the same parameter count"),
            "below": (
                "does not support",
                "a uniform student with WideLast's parameter count does better, so WideLast's gain here "
                "can come from parameters alone",
            ),
            "includes": (
                "cannot tell",
                "WideLast and the parameter-matched uniform student are not separated",
            ),
        },
    ),
    "lift_teacher_gain": (
        "The teacher's value for Lift",
        {
            "above": ("supports", "distilled Lift beats Lift trained without a teacher"),
            "below": ("does not support", "Lift trained without a teacher beats distilled Lift"),
            "includes": ("cannot tell", "distilled Lift and Lift without a teacher are not separated"),
        },
    ),
    "widelast_teacher_gain": (
        "The teacher's value for WideLast",
        {
            "above": ("supports", "distilled WideLast beats WideLast trained without a teacher"),
            "below": ("does not support", "WideLast trained without a teacher beats distilled WideLast"),
            "includes": (
                "cannot tell",
                "distilled WideLast and WideLast without a teacher are not separated",
            ),
        },
    ),
}
READINGS = ("supports", "does not support", "cannot tell")


def mechanism(cs: dict, quick: bool) -> list[dict]:
    """One plain statement per mechanism contrast: question, reading, sentence with its numbers."""
    out = []
    for name, (question, by_side) in MECHANISM.items():
        c = cs.get(name)
        where = side(c)
        if where is None:
            continue
        reading, text = by_side[where]
        if quick:
            reading, text = "cannot tell", "smoke run, not evidence"
        out.append({"contrast": name, "question": question, "reading": reading, "text": f"{text}: {fmt(c)}"})
    return out


def verdict(cs: dict, quick: bool) -> dict:
    return {
        "holds": holds(cs, quick),
        "sentence": sentence(cs, quick),
        "headline": {h: side(cs.get(h)) for h in HEADLINE},
        "rule": "holds: both headline 95% t intervals (paired over seeds) above 0; otherwise false when "
        "either lies wholly below the gain the paper publishes for its remedy on ImageNet-1K (Lift "
        f"{published_gain(HEADLINE[0]):+.2f}, WideLast {published_gain(HEADLINE[1]):+.2f} points), so that an "
        "effect of the paper's size is ruled out; null otherwise, and always for a quick run",
        "published_gain": {h: published_gain(h) for h in HEADLINE},
        "mechanism": mechanism(cs, quick),
        "evidence": not quick,
    }
