"""The three job formats graded by sandbox/executor.py: HumanEval checks, MBPP asserts and generic test code."""
from __future__ import annotations

import pytest

from sandbox.jobs import Job
from sandbox.verdict import Status
from tests.sandbox.conftest import humaneval_job, mbpp


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


# --- MBPP formats ---------------------------------------------------------------------------------------------------
def test_mbpp_each_assert_is_a_test(client):
    result = client.grade(mbpp("def add(a, b):\n    return a + b if a > 0 else 7\n"))
    assert result.status is Status.FAILED and result.expected_tests == 3
    assert [t.name for t in result.tests] == ["assert 0", "assert 1", "assert 2"]
    assert [t.passed for t in result.tests] == [True, False, True]
    assert result.tests[1].message == "assert add(-1, 1) == 0" and result.pass_fraction == pytest.approx(2 / 3)


def test_mbpp_objects_of_program_classes_travel_as_handles(client):
    program = ("class Pair(object):\n    def __init__(self, a, b):\n        self.a = a\n        self.b = b\n"
               "def max_chain_length(arr, n):\n    return sum(1 for p in arr[:n] if p.a < p.b)\n")
    asserts = ["assert max_chain_length([Pair(5, 24), Pair(15, 25), Pair(27, 40), Pair(50, 60)], 4) == 4",
               "assert Pair(1, 2).b == 2"]
    assert client.grade(mbpp(program, asserts)).status is Status.PASSED


def test_mbpp_setup_code_builds_program_objects_in_the_trusted_process(client):
    program = ("class Node:\n    def __init__(self, data):\n        self.data = data\n        self.left = None\n"
               "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n")
    result = client.grade(mbpp(program, ["assert depth(root) == 2"], setup_code="root = Node(1)\nroot.left = Node(2)"))
    assert result.status is Status.PASSED, result


def test_mbpp_entry_point_may_shadow_a_builtin_and_types_and_counters_are_plain(client):
    assert client.grade(mbpp("def sum(a, b):\n    return a * b\n", ["assert sum(3, 4) == 12"])).status is Status.PASSED
    program = "def keep(xs, t):\n    return [x for x in xs if isinstance(x, t)]\n"
    assert client.grade(mbpp(program, ["assert keep((1, 'a', 2.0), str) == ['a']"])).status is Status.PASSED
    program = "from collections import Counter\ndef freq(xs):\n    return Counter(xs)\n"
    assert client.grade(mbpp(program, ["assert freq([1, 1, 2]) == {1: 2, 2: 1}"])).status is Status.PASSED


def test_mbpp_program_cannot_replace_builtins_or_modules_the_tests_use(client):
    program = "import math\nmath.isclose = lambda *a, **k: True\ndef len(x):\n    return 3\ndef f(x):\n    return []\n"
    result = client.grade(mbpp(program, ["assert len(f(1)) == 3", "assert math.isclose(f(2), 1.0)"]))
    assert result.status is Status.FAILED and not any(t.passed for t in result.tests), result


def test_humaneval_missing_entry_point_fails(client, problems):
    result = client.grade(humaneval_job(problems["HumanEval/0"], "    return True\ndel has_close_elements\n"))
    assert result.status is Status.FAILED and "does not define 'has_close_elements'" in result.tests[0].message


def test_generic_test_functions_are_counted(client):
    test_code = "def test_one():\n    assert double(2) == 4\n\ndef test_two():\n    assert double(3) == 7\n"
    result = client.grade(Job.generic("def double(x):\n    return 2 * x\n", test_code))
    assert result.status is Status.FAILED and result.expected_tests == 2
    assert [(t.name, t.passed) for t in result.tests] == [("test_one", True), ("test_two", False)]
    assert result.tests[1].message == "assert double(3) == 7"
    result = client.grade(Job.generic("def double(x):\n    return 2 * x\n", "assert double(5) == 10\n"))
    assert result.status is Status.PASSED and [t.name for t in result.tests] == ["test"]
