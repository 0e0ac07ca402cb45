"""How every score-code subcommand reports a failure: `error: <what>` and `hint: <next step>` on stderr."""
from __future__ import annotations

import sys


def fail(message: str, hint: str = "") -> int:
    """Print the error (and the command or flag that fixes it) and return the CLI's exit code for failures."""
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return 2
