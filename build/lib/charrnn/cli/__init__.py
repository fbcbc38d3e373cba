"""The `charrnn` command: each module parses one workflow's commands and delegates to the library."""

from charrnn.cli import evaluation, generation, inspection, training  # noqa: F401 - each registers its commands
from charrnn.cli.group import main

__all__ = ["main"]
