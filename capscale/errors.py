"""The one error type for mistakes a user can make (bad spec, bad table, impossible fit).

The CLI prints its message and exits 2 without a traceback; anything else is a bug.
"""

import contextvars


class CapscaleError(ValueError):
    """A user-facing error: the message names the bad input and what would be valid."""


# How a hint names an option: the library's keyword (``fix_L=1``) or, while the CLI runs a
# command, its flag (``--fix-L 1``). The CLI switches it; messages call :func:`option`.
SPELLING = contextvars.ContextVar("capscale_option_spelling", default="python")
FLAGS = {"capacity_groups": "--capacity-groups", "fix_L": "--fix-L", "key_columns": "--eff-key",
         "split_composed": "--split-composed", "curve": "--curve", "law": "--law",
         "where": "--where", "pool_formats": "--pool-formats", "format": "--format",
         "gmse": "--gmse", "kind": "--kind", "fix": "--fix"}


def option(name: str, value=None) -> str:
    """An option as the user would type it here: ``capacity_groups='single'`` in Python,
    ``--capacity-groups single`` on the command line."""
    if SPELLING.get() == "cli" and name in FLAGS:
        if value is True:
            return FLAGS[name]
        text = str(value)
        if any(c in text for c in " '\"()<>|&;"):
            text = "'" + text.replace("'", "'\\''") + "'" if "'" in text else f'"{text}"'
        return FLAGS[name] if value is None else f"{FLAGS[name]} {text}"
    if value is None or value is True:
        return f"{name}=True" if value is True else name
    return f"{name}={value!r}"
