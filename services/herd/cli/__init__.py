"""The `herd` command: one click group (app.py), one module per group of commands.

Importing a command module registers its commands on the group.
"""

from herd.cli import api, housekeeper, jobs, local, metrics, policy, quality, router, workers  # noqa: F401 - registers commands
from herd.cli.app import main

__all__ = ["main"]
