"""One error type for every problem a user can fix (bad file, bad option, bad zoo).

The CLI prints these as one line on stderr and exits with code 2; the dashboard shows
them as an inline error.  Anything else that escapes is a bug.
"""


class TatrError(ValueError):
    """A problem with the user's input, stated with what is wrong and how to fix it."""


class CheckpointError(TatrError):
    """A checkpoint file cannot be read, or its contents do not fit the other models."""
