"""The runaway stop rules: they fire on loops and repeated definitions, and nowhere else."""
from __future__ import annotations

from benchmarks.stopping import (
    LOOP_MAX_PERIOD,
    LOOP_MIN_TOKENS,
    ends_in_loop,
    repeated_definition_end,
    runaway_cut,
)


def test_a_chunk_repeated_back_to_back_is_a_loop_once_it_spans_the_minimum():
    chunk = [7, 8, 9, 10]
    ids = [1, 2, 3] + chunk * 30
    fires = [n for n in range(1, len(ids) + 1) if ends_in_loop(ids[:n])]
    assert fires[0] == 3 + len(chunk) + LOOP_MIN_TOKENS  # the first copy plus LOOP_MIN_TOKENS repeated tokens
    assert not ends_in_loop(ids[:fires[0] - 1])


def test_a_long_chunk_needs_four_copies():
    chunk = list(range(100, 100 + LOOP_MAX_PERIOD))
    assert not ends_in_loop(chunk * 3)
    assert ends_in_loop(chunk * 4)
    assert not ends_in_loop(list(range(100, 101 + LOOP_MAX_PERIOD)) * 4)  # a period above the maximum


def test_code_that_repeats_lines_with_different_names_is_not_a_loop():
    ids = []
    for k in range(40):
        ids += [11, 12, 100 + k, 13, 14]  # e.g. "    x_k = f(k)\n": same shape, one token differs
    assert not any(ends_in_loop(ids[:n]) for n in range(1, len(ids) + 1))
    assert not ends_in_loop([])


def test_a_function_defined_again_in_the_same_block_ends_after_that_line():
    text = "```python\ndef f(x):\n    return x\n\ndef g():\n    pass\n\ndef f(x):\n    return x\n"
    end = repeated_definition_end(text)
    assert text[:end].endswith("def f(x):\n") and text[:end].count("def f(") == 2


def test_an_unfinished_line_and_methods_and_other_blocks_do_not_fire():
    assert repeated_definition_end("def f():\n    pass\ndef f(") is None  # the line is not complete yet
    methods = "class A:\n    def run(self):\n        pass\nclass B:\n    def run(self):\n        pass\n"
    assert repeated_definition_end(methods) is None
    correction = ("Old:\n```python\ndef f(x):\n    return -x\n```\nFixed:\n```python\ndef f(x):\n    return x\n```\n")
    assert repeated_definition_end(correction) is None
    assert repeated_definition_end("class A:\n    pass\nclass A:\n") is not None
    assert repeated_definition_end("async def f():\n    pass\ndef f():\n") is not None


def test_runaway_cut_is_where_a_check_after_every_token_stops():
    words = ["```python\n", "def f(x):\n", "    return x\n", "\n", "def f(x):\n", "    return x\n"]
    ids = list(range(len(words)))

    def decode(prefix: list[int]) -> str:
        return "".join(words[i] for i in prefix)

    assert runaway_cut(ids, decode) == 5  # through the token that completes the repeated line
    assert runaway_cut(ids[:4], decode) is None
    loop = [1, 2] + [3, 4] * 40
    first = next(n for n in range(1, len(loop) + 1) if ends_in_loop(loop[:n]))
    assert runaway_cut(loop, lambda prefix: "") == first
