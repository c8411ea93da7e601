"""``vitdistill demo``: the paper's study in miniature, as a recipe over the library's own code.

>>> from vitdistill.demo import run_demo
>>> report = run_demo("vitdistill-demo", quick=True)   # report.md / report.html in the folder

The study (and with it torch) loads on first use of :func:`run_demo` or :class:`Study`, so the
command line can read the demo's settings without importing torch.
"""

from vitdistill.demo.methods import METHODS, TEACHER, Method
from vitdistill.demo.settings import STAGE_DIRS, DemoSettings

__all__ = ["METHODS", "STAGE_DIRS", "TEACHER", "DemoSettings", "Method", "Study", "run_demo"]


def __getattr__(name: str):
    if name in ("Study", "run_demo"):
        from vitdistill.demo import study

        return getattr(study, name)
    raise AttributeError(f"module 'vitdistill.demo' has no attribute {name!r}")
