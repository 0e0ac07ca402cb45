"""`score-code grade SAMPLES.jsonl --problems humaneval|mbpp|PATH`: grade existing samples, print pass@k.

The dataset-aware counterpart of `sandbox grade` (which takes generic task files only and reports pass@1). The flags
are `sandbox grade`'s; benchmarks.grade is imported when the command runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sandbox.cli import add_grading_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "grade", help="grade a samples JSONL file against HumanEval, MBPP or a task file; print pass@k",
        description="Grade each sample in the sandbox, write one result row per sample and print per-status "
                    "counts and pass@k for every k up to the smallest number of samples of a task. Rejected "
                    "lines are named (file, line, field) and make the exit code 1; the others are still graded.")
    parser.add_argument("samples", type=Path,
                        help="JSONL: task_id + completion (appended to the HumanEval prompt; the whole program "
                             "otherwise) or solution (the whole program); MBPP task_ids may be 2, \"2\" or \"Mbpp/2\"")
    parser.add_argument("--problems", required=True,
                        help="humaneval | mbpp (the file named by $SCORE_CODE_MBPP) | PATH of an MBPP file or a "
                             "task file")
    add_grading_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Grade, print each rejected line and the summary; 1 if lines were rejected. Errors go up to the runner."""
    from benchmarks.grade import format_summary, grade_samples_file

    report = grade_samples_file(args.samples, args.problems, args.output, backend=args.backend,
                                workers=args.workers, timeout_s=args.timeout, sandbox_url=args.sandbox_url,
                                sandbox_token_file=args.sandbox_token_file, overwrite=args.overwrite,
                                progress=not args.no_progress)
    for error in report.rejected:
        print(f"error: {error}", file=sys.stderr)
    print(format_summary(report))
    return report.exit_code

