"""`score-code`: the command table and one guarded runner. Registering a command imports no torch: each command
module adds its parser with `register(subparsers)` and sets `func` (args -> exit code), importing the library
only when the command runs.

    score-code eval humaneval|mbpp|PATH [--model ID_OR_PATH] ...        (cli/eval.py)
    score-code grade SAMPLES.jsonl --problems humaneval|mbpp|PATH ...     (cli/grade.py)
    score-code train score|stage1|stage2|star|pair-sft ...               (cli/train.py)
    score-code filter --tasks mbpp|PATH --output DIR ...                  (cli/filter.py)
    score-code plot RUN_DIR                                              (cli/train.py)
    score-code compare RUN_DIR... | repair-set build|eval ...            (cli/baselines.py)
    score-code synth --output DIR [--seed N] [--per-template N]          (cli/synth.py)

Library errors carry their own hint (ScoreCodeError, SandboxError); `main` prints them once as `error: ...` and
`hint: ...` on stderr, with exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from benchmarks.errors import ScoreCodeError
from sandbox.errors import SandboxError
from score_code.cli import baselines, grade, synth, train
from score_code.cli import eval as eval_command
from score_code.cli import filter as filter_command

COMMAND_MODULES = (eval_command, grade, train, filter_command, baselines, synth)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="score-code",
                                     description="Train and evaluate code models that fix their own programs (SCoRe).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def fail(message: str, hint: str = "") -> int:
    """Print the error (and the command or flag that fixes it) and return the CLI's exit code for failures."""
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return 2


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (tests and callers may swap it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_library_logs() -> None:
    """The project's INFO lines (a resumed run, timeouts being measured) reach stderr; other libraries' loggers keep
    their own settings. Idempotent: tests call main() many times."""
    for name in ("sandbox", "benchmarks", "score_code"):
        log = logging.getLogger(name)
        if not any(isinstance(h, _StderrHandler) for h in log.handlers):
            log.addHandler(_StderrHandler())
        log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    show_library_logs()
    try:
        return int(args.func(args))
    except (ScoreCodeError, SandboxError) as e:
        return fail(str(e), e.hint)
    except OSError as e:  # an unreadable input or unwritable output: the message names the file
        return fail(str(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
