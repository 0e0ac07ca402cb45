"""Generation throughput of HFGenerator vs raw `model.generate` on the same prompts, batches and settings.

    python perf/generation_throughput.py [--model ID_OR_PATH] [--prompts 32] [--max-new-tokens 128]

HumanEval attempt-1 prompts (chat template), greedy, a fixed max_new_tokens and no stop strings, so both sides
produce the same tokens. The raw side gets the harness's own batches (prompts sorted by length, left-padded);
the harness overhead is what remains: encoding, the stop/EOS bookkeeping, decoding, building Generations.
Both sides of a batch size run back to back, --rounds times in alternating order, and the fastest run of each
counts, so load from other processes on the machine skews the comparison less. Target: overhead <= 10%.
On a machine shared with other jobs, OMP_NUM_THREADS=1 avoids OpenMP spin-wait collapse (both sides alike).
"""
from __future__ import annotations

import argparse
import os
import time

import torch

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
    parser.add_argument("--prompts", type=int, default=32, help="HumanEval prompts for batch sizes > 1")
    parser.add_argument("--prompts-bs1", type=int, default=8, help="prompts for batch size 1 (it is slow)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--rounds", type=int, default=2, help="alternating raw/harness rounds; the fastest counts")
    args = parser.parse_args()

    loaded = load_model(args.model, dtype="fp32", device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    print(f"model {loaded.name}, fp32, {torch.get_num_threads()} torch threads, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    tasks = load_humaneval()
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    generator = HFGenerator(model, tokenizer)
    generator.generate([prompt_lib.first_dialogue(tasks[0])], SamplingParams(max_new_tokens=4))  # warm-up

    print(f"{'batch':>5} {'prompts':>7} {'tokens':>7} {'raw tok/s':>10} {'harness tok/s':>14} {'overhead':>9}")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        n = args.prompts_bs1 if batch_size == 1 else args.prompts
        dialogues = [prompt_lib.first_dialogue(t) for t in tasks[:n]]
        generator.batch_size = batch_size
        encoded = [generator.encode(d) for d in dialogues]
        order = sorted(range(n), key=lambda i: -len(encoded[i]))  # the harness's own batching
        batches = [[encoded[i] for i in order[s:s + batch_size]] for s in range(0, n, batch_size)]
        raw_s, harness_s = [], []
        raw_tokens = harness_tokens = 0
        for round_no in range(args.rounds):
            sides = ("raw", "harness") if round_no % 2 == 0 else ("harness", "raw")
            for side in sides:
                start = time.perf_counter()
                if side == "raw":
                    raw_tokens = raw_generate(model, tokenizer, batches, args.max_new_tokens, generator.eos_ids)
                    raw_s.append(time.perf_counter() - start)
                else:
                    gens = generator.generate([prompt_lib.first_dialogue(t) for t in tasks[:n]], params)
                    harness_s.append(time.perf_counter() - start)
                    harness_tokens = sum(len(g.token_ids) for g in gens)
        if raw_tokens != harness_tokens:
            print(f"warning: batch {batch_size}: raw generated {raw_tokens} tokens, harness {harness_tokens}")
        raw_rate, harness_rate = raw_tokens / min(raw_s), harness_tokens / min(harness_s)
        overhead = min(harness_s) / min(raw_s) - 1
        print(f"{batch_size:>5} {n:>7} {harness_tokens:>7} {raw_rate:>10.1f} {harness_rate:>14.1f} {overhead:>8.1%}",
              flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end (2 cores; other processes slow both sides alike)")


if __name__ == "__main__":
    main()
