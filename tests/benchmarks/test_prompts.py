"""Prompts: golden plain strings, the verbatim p1 turn, prefix-stable plain rendering, stop strings, feedback."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import prompts
from benchmarks.generation import Dialogue
from benchmarks.tasks import Task, load_humaneval, load_mbpp, mbpp_shots

MBPP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mbpp.jsonl"
needs_mbpp = pytest.mark.skipif(not MBPP.exists(), reason=f"{MBPP} not present")

GOLDEN_MBPP_11 = """\
You are an expert Python programmer, and here is your task: Write a function to find the similar elements from the given two tuple lists. Your code should pass these tests:

assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)
assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)
assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)
[BEGIN]
def similar_elements(test_tup1, test_tup2):
  res = tuple(set(test_tup1) & set(test_tup2))
  return (res) \n[DONE]
You are an expert Python programmer, and here is your task: Write a python function to identify non-prime numbers. Your code should pass these tests:

assert is_not_prime(2) == False
assert is_not_prime(10) == True
assert is_not_prime(35) == True
[BEGIN]
import math
def is_not_prime(n):
    result = False
    for i in range(2,int(math.sqrt(n)) + 1):
        if n % i == 0:
            result = True
    return result
[DONE]
You are an expert Python programmer, and here is your task: Write a function to find the largest integers from a given list of numbers using heap queue algorithm. Your code should pass these tests:

assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] \nassert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] \nassert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]
[BEGIN]
import heapq as hq
def heap_queue_largest(nums,n):
  largest_nums = hq.nlargest(n, nums)
  return largest_nums
[DONE]
You are an expert Python programmer, and here is your task: Write a python function to remove first and last occurrence of a given character from the string. Your code should pass these tests:

assert remove_Occ("hello","l") == "heo"
assert remove_Occ("abcda","a") == "bcd"
assert remove_Occ("PHP","P") == "H"
[BEGIN]
"""

GOLDEN_P1 = (
    "There might be an error in the code above because of lack of understanding of the question. Please correct "
    "the error, if any, and rewrite the solution. Only output the final correct Python program!"
)


@needs_mbpp
def test_golden_mbpp_three_shot_plain() -> None:
    tasks = load_mbpp(MBPP, "all")
    shots = mbpp_shots([t for t in tasks if t.metadata["mbpp_task_id"] <= 10])
    task = next(t for t in tasks if t.task_id == "Mbpp/11")
    dialogue = prompts.first_dialogue(task, shots, chat=False)
    assert dialogue.messages == [{"role": "user", "content": GOLDEN_MBPP_11}]
    assert prompts.render_plain(dialogue.messages) == GOLDEN_MBPP_11
    # chat models get the same content (docs/method.md §1.5)
    assert prompts.first_dialogue(task, shots, chat=True).messages[0]["content"] == GOLDEN_MBPP_11


def test_golden_humaneval_plain_and_chat() -> None:
    task = load_humaneval()[0]
    plain = prompts.first_dialogue(task, chat=False)
    assert prompts.render_plain(plain.messages) == task.prompt  # zero-shot: the model continues the prompt
    assert plain.messages[0]["content"].startswith('from typing import List\n\n\ndef has_close_elements(')
    chat = prompts.first_dialogue(task, chat=True).messages[0]["content"]
    assert chat == (
        "Complete the following Python function. Write the whole function, with the imports it needs, in one "
        "```python code block.\n\n```python\n" + task.prompt.rstrip() + "\n```"
    )


def test_p1_is_verbatim_and_appended_to_the_same_dialogue() -> None:
    assert prompts.SELF_CORRECTION_INSTRUCTION == GOLDEN_P1
    assert prompts.self_correction_message() == GOLDEN_P1
    d = Dialogue(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                 token_ids=[1, 2, 3], encoded_messages=2)
    same = prompts.append_self_correction(d, GOLDEN_P1)
    assert same is d and d.token_ids == [1, 2, 3] and d.encoded_messages == 2
    assert d.messages[-1] == {"role": "user", "content": GOLDEN_P1}
    with pytest.raises(ValueError, match="must follow an assistant turn"):
        prompts.append_self_correction(d, GOLDEN_P1)


def test_render_plain_is_prefix_stable_and_ends_ready_for_the_assistant() -> None:
    messages = [
        {"role": "user", "content": "def f(x):\n    \"\"\"Double x.\"\"\"\n"},
        {"role": "assistant", "content": "    return 2 * x\n"},
        {"role": "user", "content": GOLDEN_P1},
        {"role": "assistant", "content": "def f(x):\n    return x + x\n"},
        {"role": "user", "content": GOLDEN_P1},
    ]
    full = prompts.render_plain(messages)
    for k in range(len(messages) + 1):
        assert full.startswith(prompts.render_plain(messages[:k])), k
    assert prompts.render_plain(messages[:3]) == (
        'def f(x):\n    """Double x."""\n    return 2 * x\n\n\n' + GOLDEN_P1 + "\n\n"
    )
    with pytest.raises(ValueError, match="unknown role"):
        prompts.render_plain([{"role": "tool", "content": ""}])


def test_stop_sequences_per_format() -> None:
    he = Task("h", "def f():\n", "f", ("def check(c): pass",), "humaneval")
    mb = Task("m", "text", "f", ("assert f()",), "mbpp")
    gen = Task("g", "text", "", ("assert f()",), "generic")
    assert prompts.stop_sequences(mb, chat=False, attempt=1) == ("[DONE]",)
    assert "[DONE]" in prompts.stop_sequences(mb, chat=True, attempt=2)
    assert prompts.stop_sequences(he, chat=True, attempt=1) == ("\n```\n",)
    assert "\ndef " in prompts.stop_sequences(he, chat=False, attempt=1)
    # attempt 2 of a base model writes a whole program: a new `def` must not stop it
    assert "\ndef " not in prompts.stop_sequences(he, chat=False, attempt=2)
    assert "\ndef " not in prompts.stop_sequences(gen, chat=False, attempt=1)


@pytest.mark.parametrize("test_format,chat", [("humaneval", True), ("mbpp", True), ("generic", True),
                                              ("humaneval", False), ("generic", False)])
def test_closing_fence_stops_only_the_first_attempt(test_format: str, chat: bool) -> None:
    """A correction that quotes the old code (or restates the prompt) in a block first must not be cut there."""
    task = Task("t", "text", "f", ("assert f()",), test_format)
    if (test_format, chat) != ("humaneval", False):  # a base model continuing the prompt stops at new code
        assert prompts.CLOSING_FENCE_STOP in prompts.stop_sequences(task, chat, attempt=1)
    for attempt in (2, 3):
        assert prompts.CLOSING_FENCE_STOP not in prompts.stop_sequences(task, chat, attempt)
    assert prompts.PROMPTS_VERSION == "2"  # stop strings changed: results of version 1 are not resumed into


def test_chat_closing_fence_stop_does_not_match_the_opening_fence() -> None:
    stop = prompts.stop_sequences(Task("h", "p", "f", ("t",), "humaneval"), chat=True, attempt=1)[0]
    answer = "Here is the function:\n\n```python\ndef f():\n    return 1\n```\n\nIt returns one."
    cut = answer[: answer.index(stop) + len(stop)]
    assert cut.endswith("return 1\n```\n") and "It returns" not in cut


def test_feedback_mode_shows_first_failure() -> None:
    assert prompts.self_correction_message(None, "assert f(1) == 2", previous_passed=False) == GOLDEN_P1
    msg = prompts.self_correction_message("tests", "assert 0: AssertionError", previous_passed=False)
    assert msg == f"The code above failed a test:\nassert 0: AssertionError\n\n{GOLDEN_P1}"
    assert prompts.self_correction_message("tests", "", previous_passed=True).startswith("The code above passed")
    long = prompts.self_correction_message("tests", "x" * 5000)
    assert long.count("x") == prompts.MAX_FEEDBACK_CHARS and long.endswith(GOLDEN_P1)
    with pytest.raises(ValueError, match="unknown feedback"):
        prompts.self_correction_message("oracle", "x")
