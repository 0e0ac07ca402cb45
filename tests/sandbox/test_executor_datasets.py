"""Whole datasets through sandbox/executor.py (slow): every HumanEval canonical solution and MBPP reference passes."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sandbox.jobs import Job
from sandbox.limits import Limits
from sandbox.verdict import Status
from tests.sandbox.conftest import Client, humaneval_job

MBPP_PATH = Path(os.environ["SCORE_CODE_MBPP"])  # the original mbpp.jsonl (set by tests/conftest.py)
SANITIZED_PATH = MBPP_PATH.with_name("sanitized-mbpp.json")
# MBPP references whose verdict depends on the machine, with the reason; each is still graded and must end in one
# of the listed ways.
MBPP_KNOWN_BROKEN = {
    123: ({Status.TIMEOUT, Status.PASSED}, "amicable_numbers_sum(9999) needs 7 s of CPU on an idle core and over "
          "20 s on a loaded one: the 10 s default CPU limit passes it or not"),
}


@pytest.mark.slow
def test_all_humaneval_canonical_solutions_pass(client, problems):
    failures = {}
    started = time.perf_counter()
    overheads = []
    for task_id, problem in problems.items():
        t0 = time.perf_counter()
        result = client.grade(humaneval_job(problem), Limits())
        overheads.append(time.perf_counter() - t0 - result.wall_time_s)
        if result.status is not Status.PASSED:
            failures[task_id] = f"{result.status.value}: {result.first_failure}"
    overheads.sort()
    print(f"\n{len(problems)} HumanEval programs in {time.perf_counter() - started:.1f} s; overhead beyond the "
          f"program's run p50 {overheads[len(overheads) // 2] * 1000:.1f} ms, p90 "
          f"{overheads[int(len(overheads) * 0.9)] * 1000:.1f} ms")
    assert failures == {}


@pytest.mark.slow
def test_all_mbpp_reference_solutions_pass():
    if not MBPP_PATH.is_file():
        message = f"{MBPP_PATH} is missing: set SCORE_CODE_MBPP to the original mbpp.jsonl"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    rows = [json.loads(line) for line in MBPP_PATH.read_text().splitlines()]
    assert len(rows) == 974
    client = Client()
    failures, broken = {}, {}
    started = time.perf_counter()
    for row in rows:
        for asserts in (row["test_list"], row["challenge_test_list"]):
            if not asserts:
                continue
            result = client.grade(Job.mbpp(row["code"], asserts, row["test_setup_code"]), Limits())
            if row["task_id"] in MBPP_KNOWN_BROKEN:
                broken[row["task_id"]] = result.status
            elif result.status is not Status.PASSED:
                failures[row["task_id"]] = f"{result.status.value}: {result.first_failure}"
    print(f"\n{len(rows)} MBPP programs in {time.perf_counter() - started:.1f} s")
    assert client.close() == 0
    assert failures == {}
    assert set(broken) == set(MBPP_KNOWN_BROKEN)
    assert all(status in MBPP_KNOWN_BROKEN[task_id][0] for task_id, status in broken.items()), broken


@pytest.mark.slow
def test_all_sanitized_mbpp_reference_solutions_pass():
    """Including the tests that truth-test a returned object (`assert re.match(...)`: tasks 737, 787, 794)."""
    if not SANITIZED_PATH.is_file():
        message = f"{SANITIZED_PATH} is missing: it lives beside mbpp.jsonl in shared/data"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    rows = json.loads(SANITIZED_PATH.read_text())
    assert len(rows) == 427
    client = Client()
    failures, broken = {}, {}
    for row in rows:
        result = client.grade(Job.mbpp(row["code"], row["test_list"], "\n".join(row["test_imports"])), Limits())
        if row["task_id"] in MBPP_KNOWN_BROKEN:
            broken[row["task_id"]] = result.status
        elif result.status is not Status.PASSED:
            failures[row["task_id"]] = f"{result.status.value}: {result.first_failure}"
    assert client.close() == 0
    assert failures == {}
    assert all(status in MBPP_KNOWN_BROKEN[task_id][0] for task_id, status in broken.items()), broken
