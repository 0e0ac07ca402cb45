"""`score-code eval humaneval|mbpp|PATH`: model + generator + sandbox -> benchmarks.evaluate -> the results table.

Without --model the embedded default (SmolLM2-135M-Instruct) is used. The output directory (default
runs/eval-<dataset>[-limitN]-<model>) holds config.json, samples.jsonl, results.jsonl, metrics.json, report.md;
a rerun with the same settings resumes it, a rerun with other settings is refused by benchmarks.evaluate.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.tasks import MBPP_ENV_VAR, Task, TaskLoadError
from sandbox.cli import add_remote_arguments, positive


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="two-attempt self-correction evaluation on HumanEval, MBPP or a task file",
        description="Generate attempt 1, grade it in the sandbox, append the self-correction instruction, "
                    "generate attempt 2 (token-in/token-out), grade it; print Acc@t1, Acc@t2 and the transitions.")
    parser.add_argument("dataset", help="'humaneval', 'mbpp' (file from --mbpp-path or $SCORE_CODE_MBPP), "
                                        "or a path to an MBPP file or a task JSONL file")
    # Model and decoding
    add_model_arguments(parser)
    parser.add_argument("--attempts", type=int, default=2, help="attempts per sample (default: 2, the paper's)")
    parser.add_argument("--samples", type=int, default=1,
                        help="samples per task; > 1 gives pass@k (needs --temperature > 0)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default, as in the paper)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="per attempt (default: 512)")
    parser.add_argument("--no-stop-repeats", dest="stop_repeats", action="store_false",
                        help="let a completion that loops (a token chunk repeated back to back, or a function "
                             "defined again in the same code block) run on to --max-new-tokens (default: end it "
                             "there, benchmarks/stopping.py)")
    parser.add_argument("--round-size", type=int, default=128, metavar="N",
                        help="tasks per round: attempt 1 of all of them, grading, attempt 2, ...; results are saved "
                             "per round, so an interrupted run redoes at most one (default: 128)")
    parser.add_argument("--seed", type=int, default=0, help="base seed of sampling (default: 0)")
    parser.add_argument("--feedback", choices=("tests",), default=None,
                        help="show attempt t's first failing test before attempt t+1 (default: none, intrinsic)")
    # Data
    parser.add_argument("--split", default="test", help="MBPP split: test (default), train, validation, prompt, all")
    parser.add_argument("--limit", type=positive(int), default=None, metavar="N", help="only the first N tasks")
    parser.add_argument("--mbpp-path", default=None, metavar="FILE",
                        help=f"mbpp.jsonl or sanitized-mbpp.json for 'mbpp' (default: ${MBPP_ENV_VAR})")
    # Grading and output
    add_sandbox_arguments(parser)
    parser.add_argument("--output", default=None, metavar="DIR",
                        help="output directory (default: runs/eval-<dataset>[-limitN]-<model>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model flags shared by every command that generates (eval, repair-set eval)."""
    parser.add_argument("--model", default=None, metavar="ID_OR_PATH",
                        help="hub id (offline cache), HF checkpoint dir, LoRA adapter dir (a LoRA run's "
                             "checkpoint-N: applied over the base it records; hf backend) or .gguf file; default: "
                             "the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf", help="generation backend (default: hf)")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bf16 on a GPU or a CPU with native bf16, else fp32), fp32, bf16, fp16")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (hf backend)")
    parser.add_argument("--chat", choices=("auto", "yes", "no"), default="auto",
                        help="use the tokenizer's chat template (auto: when it has one) or plain prompts")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="sequences decoded together (hf backend; a finished one's slot goes to the next prompt at "
                             "once). Default 32: CPU decoding is memory-bound, so a step of 32 costs about 1.6x a "
                             "step of 8")


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """The grading flags shared by every command that evaluates generations (eval, repair-set eval)."""
    parser.add_argument("--sandbox", choices=("docker", "local", "remote"), default="docker",
                        help="docker (default, isolated), local (rlimits only: trusted code only) or remote (grader "
                             "hosts running `sandbox serve`; implied by --sandbox-url)")
    parser.add_argument("--workers", type=int, default=None,
                        help="programs graded in parallel (default: one per core; remote: the hosts' own)")
    add_remote_arguments(parser)
    parser.add_argument("--timeout-s", type=float, default=None, metavar="S",
                        help="flat timeout per program for every task (default: per task, the sandbox's limit, or 4 x "
                             "the reference solution's runtime if more: measured once per machine, cached)")


def sandbox_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Sandbox(**settings) as the grading flags (add_sandbox_arguments) ask for it; a bad URL or token file is
    refused here, so call it before loading a model."""
    from sandbox.remote_backend import sandbox_options

    return {**sandbox_options(args.sandbox, args.sandbox_url, args.sandbox_token_file), "workers": args.workers}


def _dataset_spec(args: argparse.Namespace) -> str:
    """'humaneval', a file path, or for 'mbpp' the file from --mbpp-path / $SCORE_CODE_MBPP."""
    if args.dataset != "mbpp":
        return args.dataset
    path = args.mbpp_path or os.environ.get(MBPP_ENV_VAR, "")
    if not path:
        raise TaskLoadError("'mbpp' needs the MBPP data file (mbpp.jsonl or sanitized-mbpp.json)",
                            hint=f"pass --mbpp-path FILE or set {MBPP_ENV_VAR}")
    return path


def dataset_name(args: argparse.Namespace, tasks: Sequence[Task]) -> str:
    """The dataset as recorded in config.json: 'humaneval', 'mbpp-original:test' or 'mbpp-sanitized:test' (which
    MBPP release the file holds), or the file name with its split."""
    if args.dataset == "humaneval":
        return "humaneval"
    base = Path(args.dataset).name
    if args.dataset == "mbpp":
        variants = sorted({str(t.metadata.get("mbpp_variant")) for t in tasks})
        base = "-".join(["mbpp", *variants])
    return f"{base}:{args.split}"


def default_output_dir(args: argparse.Namespace, tasks: Sequence[Task]) -> Path:
    from score_code.models import model_slug

    name = dataset_name(args, tasks).replace(":", "-").removesuffix(".jsonl").removesuffix(".json")
    limit = f"-limit{args.limit}" if args.limit else ""
    return Path("runs") / f"eval-{name}{limit}-{model_slug(args.model)}"


def _chat_flag(value: str) -> bool | None:
    return {"auto": None, "yes": True, "no": False}[value]


def _resolved_chat(args: argparse.Namespace) -> bool:
    """Whether prompts go through the chat template, decided as the generator will decide it."""
    from score_code.generation.encoding import resolve_chat
    from score_code.models import load_tokenizer

    return resolve_chat(load_tokenizer(args.model), _chat_flag(args.chat))


def compute_dtype(args: argparse.Namespace) -> str:
    """The dtype the generator will compute in, known before loading: "auto" as the hf backend resolves it; the vLLM
    engine resolves "auto" itself (the checkpoint's dtype)."""
    if args.backend == "vllm":
        return args.dtype
    from score_code.models import dtype_name, resolve_device, resolve_dtype

    return dtype_name(resolve_dtype(args.dtype, resolve_device(args.device)))


def build_generator(args: argparse.Namespace) -> Any:
    """The generator that the model flags (add_model_arguments) ask for."""
    from score_code.generation import make_generator

    return make_generator(args.backend, args.model, dtype=args.dtype, device=args.device,
                          batch_size=args.batch_size, chat=_chat_flag(args.chat), seed=args.seed,
                          progress=not args.no_progress)  # a round takes minutes on a CPU: show sequences finishing


def run(args: argparse.Namespace) -> int:
    from benchmarks.evaluate import EvalConfig, check_output_dir, evaluate
    from benchmarks.report import summary_table
    from benchmarks.tasks import load_shots, load_tasks
    from sandbox import Sandbox
    from score_code.models import DEFAULT_MODEL_NAME

    grader = sandbox_settings(args)
    spec = _dataset_spec(args)
    tasks = load_tasks(spec, args.split)[: args.limit]
    shots = load_shots(spec)
    output = Path(args.output) if args.output else default_output_dir(args, tasks)
    config = EvalConfig(
        dataset=dataset_name(args, tasks), attempts=args.attempts, samples=args.samples, temperature=args.temperature,
        top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed, feedback=args.feedback,
        timeout_s=args.timeout_s, round_size=args.round_size, model=args.model or DEFAULT_MODEL_NAME,
        chat=_resolved_chat(args), dtype=compute_dtype(args), stop_repeats=args.stop_repeats,
    )
    config = check_output_dir(output, config, tasks, shots)  # refuse a mismatched output dir before the slow load
    generator = build_generator(args)
    config = replace(config, chat=generator.chat)
    print(f"eval: {len(tasks)} tasks of {config.dataset}, model {config.model} ({args.backend}, "
          f"{'chat template' if config.chat else 'plain prompts'}), {args.attempts} attempts, "
          f"sandbox {grader['backend']}, timeouts {config.timeout_rule}, output {output}", file=sys.stderr)
    with Sandbox(**grader) as sandbox:
        metrics = evaluate(generator, tasks, sandbox, output, config, shots=shots, progress=not args.no_progress)
    print(summary_table(metrics))
    print(f"\nresults: {output}/results.jsonl, report: {output}/report.md")
    return 0
