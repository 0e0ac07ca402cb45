"""One SCoRe RL step against this CPU's limit: where the time goes (generation, grading, update) for each compute
dtype, and the update's model FLOP utilisation (MFU) of that dtype's peak GEMM rate, measured first in this run.

    python perf/rl_step.py --mbpp_path /path/to/mbpp.jsonl [--steps 1] [--dtypes float32,bfloat16] [--config RECIPE]

Runs the real trainer (score_code.train.score.train) for `--steps` stage-I steps into a temporary directory, once per
dtype, with score_code/recipes/cpu_default.yaml unless --config says otherwise; trained weights and the optimizer
state stay float32 whatever the compute dtype (bf16 is autocast). The same seed gives the same tasks and sampling
seeds to every dtype; the sampled episodes still differ a little, since sampling runs in the compute dtype. By
default each dtype this CPU multiplies natively is measured. The update's FLOPs: per real token, 2 per matmul weight
(perf/anchor.py) for the reference forward, 6 for the policy's forward and backward, 2 more when gradient
checkpointing recomputes the forward. Grading should stay under 10% of a step (the sandbox must not be the
bottleneck of RL); the exit code is 1 when it does not.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from anchor import native_dtypes, peak_gemm, token_flops  # perf/anchor.py, beside this script

REPO = Path(__file__).resolve().parents[1]
GRADING_BUDGET = 0.10  # fraction of a step
PARTS = ("generation", "grading", "update")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from score_code.config import ScoreConfig
    from score_code.models import dtype_name, load_model, resolve_dtype
    from score_code.train.run_log import read_metrics
    from score_code.train.score import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1, help="RL steps to time per dtype (the figures are their mean)")
    parser.add_argument("--dtypes", default=None,
                        help="comma-separated compute dtypes, e.g. float32,bfloat16 (default: the CPU's native ones)")
    ScoreConfig.add_arguments(parser)
    args = parser.parse_args(argv)
    if not args.config:
        args.config = str(REPO / "score_code" / "recipes" / "cpu_default.yaml")
    dtypes = ([resolve_dtype(d, torch.device("cpu")) for d in args.dtypes.split(",")] if args.dtypes
              else native_dtypes())

    base = ScoreConfig.from_args(args, "python perf/rl_step.py")
    model_config = load_model(base.model.model or None, dtype="fp32", device="cpu").model.config
    peaks = {dtype: peak_gemm(dtype, base.optim.micro_batch_size * 512, model_config.hidden_size,
                              model_config.intermediate_size) for dtype in dtypes}
    print("peak GEMM (this run; the second figure at a training micro-batch's shape):")
    for peak in peaks.values():
        print(peak.line())

    rows_by_dtype = {}
    for dtype in dtypes:
        config = ScoreConfig.from_args(args, "python perf/rl_step.py")
        with tempfile.TemporaryDirectory(prefix="rl-step-") as tmp:
            config.apply({"output_dir": str(Path(tmp) / "run"), "schedule": "1", "dtype": dtype_name(dtype),
                          "stage1_steps": args.steps, "save_steps": 10**9, "eval_steps": 0, "resume": False})
            print(f"\n{dtype_name(dtype)}: {args.steps} step(s) of the trainer ...", file=sys.stderr, flush=True)
            rows_by_dtype[dtype] = read_metrics(train(config))

    # in units of one forward's 2 FLOPs per weight: the policy's forward and backward (+ the recomputed forward),
    # and the reference's forward (with LoRA: the policy with its adapter off)
    passes = (8 if base.model.gradient_checkpointing else 6) + 2
    print(f"\none RL step per dtype: {base.rollout.prompts_per_step * base.rollout.samples_per_prompt} two-attempt "
          f"episodes, max_new_tokens {base.rollout.max_new_tokens}, model {base.model.model or 'default'}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'dtype':>9} {'generation s':>13} {'grading s':>10} {'update s':>9} {'step s':>8} {'update tok':>11} "
          f"{'update MFU':>11} {'step vs first':>14}")
    first_step = None
    over_budget = False
    for dtype, rows in rows_by_dtype.items():
        mean = {name: sum(r[f"time/{name}"] for r in rows) / len(rows) for name in (*PARTS, "step")}
        tokens = sum(r["update/tokens"] for r in rows) / len(rows)
        context = tokens / (base.rollout.prompts_per_step * base.rollout.samples_per_prompt) / 2
        flops = tokens * token_flops(model_config, context) / 2 * passes  # token_flops counts 2 per weight
        mfu = flops / mean["update"] / (peaks[dtype].peak * 1e9)
        first_step = first_step or mean["step"]
        print(f"{dtype_name(dtype):>9} {mean['generation']:>13.1f} {mean['grading']:>10.2f} {mean['update']:>9.1f} "
              f"{mean['step']:>8.1f} {tokens:>11.0f} {mfu:>11.1%} {mean['step'] / first_step:>14.2f}")
        over_budget |= mean["grading"] / mean["step"] >= GRADING_BUDGET
        print(f"{'':>9} attempt-1 reward {rows[-1]['attempt1/reward']:.2f}, attempt-2 reward "
              f"{rows[-1]['attempt2/reward']:.2f}, loss {rows[-1]['loss']:.4g}, grad_norm {rows[-1]['grad_norm']:.3g}")
    print(f"grading {'over' if over_budget else 'under'} {GRADING_BUDGET:.0%} of every step: "
          f"{'OVER BUDGET' if over_budget else 'OK'}")
    return 1 if over_budget else 0


if __name__ == "__main__":
    raise SystemExit(main())
