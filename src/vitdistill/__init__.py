"""vitdistill: analyse and distil Vision Transformers built with timm.

Registration, in one place. ``import vitdistill`` makes the student models (Lift, WideLast,
uniform-width controls; :mod:`vitdistill.models.registry`) ``timm.create_model`` names. timm has
no plugin hook for model names, and registering needs timm and so torch, which ``vitdistill
--help`` must not load (the command line imports this package first). So: when timm is already
imported the students are registered at once; otherwise a one-shot import hook below registers
them right after timm's own module has run, whoever imports timm. Nothing else in vitdistill
touches the import system.
"""

import importlib
import importlib.util
import sys

__version__ = "0.1.0"

_SUBPACKAGES = ("analysis", "checkpoints", "cli", "commands", "data", "demo", "distill", "models", "utils")


def _register_students() -> None:
    """Import :mod:`vitdistill.models`, whose last step imports the registry. When the package is
    already in ``sys.modules`` (imported, or importing timm from inside its own import), that step
    has run or is still to come, so nothing is done here."""
    if "vitdistill.models" not in sys.modules:
        importlib.import_module("vitdistill.models")


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
