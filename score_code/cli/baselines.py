"""`score-code compare RUN_DIR...` (the paper-style table of evaluation runs) and `score-code repair-set
build|eval` (the MBPP-R analogue). The trainers of the baselines are under `score-code train` (cli/train.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from score_code.cli.eval import add_model_arguments, add_sandbox_arguments, build_generator, sandbox_settings
from score_code.cli.train import SELF_REFINE_NOTE

# --- compare -------------------------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    compare = subparsers.add_parser(
        "compare", help="side-by-side table and bar chart of evaluation runs",
        description="Print and write the paper-style table (method, MBPP-R when a repair run is given, Acc@t1, "
                    "Acc@t2, Delta, Delta i->c, Delta c->i) of evaluation output directories, plus a grouped bar "
                    "chart. A repair run (`score-code repair-set eval`) fills the MBPP-R column of the row with "
                    f"the same label. {SELF_REFINE_NOTE}")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR", help="output directories holding metrics.json")
    compare.add_argument("--labels", nargs="+", metavar="LABEL",
                         help="one method name per RUN_DIR (default: the evaluated model from each run's config)")
    compare.add_argument("--output", default="comparison", metavar="DIR",
                         help="where comparison.md and comparison.png go (default: ./comparison)")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing comparison in --output")
    compare.add_argument("--allow-mismatch", action="store_true",
                         help="compare runs made on other data (dataset hash) or with other decoding settings; "
                              "without it they are refused. The differences are printed under the table")
    compare.set_defaults(func=_compare_command)

    repair = subparsers.add_parser(
        "repair-set", help="build and evaluate an offline repair set (the MBPP-R analogue)",
        description="MBPP-R analogue: `build` fixes a set of (problem, wrong program) pairs from a model's failing "
                    "attempt-1 programs in an evaluation directory; `eval` gives a model one repair attempt on each "
                    "(problem prompt, the wrong program as its previous answer, the instruction p1).")
    actions = repair.add_subparsers(dest="repair_action", required=True, metavar="{build,eval}")
    build = actions.add_parser("build", help="fix a repair set from an evaluation directory")
    build.add_argument("eval_dir", metavar="EVAL_DIR", help="output directory of `score-code eval` (e.g. on MBPP)")
    build.add_argument("--tasks", required=True, help="the tasks that evaluation used: mbpp, humaneval or a path")
    build.add_argument("--split", default="test", help="their split (default: test)")
    build.add_argument("--output", required=True, metavar="DIR", help="new directory for items.jsonl + manifest.json")
    build.set_defaults(func=_repair_build_command)

    run = actions.add_parser("eval", help="one greedy repair attempt per item; writes metrics.json with "
                                          "repair_accuracy",
                             description="Flags as in `score-code eval`. The output directory resumes like an eval's.")
    run.add_argument("repair_dir", metavar="REPAIR_DIR", help="a directory written by `repair-set build`")
    run.add_argument("--output", required=True, metavar="DIR", help="evaluation output directory (resumable)")
    add_model_arguments(run)
    run.add_argument("--max-new-tokens", type=int, default=512, help="for the repair attempt (default: 512)")
    run.add_argument("--seed", type=int, default=0, help="seed recorded with the run (decoding is greedy)")
    add_sandbox_arguments(run)
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_repair_eval_command)


def _compare_command(args: argparse.Namespace) -> int:
    from benchmarks.compare import compare

    print(compare(args.runs, args.output, labels=args.labels, overwrite=args.overwrite,
                  allow_mismatch=args.allow_mismatch))
    print(f"wrote {Path(args.output) / 'comparison.md'} and {Path(args.output) / 'comparison.png'}")
    return 0


def _repair_build_command(args: argparse.Namespace) -> int:
    from benchmarks.evaluate import RESULTS_FILE
    from benchmarks.jsonl import read_jsonl
    from benchmarks.tasks import load_shots, load_tasks
    from score_code.baselines.repair import build_repair_set

    tasks = load_tasks(args.tasks, args.split)
    evaluated = {str(r["task_id"]) for r in read_jsonl(Path(args.eval_dir) / RESULTS_FILE).records}
    tasks = [t for t in tasks if t.task_id in evaluated]  # the evaluation may have run a subset, in order
    manifest = build_repair_set(args.eval_dir, tasks, load_shots(args.tasks), args.output)
    counts = manifest["counts"]
    print(f"{args.output}: {counts['items']} wrong programs from {counts['problems']} problems "
          f"({counts['attempt1_failing']} failing attempt-1 samples, {counts['empty_programs']} empty, "
          f"{counts['sandbox_errors']} sandbox errors skipped)")
    return 0


def _repair_eval_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from benchmarks.evaluate import EvalConfig
    from benchmarks.report import summary_table
    from sandbox import Sandbox
    from score_code.baselines.repair import evaluate_repair
    from score_code.models import DEFAULT_MODEL_NAME

    config = EvalConfig(max_new_tokens=args.max_new_tokens, seed=args.seed, timeout_s=args.timeout_s,
                        model=args.model or DEFAULT_MODEL_NAME)
    grader = sandbox_settings(args)
    generator = build_generator(args)
    config = replace(config, chat=generator.chat)
    with Sandbox(**grader) as sandbox:
        metrics = evaluate_repair(generator, args.repair_dir, sandbox, args.output, config,
                                  progress=not args.no_progress)
    print(summary_table(metrics))
    print(f"repair accuracy: {100 * metrics['repair_accuracy']:.1f}% ({metrics['repaired']} of "
          f"{metrics['n_programs']} programs fixed); results in {args.output}")
    return 0
