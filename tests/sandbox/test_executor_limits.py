"""Resource limits in sandbox/executor.py (time, CPU, memory, output) and the verdicts of programs that crash."""
from __future__ import annotations

import time

import pytest

from sandbox.limits import Limits
from sandbox.verdict import Status
from tests.sandbox.conftest import FAST, GOOD_ADD, SHORT, assert_still_healthy, mbpp


@pytest.mark.parametrize("body", ["while True:\n    pass\n", "import time\ntime.sleep(30)\n"])
def test_busy_loop_and_sleep_time_out(client, body):
    started = time.monotonic()
    result = client.grade(mbpp(body + GOOD_ADD), SHORT)
    assert result.status is Status.TIMEOUT and result.reward == 0.0, result
    assert time.monotonic() - started < 4, "the timeout was not enforced promptly"
    assert_still_healthy(client)


def test_cpu_limit_inside_a_call_is_a_timeout(client):
    result = client.grade(mbpp("def add(a, b):\n    while True:\n        pass\n"), Limits(timeout_s=5.0, cpu_s=1))
    assert result.status is Status.TIMEOUT, result


@pytest.mark.parametrize("body", ["x = bytearray(2 ** 31)\n", "x = [0] * (2 ** 30)\n"])
def test_memory_hog_is_memory_exceeded(client, body):
    result = client.grade(mbpp(body + GOOD_ADD), SHORT)
    assert result.status is Status.MEMORY_EXCEEDED and result.reward == 0.0, result
    assert_still_healthy(client)


def test_sigkill_to_its_own_group_is_a_runtime_error_not_memory(client):
    """Only the cgroup's oom_kill counter makes a SIGKILL an out-of-memory verdict."""
    result = client.grade(mbpp("import os, signal\nos.killpg(os.getpgrp(), signal.SIGKILL)\n" + GOOD_ADD))
    assert result.status is Status.RUNTIME_ERROR and "killed by signal 9 (SIGKILL)" in result.error, result
    assert_still_healthy(client)


def test_output_is_kept_up_to_a_cap_and_counted_but_never_fails_a_program(client):
    result = client.grade(mbpp("print('x' * (10 * 1024 * 1024))\n" + GOOD_ADD))
    assert result.status is Status.PASSED and result.output_bytes == 10 * 1024 * 1024 + 1, result
    assert result.stdout == "x" * FAST.keep_output_bytes
    result = client.grade(mbpp("print('y' * (1024 * 1024))\n" + GOOD_ADD))
    assert result.status is Status.PASSED and result.stdout == "y" * FAST.keep_output_bytes, result.status
    result = client.grade(mbpp("def add(a, b):\n    print('z' * 1000)\n    return a + b\n"))
    assert result.status is Status.PASSED and result.stdout.startswith("z" * 1000)


@pytest.mark.parametrize("program, status, error", [
    ("def add(a, b)\n    return a + b\n", Status.SYNTAX_ERROR, "SyntaxError: expected ':' (line 1)"),
    ("raise KeyError('boom')\n" + GOOD_ADD, Status.RUNTIME_ERROR, "KeyError: 'boom'"),
    ("name = input()\n" + GOOD_ADD, Status.RUNTIME_ERROR, "EOFError: EOF when reading a line"),
])
def test_program_errors(client, program, status, error):
    result = client.grade(mbpp(program))
    assert result.status is status and result.error == error and result.tests == [], result
