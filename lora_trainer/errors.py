"""The one way bad input is reported: ``UserError(message, hint)``.

The CLI prints ``message`` and ``hint`` on one line and exits 2; the API answers 4xx JSON; the tab shows
them beside the step. Anything that is not a UserError is a bug or an environment failure: the CLI exits 1
and writes the traceback to the log.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix: says what is wrong and what to do about it."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class Cancelled(Exception):
    """Raised inside a job when its cancel token was set; the job saves what it has and stops."""


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the run stops and no file with non-finite weights is written."""
