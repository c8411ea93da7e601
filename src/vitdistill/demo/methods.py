"""The methods the demo compares, each a recipe in ``vitdistill/configs/demo/``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    config: str
    uses_teacher: bool
    remedy: str = "none"
    description: str = ""


TEACHER = Method("teacher", "Teacher (wide)", "teacher.yaml", False, description="wide ViT trained on labels")

METHODS: tuple[Method, ...] = (
    Method("alone", "Student alone", "student_alone.yaml", False, description="narrow ViT, labels only"),
    Method("softkd", "Soft KD", "softkd.yaml", True, description="soft logit KD (alpha 0.9, T 1)"),
    Method(
        "featkd",
        "Feature KD, discarded projector",
        "featkd.yaml",
        True,
        description="soft KD + MSE on last-block tokens through a projector dropped after training",
    ),
    Method("lift", "Lift", "lift.yaml", True, "lift", "soft KD + MSE on the lifted tokens; projector kept"),
    Method(
        "widelast",
        "WideLast",
        "widelast.yaml",
        True,
        "widelast",
        "soft KD + MSE; last block at teacher width",
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


def config_path(method: Method):
    """The packaged YAML recipe of a method (a Traversable usable with ``.read_text()``)."""
    from importlib.resources import files

    return files("vitdistill") / "configs" / "demo" / method.config
