"""The arms the demo compares, each a recipe in ``vitdistill/configs/demo/``.

``arch`` names the student: ``narrow`` (the plain narrow ViT), ``lift`` (narrow + kept lifting
projector to the teacher's width), ``widelast`` (last block at the teacher's width) or
``uniform`` (every block at one width chosen so the parameter count matches WideLast's).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    config: str
    uses_teacher: bool
    arch: str = "narrow"
    description: str = ""


TEACHER = Method("teacher", "Teacher (wide)", "teacher.yaml", False, "teacher", "wide ViT trained on labels")

SOFT = "soft logit KD (alpha 0.9, T 1)"
FEAT = "soft KD + 0.2 MSE on the last block's patch tokens"

METHODS: tuple[Method, ...] = (
    Method("alone", "Narrow alone", "student_alone.yaml", False, "narrow", "narrow ViT, labels only"),
    Method("softkd", "Narrow, soft KD", "softkd.yaml", True, "narrow", SOFT),
    Method(
        "featkd",
        "Narrow, soft + feature KD (pooled teacher)",
        "featkd.yaml",
        True,
        "narrow",
        FEAT + ", teacher channels average-pooled to the student's width (the paper's baseline)",
    ),
    Method(
        "featkd_linear",
        "Narrow, soft + feature KD (linear projector)",
        "featkd_linear.yaml",
        True,
        "narrow",
        FEAT + " through a trainable Linear to the teacher's width, dropped after training",
    ),
    Method("lift_softkd", "Lift, soft KD", "lift_softkd.yaml", True, "lift", SOFT + "; projector kept"),
    Method(
        "lift_featkd", "Lift, soft + feature KD", "lift_featkd.yaml", True, "lift", FEAT + " (lifted tokens)"
    ),
    Method("widelast_softkd", "WideLast, soft KD", "widelast_softkd.yaml", True, "widelast", SOFT),
    Method("widelast_featkd", "WideLast, soft + feature KD", "widelast_featkd.yaml", True, "widelast", FEAT),
    Method(
        "uniform_featkd",
        "Uniform (WideLast's parameters), soft + feature KD",
        "uniform_featkd.yaml",
        True,
        "uniform",
        FEAT + ", teacher pooled to the uniform width; parameter-matched control for WideLast",
    ),
    Method(
        "lift_alone", "Lift, no teacher", "lift_alone.yaml", False, "lift", "Lift architecture, labels only"
    ),
    Method(
        "widelast_alone",
        "WideLast, no teacher",
        "widelast_alone.yaml",
        False,
        "widelast",
        "WideLast architecture, labels only",
    ),
)

BY_KEY = {m.key: m for m in (TEACHER, *METHODS)}
# Arms run by default; ``featkd_linear`` (the other common baseline) is an extra.
DEFAULT_METHODS = tuple(m.key for m in METHODS if m.key != "featkd_linear")


def config_path(method: Method):
    """The packaged YAML recipe of a method (a Traversable usable with ``.read_text()``)."""
    from importlib.resources import files

    return files("vitdistill") / "configs" / "demo" / method.config
