"""Generation throughput against this CPU's limit: peak GEMM GFLOP/s per dtype, then raw `model.generate` and the
harness's HFGenerator on the same prompts, in tok/s and as model FLOP utilisation (MFU) of that dtype's peak.

    python perf/generation_throughput.py [--model ID_OR_PATH] [--prompts 32] [--max-new-tokens 128] [--dtypes fp32,bf16]

HumanEval attempt-1 prompts (chat template), greedy, a fixed max_new_tokens and no stop strings, so raw and harness
decode the same sequences. The raw side gets the harness's own batches (prompts sorted by length, left-padded); the
harness overhead is what remains: encoding, the stop/EOS bookkeeping, cache merging, decoding, building Generations.
Both sides of a setting run back to back, --rounds times in alternating order, and the fastest run of each counts,
so load from other processes skews the comparison less. Targets: harness overhead <= 10%; the dtype that `--dtype
auto` picks on this CPU is the fastest. By default each dtype this CPU multiplies natively is measured (bf16 only
where it has AVX512-BF16 / AMX / Arm BF16: elsewhere bf16 is emulated). MFU counts 2 FLOPs per matmul weight and
token plus attention (perf/anchor.py) against the 2048^3 GEMM peak of the same dtype, measured first in this run.
On a machine shared with other jobs, OMP_NUM_THREADS=1 avoids OpenMP spin-wait collapse (all sides alike).
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from anchor import native_dtypes, peak_gemm, token_flops  # perf/anchor.py, beside this script

from benchmarks import prompts as prompt_lib
from benchmarks.generation import SamplingParams
from benchmarks.tasks import load_humaneval
from score_code.generation.hf import HFGenerator
from score_code.models import load_model


def raw_generate(model, tokenizer, batches: list[list[list[int]]], max_new_tokens: int, eos_ids: list[int]) -> int:
    """Plain model.generate over pre-built batches; returns the number of generated tokens (through EOS)."""
    pad_id = tokenizer.pad_token_id
    generated = 0
    for batch in batches:
        width = max(len(p) for p in batch)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos_ids, pad_token_id=pad_id)
        for row in out[:, width:].tolist():
            eos_at = next((k for k, t in enumerate(row) if t in eos_ids), None)
            generated += len(row) if eos_at is None else eos_at + 1
    return generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--prompts", type=int, default=32, help="HumanEval prompts")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="32", help="comma-separated, e.g. 1,8,32")
    parser.add_argument("--dtypes", default=None, help="comma-separated fp32,bf16 (default: the CPU's native ones)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/harness rounds; the fastest counts")
    args = parser.parse_args()

    from score_code.models import dtype_name, resolve_device, resolve_dtype

    dtypes = ([resolve_dtype(d, torch.device("cpu")) for d in args.dtypes.split(",")] if args.dtypes
              else native_dtypes())
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    loaded = load_model(args.model, dtype="fp32", device="cpu")
    tokenizer, config = loaded.tokenizer, loaded.model.config
    print(f"model {args.model or 'default'}, {torch.get_num_threads()} torch threads, load average "
          f"{os.getloadavg()[0]:.1f} at start; `--dtype auto` here: "
          f"{dtype_name(resolve_dtype('auto', resolve_device('cpu')))}")
    peaks = {dtype: peak_gemm(dtype, max(batch_sizes), config.hidden_size, config.intermediate_size)
             for dtype in dtypes}
    print("peak GEMM (this run):")
    for peak in peaks.values():
        print(peak.line())
    tasks = load_humaneval()[: args.prompts]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    dialogues = [prompt_lib.first_dialogue(t) for t in tasks]

    print(f"\n{'dtype':>9} {'batch':>5} {'tokens':>7} {'raw tok/s':>10} {'raw MFU':>8} {'harness tok/s':>14} "
          f"{'harness MFU':>12} {'overhead':>9}")
    for dtype in dtypes:
        model = (loaded.model if dtype == torch.float32  # as eval loads it (fp32 needs no float32 head)
                 else load_model(args.model, dtype=dtype_name(dtype), device="cpu", float32_logits=True).model)
        generator = HFGenerator(model, tokenizer)
        generator.generate(dialogues[:1], SamplingParams(max_new_tokens=4))  # warm-up
        encoded = [generator.encode(d) for d in dialogues]
        for batch_size in batch_sizes:
            generator.batch_size = batch_size
            order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))  # the harness's own batching
            batches = [[encoded[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
            raw_s, harness_s = [], []
            raw_tokens = harness_tokens = 0
            for round_no in range(args.rounds):
                for side in ("raw", "harness") if round_no % 2 == 0 else ("harness", "raw"):
                    start = time.perf_counter()
                    if side == "raw":
                        raw_tokens = raw_generate(model, tokenizer, batches, args.max_new_tokens, generator.eos_ids)
                        raw_s.append(time.perf_counter() - start)
                    else:
                        harness_tokens = sum(len(g.token_ids) for g in generator.generate(dialogues, params))
                        harness_s.append(time.perf_counter() - start)
            if raw_tokens != harness_tokens:
                print(f"warning: {dtype_name(dtype)} batch {batch_size}: raw generated {raw_tokens} tokens, "
                      f"harness {harness_tokens} (left padding changes the numerics of a few sequences)")
            context = sum(map(len, encoded)) / len(encoded) + args.max_new_tokens / 2
            flops = token_flops(config, context)
            raw_rate, harness_rate = raw_tokens / min(raw_s), harness_tokens / min(harness_s)
            peak = peaks[dtype].peak * 1e9
            print(f"{dtype_name(dtype):>9} {batch_size:>5} {harness_tokens:>7} {raw_rate:>10.1f} "
                  f"{raw_rate * flops / peak:>8.1%} {harness_rate:>14.1f} {harness_rate * flops / peak:>12.1%} "
                  f"{min(harness_s) / min(raw_s) - 1:>9.1%}", flush=True)
    print(f"{token_flops(config, 0) / 1e9:.3f} GFLOP per token before attention; load average "
          f"{os.getloadavg()[0]:.1f} at end (other processes slow every side alike)")


if __name__ == "__main__":
    main()
