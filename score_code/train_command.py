"""CLI: `score-code train score|stage1|stage2` (SCoRe) and `score-code plot RUN_DIR` (training curves).

`register(subparsers)` adds both to the top-level parser; the `train` group also gets the baselines' `star` and
`pair-sft` (score_code.baselines_command.register_train). Library errors are typed; they are printed here once as
`error: ...` plus a `hint: ...`, with exit code 2.
"""
from __future__ import annotations

import argparse
from typing import Callable

from score_code.console import fail

TRAIN_COMMANDS = {
    "score": ("SCoRe: stage I then stage II (or the --schedule, e.g. 1,2,1,2 interleaved)", None),
    "stage1": ("SCoRe stage I only: policy gradient on attempt 2, strong KL (beta2) on attempt 1", "1"),
    "stage2": ("SCoRe stage II only, usually --init-from a stage-I checkpoint: shaped reward on both attempts", "2"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from score_code import config as cfg
    from score_code.baselines_command import register_train

    train = subparsers.add_parser("train", help="train a model to self-correct (SCoRe, or a baseline)",
                                  description="Train with SCoRe (score, stage1, stage2) or a baseline (star, pair-sft).")
    train_subparsers = train.add_subparsers(dest="train_command", required=True)
    for name, (text, schedule) in TRAIN_COMMANDS.items():
        parser = train_subparsers.add_parser(
            name, help=text, description=f"{text}. Settings: defaults < --config recipe < flags.")
        cfg.add_arguments(parser)
        parser.set_defaults(func=_train, schedule_override=schedule)
    register_train(train_subparsers)

    plot = subparsers.add_parser("plot", help="draw a training run's curves to PNG",
                                 description="Reward per attempt, delta, KL per attempt and loss from RUN_DIR/metrics.jsonl.")
    plot.add_argument("run_dir", help="a training run directory (holds metrics.jsonl)")
    plot.add_argument("--output", default="", help="PNG path (default: RUN_DIR/training_curves.png)")
    plot.set_defaults(func=_plot)


def run_training(command: str, body: Callable[[], None]) -> int:
    """Run a training command's `body`; the library's typed errors become one `error:`/`hint:` message (exit 2).
    Shared by the SCoRe and the baseline trainers, which fail in the same ways."""
    from benchmarks.evaluate import EvalError
    from benchmarks.tasks import TaskLoadError
    from sandbox import SandboxError
    from score_code.baselines import BaselineDataError
    from score_code.checkpoint import CheckpointError
    from score_code.config import ConfigError
    from score_code.generation.vllm import VLLMUnavailable
    from score_code.models import ModelLoadError
    from score_code.train import TrainError

    try:
        body()
    except ConfigError as e:
        return fail(str(e), f"see `{command} --help`")
    except TaskLoadError as e:
        return fail(str(e), "pass --mbpp_path /path/to/mbpp.jsonl, or --tasks FILE.jsonl")
    except (ModelLoadError, SandboxError, VLLMUnavailable) as e:
        return fail(str(e), getattr(e, "hint", "") or "")
    except (TrainError, CheckpointError, EvalError, BaselineDataError) as e:
        return fail(str(e))
    return 0


def _train(args: argparse.Namespace) -> int:
    from score_code.config import apply_overrides, from_args
    from score_code.train import train

    command = f"score-code train {args.train_command}"

    def body() -> None:
        config = from_args(args)
        if args.schedule_override is not None:
            apply_overrides(config, {"schedule": args.schedule_override}, source=command)
        train(config)

    return run_training(command, body)


def _plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from score_code.plot import PlotError, plot_run

    try:
        out = plot_run(Path(args.run_dir), Path(args.output) if args.output else None)
    except PlotError as e:
        return fail(str(e), "pass the --output_dir of a `score-code train` run")
    print(out)
    return 0
