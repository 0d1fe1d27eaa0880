"""The ``cinestream`` command line: the group and entry point (:mod:`cinestream.cli.app`) and its
commands, one module per kind (the local stack, the pipeline, serving)."""

from cinestream.cli import pipeline_commands, serve_commands, stack_commands  # noqa: F401
from cinestream.cli.app import cli, main

__all__ = ["cli", "main"]
