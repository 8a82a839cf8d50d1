"""The one error type for mistakes a user can make (bad spec, bad table, impossible fit).

The CLI prints its message and exits 2 without a traceback; anything else is a bug.
"""


class CapscaleError(ValueError):
    """A user-facing error: the message names the bad input and what would be valid."""
