"""Per-task timeouts from the reference solutions: the rule, the per-machine cache, and a slow reference for real."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import timeouts
from benchmarks.tasks import Task
from benchmarks.timeouts import MEASURE_TIMEOUT_S, calibrated_timeouts, machine_key
from sandbox.jobs import Job
from sandbox.limits import Limits
from sandbox.verdict import Result, Status


def task(task_id: str, reference: str) -> Task:
    return Task(task_id, f"Write f() ({task_id}).", "f", ("assert f() == 1",), "generic", reference_solution=reference)


class TimedSandbox:
    """Reports each reference's runtime as the number that ends it; 'FAIL' fails, 'BOOM' is a sandbox error."""

    image = "score-sandbox:test"

    def __init__(self, limits: Limits | None = None) -> None:
        if limits is not None:
            self.limits = limits
        self.jobs: list[Job] = []

    def run_batch(self, jobs: list[Job]) -> list[Result]:
        self.jobs.extend(jobs)
        results = []
        for job in jobs:
            if "BOOM" in job.program:
                results.append(Result.sandbox_error("worker died", job_id=job.job_id, expected_tests=1))
                continue
            seconds = float(job.program.rsplit(" ", 1)[1])
            status = Status.FAILED if "FAIL" in job.program else Status.PASSED
            results.append(Result(status, [], 1, job_id=job.job_id, wall_time_s=seconds))
        return results

    def measured(self) -> list[str]:
        return [j.job_id.removesuffix("/reference") for j in self.jobs]


TASKS = [
    task("fast", "def f(): return 1  # 0.4"),
    task("slow", "def f(): return 1  # 5.9"),  # Mbpp/123's reference on a quiet machine
    task("none", ""),  # no reference: nothing to measure, the default
    task("fails", "def f(): return 2  # FAIL 7.0"),  # a failing reference says nothing about a fair runtime
    task("infra", "def f(): return 1  # BOOM 9"),
]


def test_each_task_gets_the_default_or_factor_times_its_reference_runtime_if_more() -> None:
    sb = TimedSandbox()
    assert calibrated_timeouts(sb, TASKS) == {"slow": 23.6}  # max(10, 4 x 5.9); the others keep 10 s
    assert sb.measured() == ["fast", "slow", "fails", "infra"]
    assert {j.timeout_s for j in sb.jobs} == {MEASURE_TIMEOUT_S}  # measured, not cut at the default 10 s
    # the floor is the sandbox's own limit: never lower than what a job without a timeout gets
    assert calibrated_timeouts(TimedSandbox(Limits().with_timeout(1.0)), TASKS[:2]) == {"fast": 1.6, "slow": 23.6}
    assert calibrated_timeouts(TimedSandbox(Limits().with_timeout(30.0)), TASKS[:2]) == {}


def test_the_cache_is_reused_and_measured_again_for_changed_tasks_machines_or_files(
        timeout_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = TimedSandbox()
    assert calibrated_timeouts(first, TASKS) == {"slow": 23.6}
    files = list((timeout_cache / "timeouts").iterdir())
    assert len(files) == 1 and json.loads(files[0].read_text())["machine"] == machine_key(first)

    again = TimedSandbox()
    assert calibrated_timeouts(again, TASKS[:2]) == {"slow": 23.6} and again.measured() == []  # a subset: cached
    assert calibrated_timeouts(again, TASKS) == {"slow": 23.6} and again.measured() == ["infra"]  # errors: not cached

    changed = TimedSandbox()  # a changed reference is another task for the cache
    assert calibrated_timeouts(changed, [task("slow", "def f(): return 1  # 6.5"), TASKS[0]]) == {"slow": 26.0}
    assert changed.measured() == ["slow"]

    corrupt = TimedSandbox()
    files[0].write_text('{"version": 1, "machine": ')
    assert calibrated_timeouts(corrupt, TASKS[:2]) == {"slow": 23.6} and corrupt.measured() == ["fast", "slow"]

    foreign = TimedSandbox()  # a file whose machine is not this one is not trusted
    data = json.loads(files[0].read_text())
    files[0].write_text(json.dumps({**data, "machine": {**data["machine"], "cores": 999}}))
    assert calibrated_timeouts(foreign, TASKS[:2]) == {"slow": 23.6} and foreign.measured() == ["fast", "slow"]

    other_sandbox = TimedSandbox()
    other_sandbox.image = "score-sandbox:other"
    calibrated_timeouts(other_sandbox, TASKS[:2])
    monkeypatch.setattr(timeouts.socket, "gethostname", lambda: "another-host")
    other_host = TimedSandbox()
    calibrated_timeouts(other_host, TASKS[:2])
    assert other_sandbox.measured() == other_host.measured() == ["fast", "slow"]
    assert len(list((timeout_cache / "timeouts").iterdir())) == 3


@pytest.mark.docker
@pytest.mark.slow
def test_a_reference_slower_than_the_default_is_measured_and_its_task_passes_in_docker(docker_sandbox) -> None:
    """Mbpp/123's case past the edge: a correct program that needs 10.5 s times out at the flat 10 s."""
    slow = task("slow", "import time\n\ndef f():\n    time.sleep(10.5)\n    return 1\n")
    calibrated = calibrated_timeouts(docker_sandbox, [slow])
    assert calibrated["slow"] >= 42.0  # measured under MEASURE_TIMEOUT_S, not cut at 10 s
    flat, per_task = docker_sandbox.run_batch([slow.to_job(slow.reference_solution),
                                               slow.to_job(slow.reference_solution, calibrated["slow"])])
    assert (flat.status, per_task.status) == (Status.TIMEOUT, Status.PASSED)
