"""Representation analysis of ViT token features (arXiv 2511.15572, analysis).

>>> from vitdistill.analysis import analyze, compare
>>> summary = analyze("deit_tiny_patch16_224", "synthetic:shapes", out="runs/analysis/deit_tiny", images=200)
>>> compare(["runs/analysis/teacher", "runs/analysis/student"], out="runs/compare")

The streaming metrics (:class:`PerImageSVD`, :class:`SecondMoment`, :class:`CapturedEnergy`,
:class:`SEP`, :class:`SubspaceRotation`) can also be fed any (B, N, C) tensors directly.
"""

# Names are imported on first use, so that the settings (``vitdistill.analysis.options``) load
# without torch, as the command-line parser needs.
_WHERE = {
    "SEP": "sep",
    "AnalysisOptions": "options",
    "CapturedEnergy": "pca",
    "PerImageSVD": "spectra",
    "SecondMoment": "pca",
    "SubspaceRotation": "rotation",
    "analyze": "runner",
    "compare": "compare",
    "load_features": "report",
    "merge_states": "stats",
}

__all__ = [
    "SEP",
    "AnalysisOptions",
    "CapturedEnergy",
    "PerImageSVD",
    "SecondMoment",
    "SubspaceRotation",
    "analyze",
    "compare",
    "load_features",
    "merge_states",
    "reference_table",
]


def reference_table(name: str = "svd_rank_table.md") -> str:
    """Text of a published reference table shipped with the package (see reference/README.md)."""
    from importlib.resources import files

    from vitdistill.errors import UserError

    root = files("vitdistill") / "reference"
    path = root / name
    if not path.is_file():
        names = sorted(p.name for p in root.iterdir() if p.name.endswith((".md", ".csv")))
        raise UserError(f"no reference table {name!r}; available: {', '.join(names)}")
    return path.read_text()


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
