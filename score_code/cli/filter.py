"""`score-code filter`: estimate each training task's pass rate under the base model at the training sampling
settings (k two-attempt episodes per task, both attempts graded) and keep the tasks with signal (score_code.signal).

    score-code filter --tasks mbpp --mbpp_path mbpp.jsonl --mbpp_shots 0 --temperature 1.0 --output runs/filter
    score-code train score --tasks runs/filter/tasks.jsonl --mbpp_shots 0 --temperature 1.0 ...
"""
from __future__ import annotations

import argparse
import json

from score_code.config import DataConfig, RolloutConfig, add_dataclass_arguments
from score_code.signal import FilterConfig, FilterRunConfig

DESCRIPTION = (
    "Sample k two-attempt episodes per task exactly as `score-code train` does (same prompts, instruction, stop "
    "strings; the data and rollout flags are the trainers'), grade both attempts in the sandbox and write to --output: "
    "rates.jsonl (per task pass rates p1, p2, syntax and sandbox errors, tokens), summary.json (pass rates, the "
    "signal fraction = tasks with 0 < p < 1 on some attempt, tokens/s, times), tasks.jsonl (the tasks with signal, "
    "a task file for `train --tasks`) and episodes.jsonl (every graded trace). Rerun the same command to resume. "
    "SCoRe trains at top_p 1.0 only; other top_p values are for measurement.")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("filter", help="estimate pass rates per task; keep the tasks with learning signal",
                                   description=DESCRIPTION)
    for name, cls in (("data", DataConfig), ("rollout", RolloutConfig), ("run", FilterRunConfig)):
        add_dataclass_arguments(parser.add_argument_group(name), cls)
    parser.set_defaults(func=_filter)


def config_from_args(args: argparse.Namespace) -> FilterConfig:
    """Defaults, then the flags given (argparse has typed them)."""
    config = FilterConfig()
    for group in ("data", "rollout", "run"):
        values = getattr(config, group)
        for key, value in vars(args).items():
            if hasattr(values, key):
                setattr(values, key, value)
    return config.validate()


def _filter(args: argparse.Namespace) -> int:
    from benchmarks.timeouts import calibrated_timeouts
    from sandbox import Sandbox
    from score_code.generation import make_generator
    from score_code.signal import estimate_signal
    from score_code.train.common import load_training_tasks
    from score_code.train.rollout import SandboxReward

    config = config_from_args(args)
    run, rollout = config.run, config.rollout
    tasks, shots = load_training_tasks(config.data)

    def generator():
        return make_generator("hf", run.model, dtype=run.dtype, batch_size=rollout.generation_batch_size,
                              seed=run.seed)

    with Sandbox(**run.sandbox_options()) as sandbox:
        flat = run.sandbox_timeout_s or None
        timeouts = {} if flat else calibrated_timeouts(sandbox, tasks)
        summary = estimate_signal(config, tasks, shots, generator, SandboxReward(sandbox, timeouts, flat))
    keys = ("tasks", "pass_rate1", "pass_rate2", "signal_tasks", "signal_fraction", "syntax_error_rate1",
            "syntax_error_rate2", "sandbox_errors", "tokens_per_s", "wall_s")
    print(json.dumps({k: summary[k] for k in keys}))
    return 0
