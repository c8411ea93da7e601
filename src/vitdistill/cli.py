"""The ``vitdistill`` command line: one entry point, one module per subcommand.

Each subcommand lives in ``vitdistill.commands.<name>`` and provides ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their command runs, so
``vitdistill --help`` stays fast and a broken optional dependency cannot take the others down.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from vitdistill import __version__
from vitdistill.commands.flags import flags_of, retell, unknown_arguments
from vitdistill.errors import UserError, exhausted

COMMANDS: dict[str, str] = {
    "analyze": "per-image SVD ranks, shared-basis PCA, subspace rotation and SEP of a model's token features",
    "compare": "put several `analyze` results side by side (one table, overlay plots)",
    "train": "train or distil a student from a YAML recipe (single process or torchrun)",
    "eval": "top-1/top-5 of a run or a model on a data set",
    "export": "write a trained run as model.safetensors + config.json loadable by timm",
    "inspect": "parameters, MACs, token grid, widths and throughput of models",
    "results": "the paper's accuracy table (md, csv, tex) from finished runs, seeds grouped by recipe",
    "demo": "the whole study in miniature on a CPU, ending in report.md / report.html",
}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line on stderr and exit status 2, like every other mistake."""

    def error(self, message: str):
        if message.startswith("argument ") and "expected one argument" in message:
            message += (
                " (a value that starts with '-' is written --option=VALUE, e.g. --sep-thresholds=-10,50)"
            )
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vitdistill",
        description="Analyse and distil Vision Transformers (timm models).",
    )
    parser.add_argument("--version", action="version", version=f"vitdistill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _command_module(name).add_arguments(p)
        p.set_defaults(flags=flags_of(p))  # keyword -> flag, to retell library messages
    return parser


def _command_module(name: str):
    return importlib.import_module(f"vitdistill.commands.{name}")


def main(argv: list[str] | None = None) -> int:
    if hasattr(signal, "SIGXFSZ"):  # over a file-size limit: an error to report, not a silent death
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        module = _command_module(args.command) if args.command else None
        set_keys = module.set_keys() if hasattr(module, "set_keys") else {}
        not_here = getattr(module, "NOT_HERE", None)
        parser.error(unknown_arguments(extra, getattr(args, "flags", {}), set_keys, not_here))
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_command_module(args.command).run(args) or 0)
    except UserError as e:
        print(f"vitdistill {args.command}: error: {retell(str(e), e.settings, args.flags)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"vitdistill {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a full disk is the user's to fix, wherever the write was
        why = exhausted(e)
        if why is None:
            raise
        print(f"vitdistill {args.command}: error: {why}", file=sys.stderr)
        return UserError.exit_code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
