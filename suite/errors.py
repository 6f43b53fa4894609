"""User-facing errors: one line, exit code 2, never a traceback."""

import difflib
import re

# "unknown setting 'task.dpeth'; valid settings of task: a, b" and "unknown mitigation 'reul'; valid mitigations: a, b"
_UNKNOWN = re.compile(r"^unknown \w+ '([^']*)'; valid [\w ]+?: (.+)$")


class UserError(Exception):
    """Bad input from the user (unknown name, mitigation that cannot apply, bad value)."""

    exit_code = 2


def did_you_mean(message: str) -> str:
    """``message`` with "(did you mean 'x'?)" before its list of valid names, where one of them is close to
    the unknown name (a misspelt key or value); else ``message`` unchanged."""
    match = _UNKNOWN.match(message)
    if match is None:
        return message
    name, valid = match.group(1), [v.strip() for v in match.group(2).split(",")]
    leaf = name.rpartition(".")[2]
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.6)
    if not close or close[0] == leaf:
        return message
    suggestion = name[: len(name) - len(leaf)] + close[0]
    head, sep, tail = message.partition("; ")
    return f"{head} (did you mean '{suggestion}'?){sep}{tail}"
