"""Models: the one way in (:func:`create_model`), the students, token taps and profiling.

Importing this package registers the students in ``STUDENT_MODELS`` with timm
(``deit_tiny_lift_patch16_224``, ``deit_tiny_widelast_patch16_224`` and its schedule variants,
``deit_tiny_uniform219_patch16_224``, and ``vitdistill_lift`` / ``vitdistill_widelast`` for a
remedy on any base); :mod:`vitdistill.models.registry` is where that happens.
"""

from vitdistill.models.builders import create_lift, create_widelast
from vitdistill.models.lift import LiftVisionTransformer, TokenProjector
from vitdistill.models.loading import as_spec, create_model, spec_label, timm_architecture
from vitdistill.models.profile import (
    block_widths,
    count_macs,
    count_params,
    format_widths,
    inspect_models,
    measure_throughput,
    token_grid,
)
from vitdistill.models.registry import STUDENT_MODELS
from vitdistill.models.taps import TokenTaps, check_tappable, num_tap_layers, resolve_layers, token_features
from vitdistill.models.widelast import SCHEDULES, WideEntryBlock, WideLastVisionTransformer, widelast_tail

__all__ = [
    "STUDENT_MODELS",
    "TokenTaps",
    "check_tappable",
    "num_tap_layers",
    "resolve_layers",
    "token_features",
    "LiftVisionTransformer",
    "TokenProjector",
    "WideEntryBlock",
    "WideLastVisionTransformer",
    "SCHEDULES",
    "widelast_tail",
    "block_widths",
    "count_macs",
    "count_params",
    "format_widths",
    "inspect_models",
    "measure_throughput",
    "token_grid",
    "create_lift",
    "create_widelast",
    "as_spec",
    "create_model",
    "spec_label",
    "timm_architecture",
]
