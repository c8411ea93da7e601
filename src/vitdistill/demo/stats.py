"""Paired contrasts between the demo's arms, their t intervals, and the verdict read from them.

Seed ``s`` gives every arm the same batch order and the same initialisation of shared parts, so
each contrast is computed per seed first (a paired difference of top-1 points) and the interval
is over those per-seed differences: mean +- t(0.975, n - 1) * sd / sqrt(n), Student's t, two-sided
95%. The t quantile is computed here (closed-form t CDF for integer degrees of freedom, inverted
by bisection) so the library does not need scipy at run time; the tests check it against scipy.
"""

from __future__ import annotations

import math

# name -> (description, {arm: coefficient}); a contrast is sum(coef * top1[arm]) per seed.
CONTRASTS: dict[str, tuple[str, dict[str, int]]] = {
    "featkd_vs_softkd": ("narrow: soft + feature KD minus soft KD", {"featkd": 1, "softkd": -1}),
    "lift_vs_featkd": (
        "Lift soft + feature KD minus narrow soft + feature KD",
        {"lift_featkd": 1, "featkd": -1},
    ),
    "widelast_vs_featkd": (
        "WideLast soft + feature KD minus narrow soft + feature KD",
        {"widelast_featkd": 1, "featkd": -1},
    ),
    "revival_lift": (
        "feature KD's gain on Lift minus its gain on the narrow student",
        {"lift_featkd": 1, "lift_softkd": -1, "featkd": -1, "softkd": 1},
    ),
    "revival_widelast": (
        "feature KD's gain on WideLast minus its gain on the narrow student",
        {"widelast_featkd": 1, "widelast_softkd": -1, "featkd": -1, "softkd": 1},
    ),
    "widelast_vs_uniform": (
        "WideLast minus the parameter-matched uniform student (both soft + feature KD)",
        {"widelast_featkd": 1, "uniform_featkd": -1},
    ),
    "featkd_gain_lift": ("Lift: soft + feature KD minus soft KD", {"lift_featkd": 1, "lift_softkd": -1}),
    "featkd_gain_widelast": (
        "WideLast: soft + feature KD minus soft KD",
        {"widelast_featkd": 1, "widelast_softkd": -1},
    ),
    "softkd_vs_alone": ("narrow: soft KD minus no teacher", {"softkd": 1, "alone": -1}),
    "lift_teacher_gain": ("Lift: soft + feature KD minus no teacher", {"lift_featkd": 1, "lift_alone": -1}),
    "widelast_teacher_gain": (
        "WideLast: soft + feature KD minus no teacher",
        {"widelast_featkd": 1, "widelast_alone": -1},
    ),
    "linear_vs_pooled": (
        "narrow feature KD: linear projector minus pooled teacher",
        {"featkd_linear": 1, "featkd": -1},
    ),
}
HEADLINE = ("lift_vs_featkd", "widelast_vs_featkd")
# The recipe whose published ImageNet-1K top-1 each headline contrast's remedy is read against.
HEADLINE_REMEDY = {"lift_vs_featkd": "lift", "widelast_vs_featkd": "widelast"}
# Readable names for plots and tables, in words a reader of the paper uses.
LABELS = {
    "featkd_vs_softkd": "Feature KD on the narrow student",
    "lift_vs_featkd": "Lift vs the pooled baseline",
    "widelast_vs_featkd": "WideLast vs the pooled baseline",
    "revival_lift": "Revival of feature KD with Lift",
    "revival_widelast": "Revival of feature KD with WideLast",
    "widelast_vs_uniform": "WideLast vs the same parameters, uniform",
    "featkd_gain_lift": "Feature KD's gain on Lift",
    "featkd_gain_widelast": "Feature KD's gain on WideLast",
    "softkd_vs_alone": "Soft KD vs no teacher (narrow)",
    "lift_teacher_gain": "The teacher's value for Lift",
    "widelast_teacher_gain": "The teacher's value for WideLast",
    "linear_vs_pooled": "Linear projector vs pooled teacher",
}


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer ``df`` (closed form in theta = atan(t / sqrt(df)))."""
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/pi) (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 0.0
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        return 2.0 / math.pi * (theta + s * math.cos(theta) * total) if df > 1 else 2.0 * theta / math.pi
    term, total = 1.0, 0.0  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c2 * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided ``level`` critical value of Student's t with ``df`` degrees of freedom."""
    lo, hi = 0.0, 1.0
    while _t_abs_cdf(hi, df) < level:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_abs_cdf(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def interval(values: list[float], level: float = 0.95) -> dict:
    """``{"mean", "ci": [lo, hi] or None, "n", "sd"}`` of paired differences (t interval)."""
    n = len(values)
    if not all(math.isfinite(v) for v in values):  # a NaN top-1 gives no number, not a NaN interval
        return {"mean": math.nan, "ci": None, "n": n, "sd": None}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "ci": None, "n": n, "sd": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return {"mean": mean, "ci": [mean - half, mean + half], "n": n, "sd": sd}


def contrasts(top1: dict[str, dict[int, float]]) -> dict[str, dict]:
    """Every contrast whose arms all ran, over the seeds they share; per-seed values included."""
    out = {}
    for name, (desc, coefs) in CONTRASTS.items():
        if not all(a in top1 for a in coefs):
            continue
        seeds = sorted(set.intersection(*(set(top1[a]) for a in coefs)))
        if not seeds:
            continue
        per_seed = [sum(c * top1[a][s] for a, c in coefs.items()) for s in seeds]
        out[name] = {
            **interval(per_seed),
            "label": LABELS[name],
            "headline": name in HEADLINE,
            "description": desc,
            "seeds": seeds,
            "per_seed": per_seed,
        }
    return out


def bounds(name: str) -> tuple[float, float]:
    """The smallest and largest value a contrast can take, with every top-1 in [0, 100]."""
    coefs = CONTRASTS[name][1].values()
    return -100.0 * sum(-c for c in coefs if c < 0), 100.0 * sum(c for c in coefs if c > 0)


def published_gain(name: str) -> float:
    """The gain over the pooled feature-KD baseline that the paper publishes for a headline
    contrast's remedy (DeiT-Tiny from CaiT-S24 on ImageNet-1K, top-1 points): Lift +2.67, WideLast +3.37."""
    from vitdistill.distill.results import PUBLISHED

    top1 = {kind: value for _, value, kind in PUBLISHED if kind is not None}
    return round(top1[HEADLINE_REMEDY[name]] - top1["featkd"], 2)


def rules_out_published(name: str, c: dict | None) -> bool:
    """True when a headline interval lies wholly below the paper's gain for that remedy."""
    return c is not None and c.get("ci") is not None and c["ci"][1] < published_gain(name)


def side(c: dict | None) -> str | None:
    """``above`` / ``below`` 0 when the whole interval is, ``includes`` when it straddles 0."""
    if c is None or c.get("ci") is None:
        return None
    lo, hi = c["ci"]
    return "above" if lo > 0 else "below" if hi < 0 else "includes"


def holds(cs: dict[str, dict], quick: bool) -> bool | None:
    """The headline verdict from the two headline intervals (None always for a quick run).

    True: both lie above 0 (each remedy beats the baseline). Otherwise False when either lies
    wholly below the gain the paper publishes for its remedy (:func:`published_gain`; an interval
    below 0 is one case): the miniature rules out the paper's effect for that remedy. None
    otherwise: an interval reaches from 0 or below up to the paper's gain, too wide to tell.

    Two alternatives fixed in advance (no gain, the paper's gain) rather than 0 alone keep the
    verdict from flipping when a remedy's true difference lies near 0: such an interval may
    straddle 0 on one seed set and not on the next, but it stays below the paper's gain on both.
    """
    if quick:
        return None
    if all(side(cs.get(h)) == "above" for h in HEADLINE):
        return True
    if any(rules_out_published(h, cs.get(h)) for h in HEADLINE):
        return False
    return None
