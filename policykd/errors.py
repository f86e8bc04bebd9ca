"""The one exception type for mistakes a user can make (bad path, wrong env, bad number)."""


class PolicyKDError(Exception):
    """Raised for user errors. The message says what was wrong and what to do; the CLI prints it
    on one line and exits non-zero without a traceback."""
