"""`score-code train score|stage1|stage2` (SCoRe), `train star|pair-sft` (the supervised baselines) and
`score-code plot RUN_DIR` (training curves). Each trainer's flags come from its config class (score_code.config)."""
from __future__ import annotations

import argparse
from pathlib import Path

from score_code.config import ScoreConfig, SFTConfig

SCORE_COMMANDS = {
    "score": ("SCoRe: stage I then stage II (or the --schedule, e.g. 1,2,1,2 interleaved)", None),
    "stage1": ("SCoRe stage I only: policy gradient on attempt 2, strong KL (beta2) on attempt 1", "1"),
    "stage2": ("SCoRe stage II only, usually --init-from a stage-I checkpoint: shaped reward on both attempts", "2"),
}
SFT_COMMANDS = {
    "star": ("STaR for self-correction: rounds of [sample k two-attempt traces per task from the current model at "
             "temperature 1.0 -> keep incorrect->correct traces (--plus: also correct->correct) -> SFT on attempt 2]; "
             "--iterations rounds (paper: 3)."),
    "pair-sft": ("Pair-SFT: one round of sampling, then SFT for --epochs (paper: 1) on pairs of an incorrect attempt "
                 "and a random correct attempt of the same problem (--plus: also correct + correct)."),
}
SELF_REFINE_NOTE = ("Self-Refine (the paper's prompting baseline) needs no training: it is the base model under "
                    "`score-code eval`, whose second attempt answers the instruction p1.")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a model to self-correct (SCoRe, or a baseline)",
                                  description="Train with SCoRe (score, stage1, stage2) or a baseline "
                                              "(star, pair-sft).")
    train_subparsers = train.add_subparsers(dest="train_command", required=True)
    for name, (text, schedule) in SCORE_COMMANDS.items():
        parser = train_subparsers.add_parser(
            name, help=text, description=f"{text}. Settings: defaults < --config recipe < flags.")
        ScoreConfig.add_arguments(parser)
        parser.set_defaults(func=_train_score, schedule_override=schedule)
    for method, text in SFT_COMMANDS.items():
        parser = train_subparsers.add_parser(
            method, help=text.split(":")[0] + " baseline (supervised)",
            description=f"{text} Output: iteration-N/samples (graded traces), iteration-N/data (the SFT records, "
                        f"stats.json), checkpoint-N, metrics.jsonl, tensorboard/. {SELF_REFINE_NOTE} "
                        "Settings: defaults < --config recipe (SCoRe-only keys in it are skipped) < flags.")
        SFTConfig.add_arguments(parser)
        parser.set_defaults(func=_train_sft, method=method)

    plot = subparsers.add_parser("plot", help="draw a training run's curves to PNG",
                                 description="Reward per attempt, delta, KL per attempt and loss from "
                                             "RUN_DIR/metrics.jsonl.")
    plot.add_argument("run_dir", help="a training run directory (holds metrics.jsonl)")
    plot.add_argument("--output", default="", help="PNG path (default: RUN_DIR/training_curves.png)")
    plot.set_defaults(func=_plot)


def _train_score(args: argparse.Namespace) -> int:
    from score_code.train.score import train

    command = f"score-code train {args.train_command}"
    if args.schedule_override is not None:
        args.schedule = args.schedule_override  # `train stage1` / `train stage2` fix the schedule
    train(ScoreConfig.from_args(args, command))
    return 0


def _train_sft(args: argparse.Namespace) -> int:
    from score_code.train.sft import train_baseline

    train_baseline(args.method, SFTConfig.from_args(args, f"score-code train {args.method}"))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from score_code.train.plot import plot_run

    print(plot_run(Path(args.run_dir), Path(args.output) if args.output else None))
    return 0
