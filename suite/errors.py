"""User-facing errors: one line, exit code 2, never a traceback."""


class UserError(Exception):
    """Bad input from the user (unknown name, mitigation that cannot apply, bad value)."""

    exit_code = 2
