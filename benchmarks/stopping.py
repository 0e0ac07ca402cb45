"""The runaway stop rules: end a completion that has started looping, where the tokens after the loop would never
change the program that is graded.

Small models loop under greedy decoding: on HumanEval the default model ran 35 of 164 first attempts to the
512-token limit, repeating a token pattern (`[x + 1] + [x + 1] + ...`, `max(prefixes, max(prefixes, ...`, a block
of lines) or a whole function inside one unclosed code fence. Once a greedy decoder repeats a chunk back to back
it almost never leaves it, and the grader never uses the repeats: extraction (benchmarks.extract) cuts a block to
its longest parsing head and keeps the first definition of a name. Two rules, both narrow:

- `ends_in_loop(ids)`: the last tokens repeat one chunk of at most LOOP_MAX_PERIOD tokens back to back, over at
  least LOOP_MIN_TOKENS tokens and LOOP_MIN_REPEATS copies. Ordinary code repeats lines with different names or
  numbers in them; an exact token-for-token loop this long is degenerate.
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

LOOP_MAX_PERIOD = 64  # tokens in the repeated chunk
LOOP_MIN_TOKENS = 48  # tokens the repetition must span beyond its first copy
LOOP_MIN_REPEATS = 4  # copies of the chunk, at least
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


def ends_in_loop(ids: Sequence[int]) -> bool:
    """Whether the last tokens of `ids` are one chunk of p <= LOOP_MAX_PERIOD tokens repeated back to back, covering
    max(LOOP_MIN_TOKENS, (LOOP_MIN_REPEATS - 1) * p) tokens after its first copy."""
    n = len(ids)
    for period in range(1, min(LOOP_MAX_PERIOD, n // 2) + 1):
        if ids[-1] != ids[-1 - period]:
            continue  # the cheap test first: most periods fail on the newest token
        span = max(LOOP_MIN_TOKENS, (LOOP_MIN_REPEATS - 1) * period)
        if n >= span + period and ids[n - span:] == ids[n - span - period:n - period]:
            return True
    return False


def runaway_cut(ids: list[int], decode: Callable[[list[int]], str]) -> int | None:
    """The length of the shortest prefix of the completion `ids` that a rule ends, or None: what a backend that
    cannot stop early keeps, equal to where a backend checking after every token stops."""
    loop_end = next((n for n in range(1, len(ids) + 1) if ends_in_loop(ids[:n])), None)
    limit = loop_end or len(ids)
    if repeated_definition_end(decode(ids[:limit])) is None:
        return loop_end
    low, high = 0, limit  # a definition repeated in a prefix stays repeated in every longer one: binary search
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if repeated_definition_end(decode(ids[:middle])) is not None else (middle, high)
    return high
