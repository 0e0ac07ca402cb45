"""CLI for the baselines: `train star`, `train pair-sft`, `compare`, `repair-set build` and `repair-set eval`.

`register(subparsers)` adds `compare` and `repair-set` to the top-level parser; `register_train(train_subparsers)`
adds `star` and `pair-sft` to the `train` group. Library errors are typed; they are printed here once as
`error: ...` plus a `hint: ...` with the next command to run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from score_code.console import fail
from score_code.eval_command import add_model_arguments

SELF_REFINE_NOTE = ("Self-Refine (the paper's prompting baseline) needs no training: it is the base model under "
                    "`score-code eval`, whose second attempt answers the instruction p1.")


# --- train star / train pair-sft ---------------------------------------------------------------------------------


def register_train(train_subparsers: argparse._SubParsersAction) -> None:
    from score_code.sft import add_sft_arguments

    descriptions = {
        "star": ("STaR for self-correction: rounds of [sample k two-attempt traces per task from the current model "
                 "at temperature 1.0 -> keep incorrect->correct traces (--plus: also correct->correct) -> SFT on "
                 "attempt 2]; --iterations rounds (paper: 3)."),
        "pair-sft": ("Pair-SFT: one round of sampling, then SFT for --epochs (paper: 1) on pairs of an incorrect "
                     "attempt and a random correct attempt of the same problem (--plus: also correct + correct)."),
    }
    for method, text in descriptions.items():
        parser = train_subparsers.add_parser(
            method, help=text.split(":")[0] + " baseline (supervised)",
            description=f"{text} Output: iteration-N/samples (graded traces), iteration-N/data (the SFT records, "
                        f"stats.json), checkpoint-N, metrics.jsonl, tensorboard/. {SELF_REFINE_NOTE}")
        add_sft_arguments(parser)
        parser.set_defaults(func=_train_command, method=method)


def _train_command(args: argparse.Namespace) -> int:
    from score_code.sft import sft_from_args, train_baseline
    from score_code.train_command import run_training

    def body() -> None:
        config, sft = sft_from_args(args)
        train_baseline(args.method, config, sft)

    return run_training(f"score-code train {args.method}", body)


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
    compare.add_argument("--force", action="store_true", help="replace an existing comparison in --output")
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
    run.add_argument("--sandbox", choices=("docker", "local"), default="docker",
                     help="docker (default, isolated) or local (rlimits only: trusted code only)")
    run.add_argument("--workers", type=int, default=None, help="programs graded in parallel (default: one per core)")
    run.add_argument("--timeout-s", type=float, default=None, help="per program (default: the sandbox's limit)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=_repair_eval_command)


def _compare_command(args: argparse.Namespace) -> int:
    from score_code.compare import CompareError, compare

    try:
        text = compare(args.runs, args.output, labels=args.labels, force=args.force)
    except CompareError as e:
        return fail(str(e), "each RUN_DIR must be an output directory of `score-code eval` or `repair-set eval`")
    print(text)
    print(f"wrote {Path(args.output) / 'comparison.md'} and {Path(args.output) / 'comparison.png'}")
    return 0


def _repair_build_command(args: argparse.Namespace) -> int:
    import json

    from benchmarks.tasks import TaskLoadError, load_shots, load_tasks
    from score_code.baselines import BaselineDataError
    from score_code.repair import RepairSetError, build_repair_set

    try:
        tasks = load_tasks(args.tasks, args.split)
        evaluated = _evaluated_task_ids(Path(args.eval_dir))
        tasks = [t for t in tasks if t.task_id in evaluated]  # the evaluation may have run a subset, in order
        manifest = build_repair_set(args.eval_dir, tasks, load_shots(args.tasks), args.output)
    except (TaskLoadError, BaselineDataError, RepairSetError, OSError, json.JSONDecodeError) as e:
        return fail(str(e), "pass the --tasks and --split the evaluation used")
    counts = manifest["counts"]
    print(f"{args.output}: {counts['items']} wrong programs from {counts['problems']} problems "
          f"({counts['attempt1_failing']} failing attempt-1 samples, {counts['empty_programs']} empty, "
          f"{counts['sandbox_errors']} sandbox errors skipped)")
    return 0


def _evaluated_task_ids(eval_dir: Path) -> set[str]:
    from benchmarks.evaluate import RESULTS_FILE
    from benchmarks.jsonl import read_jsonl

    return {str(r["task_id"]) for r in read_jsonl(eval_dir / RESULTS_FILE).records}


def _repair_eval_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from benchmarks.evaluate import EvalConfig, EvalError
    from benchmarks.report import summary_table
    from sandbox import Sandbox, SandboxError
    from score_code.eval_command import build_generator
    from score_code.generation import DialogueEncodingError
    from score_code.generation.vllm import VLLMUnavailable
    from score_code.models import ModelLoadError
    from score_code.repair import RepairSetError, evaluate_repair

    try:
        config = EvalConfig(max_new_tokens=args.max_new_tokens, seed=args.seed, timeout_s=args.timeout_s)
        generator, model_name = build_generator(args)
        config = replace(config, model=model_name, chat=generator.chat)
        with Sandbox(backend=args.sandbox, workers=args.workers) as sandbox:
            metrics = evaluate_repair(generator, args.repair_dir, sandbox, args.output, config,
                                      progress=not args.no_progress)
    except (ModelLoadError, SandboxError, VLLMUnavailable, DialogueEncodingError) as e:
        return fail(str(e), getattr(e, "hint", "") or "")
    except RepairSetError as e:
        return fail(str(e), "build the set with `score-code repair-set build EVAL_DIR --tasks ... --output DIR`")
    except ValueError as e:  # EvalConfig's checks
        return fail(str(e), "see `score-code repair-set eval --help`")
    except EvalError as e:
        return fail(str(e), "pass another --output directory, or the same settings to resume")
    print(summary_table(metrics))
    print(f"repair accuracy: {100 * metrics['repair_accuracy']:.1f}% ({metrics['repaired']} of "
          f"{metrics['n_programs']} programs fixed); results in {args.output}")
    return 0
