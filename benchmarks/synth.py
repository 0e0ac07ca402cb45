"""Synthetic MBPP-style tasks: templated Python functions with asserts, easy enough for a 135M model to learn from.

Why: SmolLM2-135M-Instruct solves about 1 in 96 MBPP samples (issue #16), so SCoRe's reward is almost always 0 and
RL has nothing to reinforce. This family is generated from templates of one-to-three-line functions (string
manipulation, arithmetic, lists, counting, filtering, conditionals, dicts, small math), each with parameters
(constants, characters, words, operations), so that a few thousand distinct tasks exist and the base model passes a
fair share of them. Train here; evaluate in distribution (this family's held-out split) and in transfer (HumanEval,
MBPP test).

A task is MBPP's format (test_format "mbpp"): a one-sentence description, three asserts shown in the prompt
(`test_list_for_prompt`, as MBPP shows its test_list) and three hidden asserts of the same kind; all six grade.
MBPP grades on the shown asserts alone, but then a program that returns the shown answers for the shown inputs
(an `if` per assert) earns the full reward, and RL finds whatever the reward pays for; the hidden asserts draw
their inputs from the same distribution, so a program that does what the sentence says passes them too. The
expected values come from running the reference solution, so the asserts agree with it by construction (the tests
grade every reference in the Docker sandbox again). In `--feedback tests` mode a failing hidden assert is shown
before attempt 2, as any failing test is.

Splits (train / validation / test, about 80/10/10 of each template's quota): by held-out parameterisation, not
just by instance. A template's semantic key is the tuple of parameters that decide which function is asked for
(`add_const` with 7, `filter_compare` with "greater than" and 12); each key goes to one split by a hash of the
template name and the key, independent of the seed. So no validation or test task asks for a function that any
training task of any seed asks for ("add 7" is in one split only): held-out tasks are the same skills with unseen
constants, characters and operations, not near-duplicates. The seed picks which keys are used, the wording, and
the test inputs. Whole templates are not held out: a held-out template would measure transfer, which HumanEval and
MBPP already do.

Limits: the tasks are templated and short; what the model learns here may not carry over to HumanEval or MBPP
(their tasks are longer and their wording is not drawn from a few phrasings). The measured pass rates (in the 20-60%
target as first built, so the mix was not retuned) are the embedded SmolLM2-135M-Instruct's
(experiments/cpu_learning/synth/summary.md); another model needs its own measurement.
Standard library only; deterministic: the same seed and per-template count give byte-identical files.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.errors import ScoreCodeError
from benchmarks.tasks import Task

SPLITS = ("train", "validation", "test")
SPLIT_FILES = {split: f"{split}.jsonl" for split in SPLITS}
STATS_FILE = "stats.json"
SHOWN_TESTS = 3
HIDDEN_TESTS = 3
DEFAULT_SEED = 0
DEFAULT_PER_TEMPLATE = 100
SYNTH_VERSION = "1"  # bump when any template, wording or split rule changes: task files of two versions differ
_SPLIT_BUCKETS = {0: "test", 1: "validation"}  # of 10 hash buckets; the other 8 are train
_SPLIT_SHARE = {"train": 0.8, "validation": 0.1, "test": 0.1}

Args = tuple
InputMaker = Callable[[random.Random], Args]


class SynthError(ScoreCodeError):
    """The generator was asked for something it cannot make."""

    hint = f"pass --per-template 1 or more (default {DEFAULT_PER_TEMPLATE})"


@dataclass(frozen=True)
class Spec:
    """One concrete task: what the model reads, the function it must write, and how to draw test inputs."""

    text: str
    name: str
    params: str
    body: str  # the reference's body, unindented; lines are indented by 4 spaces
    inputs: InputMaker

    @property
    def reference(self) -> str:
        lines = "\n".join("    " + line for line in self.body.splitlines())
        return f"def {self.name}({self.params}):\n{lines}\n"


@dataclass(frozen=True)
class Template:
    """A parameterised task: `make(rng, *key)` builds the task for one semantic key (rng: wording only)."""

    name: str
    family: str
    difficulty: int  # 1: one expression, 2: a comprehension, filter or loop, 3: two steps
    keys: tuple[tuple, ...]
    make: Callable[..., Spec]


TEMPLATES: list[Template] = []


def template(family: str, difficulty: int, keys: list) -> Callable[[Callable[..., Spec]], Callable[..., Spec]]:
    """Register a template; `keys` lists its semantic keys (scalars are wrapped in 1-tuples)."""
    def register(make: Callable[..., Spec]) -> Callable[..., Spec]:
        normalized = tuple(k if isinstance(k, tuple) else (k,) for k in keys)
        TEMPLATES.append(Template(make.__name__, family, difficulty, normalized, make))
        return make
    return register


# --- test inputs --------------------------------------------------------------------------------------------------

WORDS = ("apple", "banana", "cherry", "dog", "house", "river", "python", "code", "table", "green", "music", "orange",
         "planet", "window", "garden", "summer", "yellow", "silver", "paper", "rocket", "pencil", "forest", "coffee",
         "bridge", "candle", "mirror", "dragon", "tiger", "ocean", "winter", "hello", "world", "letter", "stone")
TAGS = ("pre", "un", "re", "data", "my", "new", "old", "big", "top", "sub", "mr", "dr", "the", "x", "go", "up",
        "end", "log", "tmp", "id")


def _number(lo: int, hi: int) -> InputMaker:
    return lambda r: (r.randint(lo, hi),)


def _number_list(lo: int, hi: int, min_len: int = 3, max_len: int = 7) -> InputMaker:
    return lambda r: ([r.randint(lo, hi) for _ in range(r.randint(min_len, max_len))],)


def _word(r: random.Random, extra: str = "") -> str:
    """A word, sometimes two, sometimes with `extra` characters mixed in (so that a character test has hits)."""
    text = r.choice(WORDS) if r.random() < 0.6 else f"{r.choice(WORDS)} {r.choice(WORDS)}"
    for _ in range(r.randint(0, 2) if extra else 0):
        i = r.randint(0, len(text))
        text = text[:i] + r.choice(extra) + text[i:]
    return text


def _string(extra: str = "") -> InputMaker:
    return lambda r: (_word(r, extra),)


def _mixed_case(r: random.Random) -> str:
    """A word or two with some letters in upper case, so that every case conversion changes something."""
    return "".join(c.upper() if r.random() < 0.3 else c for c in _word(r))


def _multiple_or_not(k: int, hi: int) -> InputMaker:
    """Half multiples of k, half any number: a divisibility test needs both answers among its asserts."""
    return lambda r: (k * r.randint(0, hi // k) if r.random() < 0.5 else r.randint(0, hi),)


# --- arithmetic ---------------------------------------------------------------------------------------------------


@template("arithmetic", 1, list(range(2, 100)))
def add_const(r: random.Random, k: int) -> Spec:
    text = r.choice([f"Write a function to add {k} to a given number.",
                     f"Write a function that returns the given number increased by {k}."])
    return Spec(text, f"add_{k}", "n", f"return n + {k}", _number(-20, 100))


@template("arithmetic", 1, list(range(2, 100)))
def subtract_const(r: random.Random, k: int) -> Spec:
    text = r.choice([f"Write a function to subtract {k} from a given number.",
                     f"Write a function that returns the given number decreased by {k}."])
    return Spec(text, f"subtract_{k}", "n", f"return n - {k}", _number(-20, 200))


@template("arithmetic", 1, list(range(2, 61)))
def multiply_const(r: random.Random, k: int) -> Spec:
    text = r.choice([f"Write a function to multiply a number by {k}.",
                     f"Write a function that returns {k} times the given number."])
    return Spec(text, f"multiply_by_{k}", "n", f"return n * {k}", _number(-10, 50))


@template("arithmetic", 2, [(a, b) for a in range(2, 10) for b in range(1, 16)])
def linear(r: random.Random, a: int, b: int) -> Spec:
    text = f"Write a function that multiplies a number by {a} and then adds {b}."
    return Spec(text, f"times_{a}_plus_{b}", "n", f"return n * {a} + {b}", _number(-10, 30))


@template("arithmetic", 1, list(range(2, 61)))
def remainder(r: random.Random, k: int) -> Spec:
    text = r.choice([f"Write a function to find the remainder when a number is divided by {k}.",
                     f"Write a function that returns a number modulo {k}."])
    return Spec(text, f"remainder_{k}", "n", f"return n % {k}", _number(0, 500))


@template("arithmetic", 1, list(range(2, 41)))
def int_divide(r: random.Random, k: int) -> Spec:
    text = f"Write a function to divide a number by {k} using integer division."
    return Spec(text, f"divide_by_{k}", "n", f"return n // {k}", _number(0, 500))


_BINARY_OPS = {"sum": "+", "difference": "-", "product": "*"}


@template("arithmetic", 2, [(op, k) for op in _BINARY_OPS for k in range(1, 21)])
def binary_plus(r: random.Random, op: str, k: int) -> Spec:
    text = f"Write a function that returns the {op} of two numbers plus {k}."
    return Spec(text, f"{op}_plus_{k}", "a, b", f"return a {_BINARY_OPS[op]} b + {k}",
                lambda q: (q.randint(-10, 30), q.randint(-10, 30)))


_UNITS = (("minutes", "seconds", 60), ("hours", "minutes", 60), ("days", "hours", 24), ("weeks", "days", 7),
          ("feet", "inches", 12), ("meters", "centimeters", 100), ("kilometers", "meters", 1000),
          ("dollars", "cents", 100), ("yards", "feet", 3), ("kilograms", "grams", 1000),
          ("liters", "milliliters", 1000), ("years", "months", 12), ("hours", "seconds", 3600),
          ("days", "minutes", 1440), ("centuries", "years", 100), ("decades", "years", 10))


@template("arithmetic", 1, list(_UNITS))
def convert_units(r: random.Random, big: str, small: str, factor: int) -> Spec:
    text = r.choice([f"Write a function to convert {big} to {small}.",
                     f"Write a function that converts a number of {big} into {small}."])
    return Spec(text, f"{big}_to_{small}", big, f"return {big} * {factor}", _number(0, 60))


_POLYGONS = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6, "heptagon": 7, "octagon": 8, "nonagon": 9,
             "decagon": 10}


@template("math", 1, list(_POLYGONS))
def perimeter(r: random.Random, shape: str) -> Spec:
    text = f"Write a function to find the perimeter of a regular {shape} given the length of its side."
    return Spec(text, f"{shape}_perimeter", "side", f"return side * {_POLYGONS[shape]}", _number(1, 50))


# --- conditionals -------------------------------------------------------------------------------------------------


@template("conditionals", 1, list(range(2, 51)))
def is_divisible(r: random.Random, k: int) -> Spec:
    text = r.choice([f"Write a function to check whether a number is divisible by {k}.",
                     f"Write a function that returns True if a number is a multiple of {k} and False otherwise."])
    return Spec(text, f"is_divisible_by_{k}", "n", f"return n % {k} == 0", _multiple_or_not(k, 300))


_LABELS = (("high", "low"), ("big", "small"), ("pass", "fail"), ("hot", "cold"), ("yes", "no"), ("up", "down"))


@template("conditionals", 2, [(k, hi, lo) for k in range(0, 101, 5) for hi, lo in _LABELS])
def threshold_label(r: random.Random, k: int, hi: str, lo: str) -> Spec:
    text = f"Write a function that returns '{hi}' if a number is greater than {k} and '{lo}' otherwise."
    body = f"if n > {k}:\n    return '{hi}'\nreturn '{lo}'"
    return Spec(text, f"{hi}_or_{lo}", "n", body, lambda q: (q.randint(k - 20, k + 20),))


@template("conditionals", 1, [(which, k) for which in ("smaller", "larger") for k in range(1, 100)])
def bound(r: random.Random, which: str, k: int) -> Spec:
    fn = "min" if which == "smaller" else "max"
    text = f"Write a function that returns the {which} of a given number and {k}."
    return Spec(text, f"{fn}_with_{k}", "n", f"return {fn}(n, {k})", _number(k - 30, k + 30))


_PARITY_WORDS = (("even", "odd"), ("yes", "no"), ("red", "blue"), ("on", "off"), ("left", "right"), ("A", "B"),
                 ("cat", "dog"), ("win", "lose"))


@template("conditionals", 2, list(_PARITY_WORDS))
def parity_word(r: random.Random, even: str, odd: str) -> Spec:
    text = f"Write a function that returns '{even}' if a number is even and '{odd}' if it is odd."
    body = f"if n % 2 == 0:\n    return '{even}'\nreturn '{odd}'"
    return Spec(text, f"{even}_if_even", "n", body, _number(0, 100))


@template("conditionals", 2, [(a, a + w) for a in range(0, 51, 5) for w in range(5, 31, 5)])
def in_range(r: random.Random, lo: int, hi: int) -> Spec:
    text = f"Write a function to check whether a number is between {lo} and {hi}, inclusive."
    return Spec(text, f"in_range_{lo}_{hi}", "n", f"return {lo} <= n <= {hi}",
                lambda q: (q.randint(max(0, lo - 10), hi + 10),))


@template("conditionals", 1, list(range(1, 100)))
def distance_from(r: random.Random, k: int) -> Spec:
    text = f"Write a function to find the absolute difference between a number and {k}."
    return Spec(text, f"distance_from_{k}", "n", f"return abs(n - {k})", _number(0, k + 40))


# --- strings ------------------------------------------------------------------------------------------------------


@template("strings", 1, [(tag, side) for tag in TAGS for side in ("beginning", "end")])
def add_affix(r: random.Random, tag: str, side: str) -> Spec:
    text = f"Write a function to add '{tag}' to the {side} of a string."
    body = f"return '{tag}' + s" if side == "beginning" else f"return s + '{tag}'"
    kind = "prefix" if side == "beginning" else "suffix"
    return Spec(text, f"add_{kind}_{tag}", "s", body, _string())


_SEPARATORS = {"": "", " ": "space", "-": "dash", ",": "comma", "_": "underscore", "|": "bar", "/": "slash"}


@template("strings", 1, [(k, sep) for k in range(2, 7) for sep in _SEPARATORS])
def repeat_string(r: random.Random, k: int, sep: str) -> Spec:
    if not sep:
        return Spec(f"Write a function to repeat a string {k} times.", f"repeat_{k}_times", "s",
                    f"return s * {k}", _string())
    text = f"Write a function to repeat a string {k} times, with '{sep}' between the copies."
    return Spec(text, f"repeat_{k}_with_{_SEPARATORS[sep]}", "s", f"return '{sep}'.join([s] * {k})", _string())


@template("strings", 1, [(side, k) for side in ("first", "last") for k in range(1, 10)])
def slice_string(r: random.Random, side: str, k: int) -> Spec:
    text = f"Write a function to return the {side} {k} characters of a string."
    body = f"return s[:{k}]" if side == "first" else f"return s[-{k}:]"
    return Spec(text, f"{side}_{k}_chars", "s", body,
                lambda q: (q.choice([w for w in WORDS if len(w) > k] + [f"{q.choice(WORDS)} {q.choice(WORDS)}"]),))


@template("strings", 1, list(string.ascii_lowercase))
def count_char(r: random.Random, c: str) -> Spec:
    text = r.choice([f"Write a function to count how many times the character '{c}' appears in a string.",
                     f"Write a function to count the occurrences of '{c}' in a given string."])
    return Spec(text, f"count_{c}", "s", f"return s.count('{c}')", _string(c))


@template("strings", 1, [(a, b) for a in "aeiostnr " for b in "xyz*-_#." if a != b])
def replace_char(r: random.Random, a: str, b: str) -> Spec:
    shown = "space" if a == " " else f"'{a}'"
    text = f"Write a function to replace every {shown} in a string with '{b}'."
    name = "replace_spaces" if a == " " else f"replace_{a}"
    return Spec(text, name, "s", f"return s.replace('{a}', '{b}')", _string(a))


@template("strings", 1, list(string.ascii_lowercase))
def remove_char(r: random.Random, c: str) -> Spec:
    text = f"Write a function to remove all occurrences of the character '{c}' from a string."
    return Spec(text, f"remove_{c}", "s", f"return s.replace('{c}', '')", _string(c))


_CASES = {"upper": ("uppercase", "s.upper()"), "lower": ("lowercase", "s.lower()"),
          "title": ("title case", "s.title()"), "swapcase": ("swapped case (upper to lower and lower to upper)",
                                                             "s.swapcase()"),
          "capitalize": ("a string whose first character is uppercase and the rest lowercase", "s.capitalize()")}


@template("strings", 1, list(_CASES))
def change_case(r: random.Random, case: str) -> Spec:
    words, expr = _CASES[case]
    return Spec(f"Write a function to convert a string to {words}.", f"to_{case}", "s", f"return {expr}",
                lambda q: (_mixed_case(q),))


@template("strings", 1, [(p, side) for p in [*string.ascii_lowercase[:20], "th", "re", "co", "pa", "er", "on"]
                         for side in ("starts", "ends")])
def starts_with(r: random.Random, p: str, side: str) -> Spec:
    method = "startswith" if side == "starts" else "endswith"
    text = f"Write a function to check whether a string {side} with '{p}'."
    return Spec(text, f"{side}_with_{p}", "s", f"return s.{method}('{p}')",
                lambda q: (q.choice([_word(q), p + _word(q), _word(q) + p]),))


@template("strings", 1, list(range(2, 14)))
def longer_than(r: random.Random, k: int) -> Spec:
    text = f"Write a function to check whether a string has more than {k} characters."
    return Spec(text, f"longer_than_{k}", "s", f"return len(s) > {k}",
                lambda q: ("".join(q.choice(WORDS) for _ in range(4))[:q.randint(max(1, k - 3), k + 4)],))


_BRACKETS = (("(", ")"), ("[", "]"), ("{", "}"), ("<", ">"), ("*", "*"), ("**", "**"), ("--", "--"), ("#", "#"),
             ("_", "_"), ("!", "!"), ("<<", ">>"), ("'", "'"))


@template("strings", 1, list(_BRACKETS))
def wrap_string(r: random.Random, left: str, right: str) -> Spec:
    text = f"Write a function to put \"{left}\" before and \"{right}\" after a string."
    return Spec(text, "wrap", "s", f"return {left!r} + s + {right!r}", _string())


@template("strings", 2, ["".join(c) for n in (2, 3) for c in itertools.combinations("aeiounrst", n)])
def count_chars_in(r: random.Random, chars: str) -> Spec:
    text = f"Write a function to count the characters of a string that are one of '{chars}'."
    return Spec(text, f"count_{chars}", "s", f"return sum(1 for c in s if c in '{chars}')", _string())


@template("strings", 1, list(_SEPARATORS))
def join_words(r: random.Random, sep: str) -> Spec:
    shown = "nothing" if not sep else f"'{sep}'"
    text = f"Write a function to join a list of strings into one string with {shown} between them."
    name = f"join_with_{_SEPARATORS[sep]}" if sep else "join_together"
    return Spec(text, name, "words", f"return '{sep}'.join(words)",
                lambda q: (q.sample(WORDS, q.randint(2, 4)),))


# --- lists --------------------------------------------------------------------------------------------------------


@template("lists", 2, [(op, k) for op in ("add", "multiply") for k in range(2, 51)])
def map_list(r: random.Random, op: str, k: int) -> Spec:
    if op == "add":
        text, name, expr = f"Write a function to add {k} to every element of a list.", f"add_{k}_to_all", f"x + {k}"
    else:
        text, name, expr = (f"Write a function to multiply every element of a list by {k}.", f"multiply_all_by_{k}",
                            f"x * {k}")
    return Spec(text, name, "numbers", f"return [{expr} for x in numbers]", _number_list(-10, 20))


_COMPARISONS = {"greater than": ">", "less than": "<", "at least": ">=", "at most": "<="}
_COMPARISON_NAMES = {"greater than": "greater", "less than": "less", "at least": "at_least", "at most": "at_most"}


@template("filtering", 2, [(op, k) for op in _COMPARISONS for k in range(0, 51, 2)])
def filter_compare(r: random.Random, op: str, k: int) -> Spec:
    text = f"Write a function to return the numbers in a list that are {op} {k}."
    return Spec(text, f"keep_{_COMPARISON_NAMES[op]}_{k}", "numbers",
                f"return [x for x in numbers if x {_COMPARISONS[op]} {k}]", _number_list(k - 15, k + 15))


@template("filtering", 2, [(keep, k) for keep in (True, False) for k in range(2, 13)])
def filter_divisible(r: random.Random, keep: bool, k: int) -> Spec:
    if keep:
        text, name, cond = (f"Write a function to return the numbers in a list that are divisible by {k}.",
                            f"multiples_of_{k}", f"x % {k} == 0")
    else:
        text, name, cond = (f"Write a function to remove the numbers divisible by {k} from a list.",
                            f"remove_multiples_of_{k}", f"x % {k} != 0")
    return Spec(text, name, "numbers", f"return [x for x in numbers if {cond}]", _number_list(0, 6 * k))


@template("counting", 2, [(op, k) for op in ("greater than", "less than") for k in range(0, 51, 2)])
def count_compare(r: random.Random, op: str, k: int) -> Spec:
    text = f"Write a function to count the numbers in a list that are {op} {k}."
    return Spec(text, f"count_{_COMPARISON_NAMES[op]}_{k}", "numbers",
                f"return len([x for x in numbers if x {_COMPARISONS[op]} {k}])", _number_list(k - 15, k + 15))


@template("filtering", 2, [(op, k) for op in ("greater than", "less than") for k in range(0, 51, 2)])
def sum_compare(r: random.Random, op: str, k: int) -> Spec:
    text = f"Write a function to find the sum of the numbers in a list that are {op} {k}."
    return Spec(text, f"sum_{_COMPARISON_NAMES[op]}_{k}", "numbers",
                f"return sum(x for x in numbers if x {_COMPARISONS[op]} {k})", _number_list(k - 15, k + 15))


@template("lists", 1, [(side, k) for side in ("first", "last") for k in range(1, 7)])
def slice_list(r: random.Random, side: str, k: int) -> Spec:
    text = f"Write a function to return the {side} {k} elements of a list."
    body = f"return items[:{k}]" if side == "first" else f"return items[-{k}:]"
    return Spec(text, f"{side}_{k}_elements", "items", body, _number_list(0, 50, k + 1, k + 5))


@template("lists", 1, list(range(0, 100, 2)))
def contains_value(r: random.Random, k: int) -> Spec:
    text = f"Write a function to check whether {k} is in a list."
    return Spec(text, f"contains_{k}", "numbers", f"return {k} in numbers",
                lambda q: (q.sample(range(max(0, k - 5), k + 6), q.randint(3, 6)),))


@template("counting", 1, list(range(0, 10)))
def count_value(r: random.Random, k: int) -> Spec:
    text = f"Write a function to count how many times {k} appears in a list."
    return Spec(text, f"count_{k}s", "numbers", f"return numbers.count({k})", _number_list(0, 9, 4, 9))


@template("lists", 2, [(a, b) for a in range(0, 10) for b in range(0, 10) if a != b])
def replace_value(r: random.Random, a: int, b: int) -> Spec:
    text = f"Write a function to replace every {a} in a list with {b}."
    return Spec(text, f"replace_{a}_with_{b}", "numbers", f"return [{b} if x == {a} else x for x in numbers]",
                _number_list(0, 9, 4, 8))


_AGGREGATES = {"largest": "max", "smallest": "min", "sum": "sum", "length": "len"}


@template("lists", 2, [(agg, k) for agg in _AGGREGATES for k in range(1, 21)])
def aggregate_plus(r: random.Random, agg: str, k: int) -> Spec:
    what = {"largest": "the largest number in", "smallest": "the smallest number in", "sum": "the sum of",
            "length": "the length of"}[agg]
    text = f"Write a function that returns {what} a list plus {k}."
    return Spec(text, f"{_AGGREGATES[agg]}_plus_{k}", "numbers", f"return {_AGGREGATES[agg]}(numbers) + {k}",
                _number_list(-10, 50))


# --- loops --------------------------------------------------------------------------------------------------------


@template("loops", 2, list(range(2, 16)))
def sum_multiples(r: random.Random, k: int) -> Spec:
    text = f"Write a function to find the sum of all numbers from 1 to n that are divisible by {k}."
    body = f"total = 0\nfor i in range(1, n + 1):\n    if i % {k} == 0:\n        total += i\nreturn total"
    return Spec(text, f"sum_multiples_of_{k}", "n", body, _number(1, 60))


@template("loops", 2, list(range(2, 31)))
def first_multiples(r: random.Random, k: int) -> Spec:
    text = f"Write a function to return a list of the first n multiples of {k}."
    return Spec(text, f"multiples_of_{k}", "n", f"return [{k} * i for i in range(1, n + 1)]", _number(1, 8))


@template("counting", 2, list(range(0, 10)))
def count_digit(r: random.Random, d: int) -> Spec:
    text = f"Write a function to count how many times the digit {d} appears in a number."
    return Spec(text, f"count_digit_{d}", "n", f"return str(n).count('{d}')",
                lambda q: (int("".join(q.choice(f"{d}{d}0123456789") for _ in range(q.randint(1, 6)))),))


@template("loops", 2, [(a, s) for a in range(0, 11) for s in range(1, 6)])
def range_list(r: random.Random, a: int, step: int) -> Spec:
    steps = "" if step == 1 else f", counting in steps of {step}"
    text = f"Write a function to return a list of the numbers from {a} up to n, inclusive{steps}."
    return Spec(text, f"numbers_from_{a}" + (f"_step_{step}" if step > 1 else ""), "n",
                f"return list(range({a}, n + 1, {step}))", _number(a, a + 15))


@template("counting", 2, list(range(1, 6)))
def count_long_words(r: random.Random, k: int) -> Spec:
    text = f"Write a function to count the words in a sentence that have more than {k} letters."
    return Spec(text, f"count_words_longer_than_{k}", "sentence",
                f"return len([w for w in sentence.split() if len(w) > {k}])",
                lambda q: (" ".join(q.sample(WORDS, q.randint(2, 6))),))


@template("loops", 2, list(range(2, 5)))
def repeat_chars(r: random.Random, k: int) -> Spec:
    text = f"Write a function to repeat every character of a string {k} times."
    return Spec(text, f"repeat_each_char_{k}", "s", f"return ''.join(c * {k} for c in s)", _string())


# --- dicts --------------------------------------------------------------------------------------------------------


@template("dicts", 2, [(op, k) for op in ("times", "plus") for k in range(2, 41)])
def dict_map(r: random.Random, op: str, k: int) -> Spec:
    text = f"Write a function to create a dictionary that maps each number in a list to that number {op} {k}."
    expr = f"x * {k}" if op == "times" else f"x + {k}"
    return Spec(text, f"map_{op}_{k}", "numbers", f"return {{x: {expr} for x in numbers}}",
                lambda q: (q.sample(range(0, 30), q.randint(2, 5)),))


_KEYS = ("name", "age", "city", "color", "score", "size", "id", "price")


@template("dicts", 2, [(key, default) for key in _KEYS for default in (0, -1, "'none'", "''")])
def dict_get(r: random.Random, key: str, default: str | int) -> Spec:
    text = f"Write a function to return the value of the key '{key}' in a dictionary, or {default} if it is missing."
    others = [k for k in _KEYS if k != key]

    def inputs(q: random.Random) -> Args:
        keys = q.sample(others, q.randint(1, 3)) + ([key] if q.random() < 0.5 else [])
        return ({k: q.randint(1, 99) for k in keys},)
    return Spec(text, f"get_{key}", "d", f"return d.get('{key}', {default})", inputs)


@template("dicts", 2, list(range(0, 6)))
def word_lengths(r: random.Random, k: int) -> Spec:
    which = "each word" if k == 0 else f"each word longer than {k} letters"
    text = f"Write a function to create a dictionary that maps {which} in a list to its length."
    cond = "" if k == 0 else f" if len(w) > {k}"
    return Spec(text, "word_lengths" if k == 0 else f"word_lengths_over_{k}", "words",
                f"return {{w: len(w) for w in words{cond}}}", lambda q: (q.sample(WORDS, q.randint(2, 5)),))


@template("dicts", 2, list(range(0, 31, 2)))
def keys_above(r: random.Random, k: int) -> Spec:
    text = f"Write a function to return a list of the keys of a dictionary whose values are greater than {k}."
    return Spec(text, f"keys_above_{k}", "d", f"return [key for key in d if d[key] > {k}]",
                lambda q: ({w: q.randint(max(0, k - 10), k + 10) for w in q.sample(WORDS, q.randint(2, 5))},))


@template("dicts", 2, list(_AGGREGATES)[:3])
def dict_values(r: random.Random, agg: str) -> Spec:
    what = {"largest": "the largest value", "smallest": "the smallest value", "sum": "the sum of the values"}[agg]
    text = f"Write a function to find {what} in a dictionary."
    return Spec(text, f"{_AGGREGATES[agg]}_of_values", "d", f"return {_AGGREGATES[agg]}(d.values())",
                lambda q: ({w: q.randint(0, 50) for w in q.sample(WORDS, q.randint(2, 5))},))


# --- math ---------------------------------------------------------------------------------------------------------


@template("math", 2, list(range(2, 41)))
def gcd_with(r: random.Random, k: int) -> Spec:
    text = f"Write a function to find the greatest common divisor of a number and {k}."
    return Spec(text, f"gcd_with_{k}", "n", f"import math\nreturn math.gcd(n, {k})", _multiple_or_not(k, 200))


@template("math", 1, list(range(2, 6)))
def power(r: random.Random, k: int) -> Spec:
    text = f"Write a function to raise a number to the power of {k}."
    return Spec(text, f"power_{k}", "n", f"return n ** {k}", _number(-5, 12))


@template("math", 1, list(range(1, 51)))
def square_plus(r: random.Random, k: int) -> Spec:
    text = f"Write a function that returns the square of a number plus {k}."
    return Spec(text, f"square_plus_{k}", "n", f"return n * n + {k}", _number(-10, 20))


@template("math", 2, [(a, b) for a in range(2, 10) for b in range(a + 1, 11)])
def divisible_by_both(r: random.Random, a: int, b: int) -> Spec:
    text = f"Write a function to check whether a number is divisible by both {a} and {b}."
    lcm = a * b // math.gcd(a, b)
    return Spec(text, f"divisible_by_{a}_and_{b}", "n", f"return n % {a} == 0 and n % {b} == 0",
                _multiple_or_not(lcm, 400))


@template("math", 2, list(range(2, 31)))
def round_down(r: random.Random, k: int) -> Spec:
    text = f"Write a function to round a number down to the nearest multiple of {k}."
    return Spec(text, f"round_down_to_{k}", "n", f"return n - n % {k}", _number(0, 300))


@template("math", 3, list(range(2, 31)))
def digit_sum_above(r: random.Random, k: int) -> Spec:
    text = f"Write a function to check whether the sum of the digits of a number is greater than {k}."
    return Spec(text, f"digit_sum_above_{k}", "n", f"return sum(int(d) for d in str(n)) > {k}",
                _number(10, 10 ** (k // 9 + 2)))


# --- generation ---------------------------------------------------------------------------------------------------


def split_of(template_name: str, key: tuple) -> str:
    """The split a semantic key belongs to, for every seed: 1 in 10 test, 1 in 10 validation, the rest train."""
    digest = hashlib.sha256(f"{template_name}:{key!r}".encode()).hexdigest()
    return _SPLIT_BUCKETS.get(int(digest, 16) % 10, "train")


def _call(reference: str, name: str, args: Args) -> object:
    """The reference's answer (trusted code: this module's own templates)."""
    namespace: dict = {}
    exec(reference, namespace)  # noqa: S102 - our own template code, never model output
    return namespace[name](*args)


def _asserts(spec: Spec, rng: random.Random, where: str) -> list[str]:
    """SHOWN_TESTS + HIDDEN_TESTS asserts on distinct inputs; neither the shown nor the hidden ones may all expect
    the same answer (three asserts of `== False` would reward `return False`)."""
    for _ in range(200):
        inputs: dict[str, Args] = {}
        for _ in range(1000):
            args = spec.inputs(rng)
            inputs.setdefault(repr(args), args)
            if len(inputs) == SHOWN_TESTS + HIDDEN_TESTS:
                break
        calls = [(", ".join(repr(a) for a in args), _call(spec.reference, spec.name, args)) for args in inputs.values()]
        shown, hidden = calls[:SHOWN_TESTS], calls[SHOWN_TESTS:]
        if len({repr(out) for _, out in shown}) > 1 and len({repr(out) for _, out in hidden}) > 1:
            return [f"assert {spec.name}({args}) == {out!r}" for args, out in calls]
    raise RuntimeError(f"{where}: no varied test inputs in 200 draws (a template bug)")


def make_task(tmpl: Template, key_index: int, seed: int, split: str) -> Task:
    """The task for one key of a template: wording and test inputs drawn from (seed, template, key)."""
    key = tmpl.keys[key_index]
    rng = random.Random(f"{seed}:{tmpl.name}:{key!r}")
    spec = tmpl.make(rng, *key)
    task_id = f"synth/{tmpl.name}/{key_index}"
    tests = _asserts(spec, rng, task_id)
    return Task(
        task_id=task_id,
        prompt=spec.text,
        entry_point=spec.name,
        tests=tuple(tests),
        test_format="mbpp",
        reference_solution=spec.reference,
        test_list_for_prompt=tuple(tests[:SHOWN_TESTS]),
        metadata={"family": tmpl.family, "template": tmpl.name, "difficulty": tmpl.difficulty, "split": split,
                  "key": list(key)},  # the seed and SYNTH_VERSION are in stats.json
    )


def _quota(per_template: int, split: str) -> int:
    return max(1, round(per_template * _SPLIT_SHARE[split]))


def generate(seed: int = DEFAULT_SEED, per_template: int = DEFAULT_PER_TEMPLATE) -> dict[str, list[Task]]:
    """Every split's tasks: per template, at most `per_template` keys in all (80/10/10 across the splits, fewer
    where a split holds fewer of the template's keys), each split in a seeded shuffled order (so that any prefix,
    as `--limit` takes, mixes the families)."""
    if per_template < 1:
        raise SynthError(f"--per-template must be at least 1, got {per_template}")
    out: dict[str, list[Task]] = {split: [] for split in SPLITS}
    for tmpl in TEMPLATES:
        by_split: dict[str, list[int]] = {split: [] for split in SPLITS}
        for i, key in enumerate(tmpl.keys):
            by_split[split_of(tmpl.name, key)].append(i)
        for split, indices in by_split.items():
            chosen = random.Random(f"{seed}:{tmpl.name}:{split}").sample(
                indices, min(len(indices), _quota(per_template, split)))
            out[split].extend(make_task(tmpl, i, seed, split) for i in sorted(chosen))
    for split, tasks in out.items():
        random.Random(f"{seed}:{split}").shuffle(tasks)
    return out


def stats(splits: dict[str, list[Task]], seed: int, per_template: int) -> dict:
    """Counts per split, family and template (stats.json)."""
    def count(field: str) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        for split, tasks in splits.items():
            for t in tasks:
                row = table.setdefault(t.metadata[field], {s: 0 for s in SPLITS})
                row[split] += 1
        return dict(sorted(table.items()))
    return {"synth_version": SYNTH_VERSION, "seed": seed, "per_template": per_template,
            "splits": {split: len(tasks) for split, tasks in splits.items()},
            "families": count("family"), "templates": count("template")}


def write(output: str | Path, seed: int = DEFAULT_SEED, per_template: int = DEFAULT_PER_TEMPLATE) -> dict:
    """Write train.jsonl, validation.jsonl, test.jsonl and stats.json under `output`; return the stats."""
    splits = generate(seed, per_template)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    for split, tasks in splits.items():
        lines = "".join(json.dumps(t.to_dict(), ensure_ascii=False) + "\n" for t in tasks)
        (output / SPLIT_FILES[split]).write_text(lines, encoding="utf-8")
    summary = stats(splits, seed, per_template)
    (output / STATS_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
