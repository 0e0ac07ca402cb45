"""The runaway stop rules: end a completion that has started looping, where the tokens after the loop would never
change the program that is graded.

Small models loop under greedy decoding: on HumanEval the default model ran 35 of 164 first attempts to the
512-token limit, repeating a token pattern (`[x + 1] + [x + 1] + ...`, `max(prefixes, max(prefixes, ...`, a block
of lines) or a whole function inside one unclosed code fence. Once a greedy decoder repeats a chunk back to back
it almost never leaves it, and the grader never uses the repeats: extraction (benchmarks.extract) cuts a block to
its longest parsing head and keeps the first definition of a name. Three rules, all narrow:

- `ends_in_loop(ids)`: the last tokens repeat one chunk of at most LOOP_MAX_PERIOD tokens back to back, over at
  least LOOP_MIN_TOKENS tokens and LOOP_MIN_REPEATS copies. Ordinary code repeats lines with different names or
  numbers in them; an exact token-for-token loop this long is degenerate.
- counting loops (`LoopWatch`): the same test with every number blanked (a run of digit tokens counts as one
  token, NUMBER), over at least NUMBER_LOOP_MIN_TOKENS tokens and NUMBER_LOOP_MIN_REPEATS copies. It ends the
  chains that count instead of compute: `if n == 27: return 27*c` for every n, `i+1,i+2,...`, `len(s) == 41 and
  len(s) == 42 and ...`, `def f_11(n): ...` (8-11 of 90 attempts in an MBPP-validation evaluation of the
  experiment's checkpoints ran to the 512-token limit this way, a fifth of the attempt-1 tokens). Code
  legitimately repeats a line with other numbers a few times, so this rule waits for twice the exact rule's span
  and copies.
- `repeated_definition_end(text)`: a top-level (column 0) `def` / `class` line re-defines, within the same code
  block, a name already defined there (a correction that quotes its old code in one block and writes the new one
  in the next is left alone: what was defined is forgotten at every fence).

They can change what is graded only where the model would have left its loop later, or where code after a repeated
definition mattered. `perf/stop_rule_check.py` counts, on a full evaluation with and without the rules, how many
graded programs differ.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence

# Recorded in an evaluation's config.json (stop_rules_version): results under other rules are never mixed.
# 1: token loops and repeated definitions; 2: and counting loops.
STOP_RULES_VERSION = "2"
LOOP_MAX_PERIOD = 64  # tokens in the repeated chunk
LOOP_MIN_TOKENS = 48  # tokens the repetition must span beyond its first copy
LOOP_MIN_REPEATS = 4  # copies of the chunk, at least
# The counting-loop rule's span and copies, chosen on the experiment's MBPP-validation runs (README, "The stop rules"):
# the exact rule's 48 and 4 also cut a chain of `if num % 7 == 0 ...` lines that the model ended itself.
NUMBER_LOOP_MIN_TOKENS = 96
NUMBER_LOOP_MIN_REPEATS = 8
NUMBER = -1  # stands for a run of digit tokens in the sequence the counting-loop rule tests
_DEFINITION = re.compile(r"(?:async\s+def|def|class)\s+([A-Za-z_]\w*)")


def repeated_definition_end(text: str) -> int | None:
    """Offset just past the newline of the first complete line that re-defines, at column 0 and within the same code
    block, a name defined earlier in `text`; None when there is none."""
    defined: set[str] = set()
    offset = 0
    for line in text.split("\n")[:-1]:  # the last piece has no newline yet: an unfinished line decides nothing
        offset += len(line) + 1
        if line.lstrip().startswith("```"):
            defined.clear()
            continue
        match = _DEFINITION.match(line)
        if match is None:
            continue
        if match.group(1) in defined:
            return offset
        defined.add(match.group(1))
    return None


def ends_in_loop(ids: Sequence[int], min_tokens: int = LOOP_MIN_TOKENS, min_repeats: int = LOOP_MIN_REPEATS) -> bool:
    """Whether the last tokens of `ids` are one chunk of p <= LOOP_MAX_PERIOD tokens repeated back to back, covering
    max(min_tokens, (min_repeats - 1) * p) tokens after its first copy."""
    n = len(ids)
    for period in range(1, min(LOOP_MAX_PERIOD, n // 2) + 1):
        if ids[-1] != ids[-1 - period]:
            continue  # the cheap test first: most periods fail on the newest token
        span = max(min_tokens, (min_repeats - 1) * period)
        if n >= span + period and ids[n - span:] == ids[n - span - period:n - period]:
            return True
    return False


def digit_token_ids(pieces: Sequence[str]) -> frozenset[int]:
    """The ids whose text is all ASCII digits; `pieces[i]` is the text of token i. With a tokenizer that merges a
    digit with a space (" 7") those tokens stay literal, so counting loops through them are not caught: no false
    stops, only fewer stops."""
    return frozenset(i for i, piece in enumerate(pieces) if piece.isascii() and piece.isdigit())


class LoopWatch:
    """The two token-loop rules over a completion that grows one token at a time (add() is O(LOOP_MAX_PERIOD) per
    token, where re-testing every prefix from scratch would be quadratic)."""

    def __init__(self, digit_ids: frozenset[int]) -> None:
        self.digit_ids = digit_ids
        self.ids: list[int] = []
        self.blanked: list[int] = []  # ids with every run of digit tokens as one NUMBER

    def add(self, token: int) -> bool:
        """Append `token`; whether the completion now ends in a loop that a rule stops."""
        self.ids.append(token)
        number_goes_on = token in self.digit_ids and self.blanked[-1:] == [NUMBER]
        if not number_goes_on:  # else `blanked` is as it was when last tested
            self.blanked.append(NUMBER if token in self.digit_ids else token)
        return ends_in_loop(self.ids) or (not number_goes_on and ends_in_loop(
            self.blanked, NUMBER_LOOP_MIN_TOKENS, NUMBER_LOOP_MIN_REPEATS))


def runaway_cut(ids: list[int], decode: Callable[[list[int]], str], digit_ids: frozenset[int]) -> int | None:
    """The length of the shortest prefix of the completion `ids` that a rule ends, or None: what a backend that
    cannot stop early keeps, equal to where a backend checking after every token stops."""
    watch = LoopWatch(digit_ids)
    loop_end = next((n for n, token in enumerate(ids, 1) if watch.add(token)), None)
    limit = loop_end or len(ids)
    if repeated_definition_end(decode(ids[:limit])) is None:
        return loop_end
    low, high = 0, limit  # a definition repeated in a prefix stays repeated in every longer one: binary search
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if repeated_definition_end(decode(ids[:middle])) is not None else (middle, high)
    return high
