"""Shared fixtures: a Docker sandbox (fails under CI=..., skips elsewhere, when unavailable) and a local one.

The MBPP data is ../shared/data/mbpp.jsonl beside the repository (or $SCORE_CODE_MBPP). Tests that need it skip on
a laptop without it, so under CI its absence stops the session before any test runs, instead of skipping them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from sandbox import Sandbox, SandboxError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may come from a hub at test time
os.environ.setdefault("SCORE_CODE_MBPP",
                      str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mbpp.jsonl"))


def pytest_sessionstart(session: pytest.Session) -> None:
    mbpp = Path(os.environ["SCORE_CODE_MBPP"])
    if os.environ.get("CI") and not mbpp.is_file():
        raise pytest.UsageError(f"{mbpp} is missing: CI needs shared/data beside the repository (or $SCORE_CODE_MBPP)")


@pytest.fixture(autouse=True)
def timeout_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's calibrated-timeout cache (benchmarks.timeouts) in a directory of its own, never the user's."""
    import benchmarks.timeouts

    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(benchmarks.timeouts, "cache_root", lambda: root)
    return root


def docker_unavailable(exc: SandboxError) -> NoReturn:
    """Docker or the sandbox image is missing: a failure under CI (never a silent skip), a skip elsewhere."""
    reason = f"Docker sandbox unavailable: {exc}" + (f" (hint: {exc.hint})" if exc.hint else "")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_sandbox() -> Iterator[Sandbox]:
    """Sandbox(backend="docker", workers=2) for the whole session; Docker tests must not silently skip in CI."""
    try:
        sb = Sandbox(backend="docker", workers=2)
    except SandboxError as exc:
        docker_unavailable(exc)
    with sb:
        yield sb


@pytest.fixture(scope="session")
def local_sandbox() -> Iterator[Sandbox]:
    """Sandbox(backend="local", workers=2): rlimits only, no isolation (see sandbox/__init__.py)."""
    with Sandbox(backend="local", workers=2) as sb:
        yield sb


@pytest.fixture
def engine_without_socket_mounts(docker_sandbox, monkeypatch) -> None:
    """Docker as seen from docker-in-docker or another host: the bind source of the protocol socket is not there."""
    from sandbox import docker_backend

    real_argv = docker_backend.run_argv
    monkeypatch.setattr(docker_backend, "run_argv",
                        lambda *a, channel="": real_argv(*a, channel=channel and "/nonexistent/score-sandbox.sock"))


# --- helpers shared by the grading tests (tests/sandbox/test_cli.py, tests/benchmarks/test_grade.py) ------------
ADD_OK = "def add(a, b):\n    return a + b\n"
ADD_BAD = "def add(a, b):\n    return a - b\n"
NEG_OK = "def neg(x):\n    return -x\n"


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    """A JSONL file of these lines: dicts as JSON, str and bytes as they are (to plant malformed lines)."""
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
