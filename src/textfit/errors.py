"""The one exception a user's mistake raises.

Every check of user input raises `UsageError` with a single line that names the
file, row, column or flag and says how to fix it. The CLI prints that line and
exits with code 2; nothing else about it is shown (no traceback).
"""


class UsageError(Exception):
    """Bad input from the user: one line, naming what is wrong and the fix."""


class Interrupted(Exception):
    """Training stopped by SIGTERM or Ctrl-C after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
