"""transformers backend: batched `model.generate` on a live model (the one being trained, never a copy).

Batches are left-padded and sorted by prompt length (similar lengths share a batch, so little padding is
computed). Greedy when temperature is 0, else sampling with temperature/top_p; a seed makes a call reproducible
without touching the caller's global RNG state. Stop strings are matched on each sequence's completion only
(transformers' own `stop_strings` also matches text that starts in the prompt, so a prompt ending in "\\n" would
stop "\\n#" at the first "#"); a stopped sequence is padded while the rest of its batch continues.
"""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from benchmarks.generation import Dialogue, Generation, SamplingParams
from score_code.generation import DialogueEncoder, eos_token_ids, finish


class _CompletionStopStrings(StoppingCriteria):
    """Per sequence: done once its completion text contains a stop string; records where that happened."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_len: int, batch_size: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.prompt_len = prompt_len
        # A token decodes to at least one character, so the newest stop-string match lies in this many tokens.
        self.window_tokens = max(len(s) for s in self.stop) + 2
        self.stopped_at: list[int | None] = [None] * batch_size  # completion length when the stop string appeared

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        length = input_ids.shape[1]
        start = max(self.prompt_len, length - self.window_tokens)
        rows = [r for r, at in enumerate(self.stopped_at) if at is None]
        if rows:
            windows = self.tokenizer.batch_decode(input_ids[rows, start:length], skip_special_tokens=True)
            for r, text in zip(rows, windows):
                if any(s in text for s in self.stop):
                    self.stopped_at[r] = length - self.prompt_len
        done = [at is not None for at in self.stopped_at]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFGenerator:
    """benchmarks.generation.Generator over a transformers causal LM."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, chat: bool | None = None,
                 progress: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.eos_ids = eos_token_ids(model, tokenizer)
        if not self.eos_ids:
            raise ValueError("neither the model's generation_config nor the tokenizer defines an EOS token id")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.encoder = DialogueEncoder(tokenizer, self.eos_ids, chat)
        self.chat = self.encoder.chat

    def encode(self, dialogue: Dialogue) -> list[int]:
        return self.encoder.encode(dialogue)

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        prompts = [self.encode(d) for d in dialogues]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: peak memory early
        results: list[Generation | None] = [None] * len(prompts)
        from tqdm import tqdm

        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; restored for the trainer afterwards
        try:
            with tqdm(total=len(prompts), unit="seq", desc="generate", disable=not self.progress) as bar:
                for batch_no, start in enumerate(range(0, len(order), self.batch_size)):
                    idx = order[start:start + self.batch_size]
                    seed = None if params.seed is None else params.seed + batch_no
                    completions = self._generate_batch([prompts[i] for i in idx], params, seed)
                    for i, (ids, hit) in zip(idx, completions):
                        text = self.tokenizer.decode(ids, skip_special_tokens=True)
                        results[i] = finish(dialogues[i], prompts[i], ids, text, hit, params.stop)
                    bar.update(len(idx))
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams,
                        seed: int | None) -> list[tuple[list[int], bool]]:
        """(completion ids cut after EOS or the stop string's last token, whether one was hit) per prompt."""
        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            input_ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            attention_mask[row, width - len(p):] = 1
        stop_criteria = (_CompletionStopStrings(self.tokenizer, params.stop, width, len(prompts))
                         if any(params.stop) else None)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
            "use_cache": True,
            "do_sample": params.temperature > 0,
        }
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if stop_criteria is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([stop_criteria])
        with _seeded(seed, device), torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs
            )
        new_tokens = output[:, width:].tolist()
        completions = []
        for row, ids in enumerate(new_tokens):
            cut = len(ids)
            hit = False
            eos_at = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
            if eos_at is not None:
                cut, hit = eos_at + 1, True
            stopped_at = stop_criteria.stopped_at[row] if stop_criteria is not None else None
            if stopped_at is not None and stopped_at < cut:
                cut, hit = stopped_at, True
            completions.append((ids[:cut], hit))
        return completions


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device):
    """Seed torch's RNG for one generate call and restore the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
