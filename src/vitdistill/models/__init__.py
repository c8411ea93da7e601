"""Token taps and the student models (registered with timm on import).

Importing this package registers the students in ``STUDENT_MODELS`` with timm
(``deit_tiny_lift_patch16_224``, ``deit_tiny_widelast_patch16_224`` and its schedule variants,
``deit_tiny_uniform219_patch16_224``).
"""

from vitdistill.models.builders import STUDENT_MODELS, create_base_model, create_lift, create_widelast
from vitdistill.models.lift import LiftVisionTransformer, TokenProjector
from vitdistill.models.loading import as_spec, build_model, create_model, from_build_spec
from vitdistill.models.profile import (
    block_widths,
    count_macs,
    count_params,
    format_widths,
    inspect_models,
    measure_throughput,
    token_grid,
)
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
    "build_model",
    "block_widths",
    "count_macs",
    "count_params",
    "format_widths",
    "inspect_models",
    "measure_throughput",
    "token_grid",
    "create_base_model",
    "create_lift",
    "create_widelast",
    "from_build_spec",
    "as_spec",
    "create_model",
]
