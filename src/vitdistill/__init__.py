"""vitdistill: analyse and distil Vision Transformers built with timm.

Importing the package registers its student models (Lift, WideLast, uniform-width controls)
with timm, so ``timm.create_model("deit_tiny_lift_patch16_224")`` works after ``import vitdistill``.
Registration needs timm (and so torch): when timm is already loaded it happens at once, otherwise
right after timm is first imported. ``import vitdistill`` alone therefore stays cheap, which keeps
``vitdistill --help`` from loading torch.
"""

import importlib
import importlib.util
import sys

__version__ = "0.1.0"

_SUBPACKAGES = ("analysis", "checkpoints", "cli", "commands", "data", "demo", "distill", "models", "utils")


def _register_students() -> None:
    importlib.import_module("vitdistill.models")  # its builders are decorated with timm's register_model


class _RegisterAfterTimm:
    """Meta path finder for the top-level ``timm`` package: run its module, then register the students."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from finding this hook
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            run_timm = spec.loader.exec_module

            def exec_module(module):
                run_timm(module)
                _register_students()

            spec.loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    _register_students()
elif not any(isinstance(f, _RegisterAfterTimm) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTimm())


def __getattr__(name: str):
    """``vitdistill.models`` and the other subpackages, imported on first use."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"vitdistill.{name}")
    raise AttributeError(f"module 'vitdistill' has no attribute {name!r}")
