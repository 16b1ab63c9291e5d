"""The `textfit` command: the parser (one record per command) and the commands, plain functions."""

from textfit.cli.parser import main

__all__ = ["main"]
