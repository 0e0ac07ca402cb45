"""Where the time of one SCoRe RL step goes: generation, grading, update (default model, MBPP train split).

    python perf/rl_step.py --mbpp_path /path/to/mbpp.jsonl [--steps 2] [--config RECIPE] [flags]

Runs the real trainer (score_code.train.score.train) for `--steps` stage-I steps into a temporary directory, with
score_code/recipes/cpu_default.yaml unless --config says otherwise, then reads the per-step `time/*` metrics.
Grading should stay under 10% of a step (the sandbox must not be the bottleneck of RL); the exit code is 1
when it does not.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRADING_BUDGET = 0.10  # fraction of a step


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from score_code.config import ScoreConfig
    from score_code.train.run_log import read_metrics
    from score_code.train.score import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="RL steps to time (the figures are their mean)")
    ScoreConfig.add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.config:
        args.config = str(REPO / "score_code" / "recipes" / "cpu_default.yaml")
    config = ScoreConfig.from_args(args, "python perf/rl_step.py")
    with tempfile.TemporaryDirectory(prefix="rl-step-") as tmp:
        config.apply({"output_dir": str(Path(tmp) / "run"), "schedule": "1",
                      "stage1_steps": args.steps, "save_steps": 10**9, "eval_steps": 0, "resume": False})
        rows = read_metrics(train(config))
    parts = {name: sum(r[f"time/{name}"] for r in rows) / len(rows) for name in ("generation", "grading", "update")}
    step_s = sum(r["time/step"] for r in rows) / len(rows)
    episodes = rows[0]["episodes"]
    print(f"\none RL step ({len(rows)} timed): {episodes:.0f} two-attempt episodes, "
          f"max_new_tokens {config.rollout.max_new_tokens}, model {config.model.model or 'default'}")
    print(f"{'part':<12}{'seconds':>10}{'fraction':>10}")
    for name, seconds in parts.items():
        print(f"{name:<12}{seconds:>10.2f}{seconds / step_s:>10.1%}")
    other = step_s - sum(parts.values())
    print(f"{'other':<12}{other:>10.2f}{other / step_s:>10.1%}")
    print(f"{'step':<12}{step_s:>10.2f}{1:>10.0%}")
    mean_len = sum(r["completions/mean_length"] for r in rows) / len(rows)
    print(f"mean completion length {mean_len:.0f} tokens; attempt-2 reward {rows[-1]['attempt2/reward']:.2f}")
    grading = parts["grading"] / step_s
    verdict = "OK" if grading < GRADING_BUDGET else "OVER BUDGET"
    print(f"grading {grading:.1%} of the step (budget {GRADING_BUDGET:.0%}): {verdict}")
    return 0 if grading < GRADING_BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
