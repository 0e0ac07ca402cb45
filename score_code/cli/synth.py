"""`score-code synth --output DIR`: write the synthetic MBPP-style task family (benchmarks/synth.py) to task files.

The generator is in benchmarks.synth (standard library only); this module only parses the flags and prints where the
files went.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from benchmarks.synth import DEFAULT_PER_TEMPLATE, DEFAULT_SEED

    parser = subparsers.add_parser(
        "synth", help="generate the synthetic task family: train/validation/test task files and stats.json",
        description="Write DIR/train.jsonl, validation.jsonl, test.jsonl (task files, test_format mbpp: a sentence, "
                    "3 shown asserts and 3 hidden ones) and DIR/stats.json (counts per split, family and template). "
                    "Validation and test hold functions that no training task asks for, for every seed. The same "
                    "seed and --per-template give byte-identical files.")
    parser.add_argument("--output", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"picks the keys, wording and test inputs; never a key's split (default {DEFAULT_SEED})")
    parser.add_argument("--per-template", type=int, default=DEFAULT_PER_TEMPLATE,
                        help=f"at most N tasks per template over the three splits, 80/10/10 (default "
                             f"{DEFAULT_PER_TEMPLATE})")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.synth import SPLIT_FILES, write

    summary = write(args.output, args.seed, args.per_template)
    for split, count in summary["splits"].items():
        print(f"{args.output / SPLIT_FILES[split]}: {count} tasks")
    print(f"{args.output / 'stats.json'}: {len(summary['families'])} families, {len(summary['templates'])} templates")
    return 0
