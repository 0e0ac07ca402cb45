"""`score-code`: a thin dispatcher. Each subcommand module exposes `register(subparsers)`, which adds its parser
and sets `func` (args -> exit code); library errors are printed by the subcommand as `error: ...` + `hint: ...`.

    score-code eval humaneval|mbpp|PATH [--model ID_OR_PATH] ...    (score_code.eval_command)
    score-code train score|stage1|stage2|star|pair-sft ...           (score_code.train_command)
    score-code plot RUN_DIR                                          (score_code.train_command)
    score-code compare | repair ...                                  (score_code.baselines_command)
"""
from __future__ import annotations

import argparse
import sys

from score_code import baselines_command, eval_command, train_command

SUBCOMMAND_MODULES = (eval_command, train_command, baselines_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="score-code",
                                     description="Train and evaluate code models that fix their own programs (SCoRe).")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in SUBCOMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
