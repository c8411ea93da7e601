"""Representation analysis of ViT token features (arXiv 2511.15572, analysis).

>>> from vitdistill.analysis import analyze, compare
>>> summary = analyze("deit_tiny_patch16_224", "synthetic:shapes", out="runs/analysis/deit_tiny", images=200)
>>> compare(["runs/analysis/teacher", "runs/analysis/student"], out="runs/compare")

The streaming metrics (:class:`PerImageSVD`, :class:`SecondMoment`, :class:`CapturedEnergy`,
:class:`SEP`, :class:`SubspaceRotation`) can also be fed any (B, N, C) tensors directly.
"""

from vitdistill.analysis.compare import compare
from vitdistill.analysis.pca import CapturedEnergy, SecondMoment
from vitdistill.analysis.report import load_features
from vitdistill.analysis.rotation import SubspaceRotation
from vitdistill.analysis.runner import AnalysisOptions, analyze
from vitdistill.analysis.sep import SEP
from vitdistill.analysis.spectra import PerImageSVD
from vitdistill.analysis.stats import merge_states

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
