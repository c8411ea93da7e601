"""Representation analysis of ViT token features (PAPER.md section 2).

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
]
