"""vitdistill: analyse and distil Vision Transformers built with timm.

Importing the package registers its student models (Lift, WideLast, uniform-width controls)
with timm, so ``timm.create_model("deit_tiny_lift_patch16_224")`` works after ``import vitdistill``.
"""

__version__ = "0.1.0"

from vitdistill import models  # noqa: E402,F401  (registers models with timm)
