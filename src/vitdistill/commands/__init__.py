"""One module per ``vitdistill`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
