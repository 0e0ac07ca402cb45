"""Shared fixtures: a Docker sandbox (fails under CI=..., skips elsewhere, when unavailable) and a local one."""
from __future__ import annotations

import os
from typing import Iterator

import pytest

from sandbox import Sandbox, SandboxError


@pytest.fixture(scope="session")
def docker_sandbox() -> Iterator[Sandbox]:
    """Sandbox(backend="docker", workers=2) for the whole session; Docker tests must not silently skip in CI."""
    try:
        sb = Sandbox(backend="docker", workers=2)
    except SandboxError as exc:
        reason = f"Docker sandbox unavailable: {exc}" + (f" (hint: {exc.hint})" if exc.hint else "")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sb:
        yield sb


@pytest.fixture(scope="session")
def local_sandbox() -> Iterator[Sandbox]:
    """Sandbox(backend="local", workers=2): rlimits only, no isolation (see sandbox/__init__.py)."""
    with Sandbox(backend="local", workers=2) as sb:
        yield sb
