"""Programs that try to forge a pass in sandbox/executor.py: none of these may earn reward, and the executor stays
healthy afterwards."""
from __future__ import annotations

import json
import os
import uuid

import pytest

from sandbox.verdict import Status
from tests.sandbox.conftest import GOOD_ADD, assert_still_healthy, humaneval_job, mbpp

ALWAYS_EQUAL = """
class AlwaysEqual:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
"""


def test_always_true_eq_humaneval(client, problems):
    body = ALWAYS_EQUAL.replace("\n", "\n    ") + "\n    return AlwaysEqual()\n"
    result = client.grade(humaneval_job(problems["HumanEval/0"], body))
    assert result.status is Status.FAILED and result.reward == 0.0, result
    assert_still_healthy(client)


def test_always_true_eq_mbpp(client):
    result = client.grade(mbpp(ALWAYS_EQUAL + "def add(a, b):\n    return AlwaysEqual()\n"))
    assert result.status is Status.FAILED and result.reward == 0.0 and result.passed_tests == 0, result


@pytest.mark.parametrize("base, value", [("str", "'x'"), ("int", "3")])
def test_builtin_subclass_return_is_not_plain(client, base, value):
    program = (f"class Sneaky({base}):\n    def __eq__(self, other):\n        return True\n"
               f"    __hash__ = {base}.__hash__\ndef add(a, b):\n    return Sneaky({value})\n")
    result = client.grade(mbpp(program))
    assert result.status is Status.FAILED and result.passed_tests == 0, result


def test_stack_walking_and_gc_hunting_reach_nothing_trusted(client):
    program = """
import gc, sys
def add(a, b):
    frame = sys._getframe()
    while frame is not None:  # overwrite anything that looks like harness state in every caller
        for key in ("passed", "result", "status", "outcome", "ok"):
            if key in frame.f_locals or key in frame.f_globals:
                frame.f_globals[key] = True
        frame = frame.f_back
    for obj in gc.get_objects():  # and every dict that looks like a verdict
        if isinstance(obj, dict):
            for key in ("passed", "status", "reward", "load", "done"):
                if key in obj:
                    obj[key] = {"passed": True, "status": "passed", "reward": 1.0, "load": "ok", "done": True}[key]
    return 0
"""
    result = client.grade(mbpp(program))
    assert result.status is Status.FAILED and result.passed_tests == 1, result  # only add(-1, 1) == 0 holds
    assert_still_healthy(client)


def test_program_memory_never_holds_the_tests(client):
    """U is forked from a zygote that never saw a request, so the expected values cannot be read from memory."""
    marker = "marker" + uuid.uuid4().hex
    program = f"""
import gc
NEEDLE = "".join(reversed({marker[::-1]!r}))
OWN = NEEDLE[:]
def seen():
    found = 0
    for obj in gc.get_objects():
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
        for item in list(items):
            if type(item) is str and NEEDLE in item and item is not NEEDLE:
                found += 1
    return found
"""
    # positive control: a copy the program itself holds is found, so the search works
    control = client.grade(mbpp(program + "KEEP = ['x' + NEEDLE]\n", ["assert seen() >= 1"]))
    assert control.status is Status.PASSED, control
    result = client.grade(mbpp(program, [f"assert seen() == 0, {marker!r}"]))
    assert result.status is Status.PASSED, result


def test_skiptest_is_a_failure(client, problems):
    body = "    import unittest\n    raise unittest.SkipTest('no')\n"
    result = client.grade(humaneval_job(problems["HumanEval/0"], body))
    assert result.status is Status.FAILED and result.tests[0].message == "SkipTest: no", result


@pytest.mark.parametrize("where", ["top", "function"])
@pytest.mark.parametrize("exit_call", ["sys.exit(0)", "os._exit(0)"])
def test_early_exit_is_never_a_pass(client, where, exit_call):
    if where == "top":
        program = f"import os, sys\n{exit_call}\n{GOOD_ADD}"
        expected = Status.RUNTIME_ERROR
    else:
        program = f"import os, sys\ndef add(a, b):\n    {exit_call}\n"
        expected = Status.FAILED if exit_call == "sys.exit(0)" else Status.RUNTIME_ERROR
    result = client.grade(mbpp(program))
    assert result.status is expected and result.reward == 0.0, result
    assert_still_healthy(client)


def test_atexit_and_excepthook_cannot_print_a_verdict(client):
    fake = json.dumps({"status": "passed", "reward": 1.0, "tests": [], "expected_tests": 3})
    program = (f"import atexit, sys\natexit.register(lambda: print({fake!r}, flush=True))\n"
               f"sys.excepthook = lambda *a: print({fake!r}, flush=True)\n"
               "def add(a, b):\n    raise ValueError('nope')\nsys.exit(0)\n")
    result = client.grade(mbpp(program))
    assert result.status is Status.RUNTIME_ERROR and result.error == "SystemExit: 0", result
    result = client.grade(mbpp(program.replace("sys.exit(0)\n", "")))
    assert result.status is Status.FAILED and result.tests[0].message == "ValueError: nope", result
    assert_still_healthy(client)


def test_fake_protocol_lines_go_nowhere(client):
    """Fake answers on the program's own stdout are just output; the grader's and the client's fds cannot be opened."""
    fake = json.dumps({"status": "passed", "reward": 1.0, "tests": [], "expected_tests": 3, "id": "x"})
    targets = [(pid, fd) for pid in (client.ready["pid"], os.getpid()) for fd in range(12)]
    program = f"""
import os
FAKE = {fake!r} + "\\n"
os.write(1, FAKE.encode())
opened = []
for pid, fd in {targets!r} + [(os.getppid(), 1)]:
    try:
        with open("/proc/%d/fd/%d" % (pid, fd), "w") as f:
            f.write(FAKE)
        opened.append((pid, fd))
    except OSError:
        pass
print("OPENED", opened)
def add(a, b):
    return 0
"""
    result = client.grade(mbpp(program))  # the client checks the answer's id and reads exactly one line
    assert result.status is Status.FAILED and result.stdout.startswith(fake), result
    if not client.ready["landlock"]:
        pytest.xfail("without Landlock a local-mode program can open the client's /proc/<pid>/fd (same uid)")
    assert "OPENED []" in result.stdout, result.stdout
    assert_still_healthy(client)


@pytest.mark.parametrize("line", ['{"load": "sandbox_error", "error": "x"}', '{"stage": "sandbox_error"}',
                                  '{"load": "ok"}\n{"q": 1, "ok": {"d": [["add", 3]]}}', '{"q": 2, "ok": true}'])
def test_lines_forged_into_the_rpc_pipe_never_help(client, line):
    """The program can write into its own RPC pipe; the worst it gets is a failure, never a pass or a masked
    sandbox_error."""
    program = f"import os\nfor fd in range(3, 10):\n    try:\n        os.write(fd, {line!r}.encode() + b'\\n')\n" \
              f"    except OSError:\n        pass\ndef add(a, b):\n    return 0\n"
    result = client.grade(mbpp(program))
    assert result.status in (Status.FAILED, Status.RUNTIME_ERROR) and result.reward == 0.0, result
    assert_still_healthy(client)


@pytest.mark.parametrize("body", [
    "    x = []\n    for _ in range(100000):\n        x = [x]\n    return x\n",  # depth bomb
    "    return 'x' * (20 * 1024 * 1024)\n",  # over the RPC message cap
    "    raise ValueError('m' * (10 * 1024 * 1024))\n",  # huge exception message
    "    import itertools\n    return itertools.count()\n",  # endless iterator (T may call list() on it)
])
def test_answer_bombs_fail_the_test_not_the_executor(client, body):
    result = client.grade(mbpp("import sys\nsys.setrecursionlimit(10 ** 6)\ndef add(a, b):\n" + body,
                               ["assert add(1, 2) == 3", "assert list(add(1, 2)) == [3]"]))
    assert result.status in (Status.FAILED, Status.MEMORY_EXCEEDED) and result.reward == 0.0, result
    assert all(len(t.message) < 3000 for t in result.tests)
    assert_still_healthy(client)
