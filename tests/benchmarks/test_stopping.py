"""The runaway stop rules: they fire on loops and repeated definitions, and nowhere else."""
from __future__ import annotations

from benchmarks.stopping import (
    LOOP_MAX_PERIOD,
    LOOP_MIN_TOKENS,
    NUMBER_LOOP_MIN_REPEATS,
    NUMBER_LOOP_MIN_TOKENS,
    LoopWatch,
    digit_token_ids,
    ends_in_loop,
    repeated_definition_end,
    runaway_cut,
)

DIGITS = digit_token_ids([str(d) for d in range(10)] + ["x", " 1", "1x", "+", ","])  # ids 0-9 are the digits


def _counting(first: int, count: int, line: list[int]) -> list[int]:
    """`line` with the number k (its digits as tokens 0-9) in place of each None, for k = first .. first+count-1."""
    ids: list[int] = []
    for k in range(first, first + count):
        for token in line:
            ids += [int(d) for d in str(k)] if token is None else [token]
    return ids


def _first_fire(ids: list[int], digits: frozenset[int] = DIGITS) -> int | None:
    watch = LoopWatch(digits)
    return next((n for n, token in enumerate(ids, 1) if watch.add(token)), None)


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

    assert runaway_cut(ids, decode, DIGITS) == 5  # through the token that completes the repeated line
    assert runaway_cut(ids[:4], decode, DIGITS) is None
    loop = [1, 2] + [13, 14] * 40
    first = next(n for n in range(1, len(loop) + 1) if ends_in_loop(loop[:n]))
    assert runaway_cut(loop, lambda prefix: "", DIGITS) == first
    counting = _counting(10, 40, [20, 21, None, 22])  # "i+10,i+11,...": only the counting rule fires
    assert not any(ends_in_loop(counting[:n]) for n in range(1, len(counting) + 1))
    assert runaway_cut(counting, lambda prefix: "", DIGITS) == _first_fire(counting) is not None


def test_only_all_digit_tokens_are_digits():
    assert DIGITS == frozenset(range(10))


def test_a_line_repeated_with_only_its_number_counting_up_is_a_loop_after_the_longer_span():
    line = [30, 31, 32, 33, None, 34, 35, 36, 37, 38, None, 39, 40]  # "if n == K:\n    return K*c\n": 13 tokens
    ids = [50, 51] + _counting(10, 30, line)  # two-digit numbers: 15 tokens, 13 with each number as one
    fire = _first_fire(ids)
    assert fire is not None and not any(ends_in_loop(ids[:n]) for n in range(1, len(ids) + 1))
    # the first copy, then NUMBER_LOOP_MIN_TOKENS blanked tokens (96 = 7 lines and 5 tokens): inside the ninth line
    assert NUMBER_LOOP_MIN_TOKENS > (NUMBER_LOOP_MIN_REPEATS - 1) * len(line)
    assert (fire - 2) // 15 == 1 + NUMBER_LOOP_MIN_TOKENS // len(line)
    assert _first_fire(ids, frozenset()) is None  # a tokenizer without digit tokens: the rule never fires


def test_a_few_lines_with_other_numbers_and_numbers_that_change_length_are_not_cut_early():
    line = [30, 31, 32, None, 33, None, 34]  # e.g. "if num % K == 0 and num > 1: ..." written for a few K
    assert _first_fire(_counting(2, NUMBER_LOOP_MIN_REPEATS - 1, line)) is None
    assert _first_fire(_counting(1, 32, [None, 41, 42])) is None  # "1, 2, ..., 32": a list this long is kept
    assert _first_fire(_counting(1, 34, [None, 41, 42])) is not None
    # 9 -> 10 adds a digit token; with each number as one token the loop goes on across it
    ids = _counting(1, 60, [20, 21, None, 22])
    fire = _first_fire(ids)
    assert fire is not None and fire < len(_counting(1, 40, [20, 21, None, 22]))
