"""Typed errors of the sandbox library. A failing *program* is never an exception: it is a Result."""
from __future__ import annotations


class SandboxError(Exception):
    """The sandbox infrastructure failed. `hint` is the next command a user should run, if there is one."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class SandboxUnavailable(SandboxError):
    """The requested backend cannot run here (no docker CLI, engine down, image missing or stale)."""


class ImageBuildError(SandboxError):
    """`sandbox build-image` failed; the message names the step and carries the tool's own error output."""
