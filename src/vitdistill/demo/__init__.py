"""``vitdistill demo``: the paper's study in miniature, as a recipe over the library's own code.

>>> from vitdistill.demo import run_demo
>>> report = run_demo("vitdistill-demo", quick=True)   # report.md / report.html in the folder
"""

from vitdistill.demo.methods import METHODS, TEACHER, Method
from vitdistill.demo.settings import STAGE_DIRS, DemoSettings
from vitdistill.demo.study import Study, run_demo

__all__ = ["METHODS", "STAGE_DIRS", "TEACHER", "DemoSettings", "Method", "Study", "run_demo"]
