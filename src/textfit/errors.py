"""The one exception a user's mistake raises.

Every check of user input raises `UsageError` with a single line that names the
file, row, column or flag and says how to fix it. The CLI prints that line and
exits with code 2; nothing else about it is shown (no traceback).
"""


class UsageError(Exception):
    """Bad input from the user: one line, naming what is wrong and the fix."""


def first_line(error: BaseException) -> str:
    """A library's exception as one line for a UsageError: its message's first line, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class Interrupted(Exception):
    """Training stopped by SIGTERM or Ctrl-C after saving a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
