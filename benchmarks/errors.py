"""The one error base of benchmarks and score_code: the CLI prints `error: <message>` and `hint: <hint>` for it.

It lives in the lowest layer that raises it (benchmarks), so that score_code's errors and the harness's share it;
the sandbox keeps its own `SandboxError` (same shape: message + hint), since it imports nothing of the project.
"""
from __future__ import annotations


class ScoreCodeError(Exception):
    """A user-facing failure. `hint` is the next step (a flag, a command); subclasses may set a default."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint
