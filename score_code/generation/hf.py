"""transformers backend: continuous batching over a live model (the one being trained, never a copy).

Up to `batch_size` sequences decode together, one forward per token for all of them. A sequence that ends (EOS, a
stop string, max_new_tokens) leaves the batch at once and the next prompts take the free slots: they are prefilled
together, left-padded, and their KV cache is merged into the running one. So a batch never waits for its longest
member (measured on HumanEval with the default model: median completion 64 tokens, but 5 of 32 run to the 512
limit, so a static batch of 32 spent most of its steps on 5 sequences). Prompts are admitted longest first, so
peak memory comes early. The token prefix that all prompts of a call share (a system prompt, MBPP's three shots:
656 of the 788 tokens of an MBPP-validation prompt) is prefilled and stored once; each group prefills only what
follows it, and the cache holds only each row's own positions, which attention reads together with the one copy of
the prefix (shared_prefix.py).
A group is prefilled in chunks of rows of at most `prefill_tokens` padded tokens each: one forward over the whole
group pads every row to its longest prompt and allocates activations for all of them at once (measured: 32
MBPP-validation prompts, one of 1,510 tokens, took 115 s in one forward, with 59 GB of page faults; 28 s in
chunks).

Greedy when temperature is 0, else sampling with temperature/top_p; seeded sampling leaves the caller's global RNG
state alone. With `params.seeds` every sequence draws from its own generator seeded by its seed, so its sample does
not depend on which other sequences share the call or the batch (the harness's rounds, a resumed run); with only
`params.seed` one generator serves the whole call, reproducible only for that same call. Stop strings are matched on
each sequence's completion only, so a prompt ending in "\\n" cannot complete "\\n#" at the first "#". With
`params.stop_repeats` a sequence also ends on the token where a runaway rule fires (benchmarks.stopping).
"""
from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from benchmarks.generation import Dialogue, Generation, SamplingParams
from benchmarks.stopping import LoopWatch, repeated_definition_end
from score_code.generation import shared_prefix
from score_code.generation.encoding import DialogueEncoder, digit_ids, eos_token_ids, finish


class _GrowingLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values are views into buffers with room at the end, so a decode
    step writes one new column in place. transformers' DynamicLayer concatenates instead, copying the whole cache
    at every step: a quarter of a bf16 decode step at batch 32 (measured). When something else replaced the views
    (selecting rows, merging a group in) or the room is used up, the next update moves them to new buffers with as
    much room again as they hold, so copies stay rare."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.device, self.is_initialized = keys.device, True
        width = keys.shape[-2]
        self.key_buffer, self.value_buffer = self._with_room(keys, width), self._with_room(values, width)
        self.keys, self.values = self.key_buffer[:, :, :width], self.value_buffer[:, :, :width]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        start, width, new = self._start(), self.keys.shape[-2], key_states.shape[-2]
        if start is None or start + width + new > self.key_buffer.shape[-2]:
            self.key_buffer = self._with_room(self.keys, width + new)
            self.value_buffer = self._with_room(self.values, width + new)
            start = 0
        end = start + width + new
        self.key_buffer[:, :, start + width:end] = key_states
        self.value_buffer[:, :, start + width:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, start:end], self.value_buffer[:, :, start:end]
        return self.keys, self.values

    def _start(self) -> int | None:
        """The column of the buffers where the current views begin; None when they are not views of them."""
        for view, buffer in ((self.keys, self.key_buffer), (self.values, self.value_buffer)):
            if view._base is not buffer or view.shape[:2] != buffer.shape[:2]:
                return None
        return (self.keys.storage_offset() - self.key_buffer.storage_offset()) // self.key_buffer.stride(2)

    @staticmethod
    def _with_room(states: torch.Tensor, needed: int) -> torch.Tensor:
        batch, heads, width, dim = states.shape
        buffer = states.new_empty((batch, heads, max(2 * needed, 64), dim))
        buffer[:, :, :width] = states
        return buffer


# Below this many shared tokens a separate prefix forward saves less than it costs.
MIN_SHARED_PREFIX = 16
# Padded prompt tokens per prefill forward: enough rows for full-speed matrix products, few enough that padding to
# the chunk's longest prompt and the activations stay small.
PREFILL_TOKENS = 2048


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt has in common, leaving each at least one token to prefill (its logits
    pick the first new token); 0 for fewer than two prompts or below MIN_SHARED_PREFIX."""
    if len(prompts) < 2:
        return 0
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    length = 0
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


@dataclass
class _Sequence:
    """One prompt being completed. `ids[-1]` is generated but not yet fed to the model."""

    index: int
    rng: torch.Generator | None = None  # its own random stream, when sampling with params.seeds
    ids: list[int] = field(default_factory=list)
    loops: LoopWatch | None = None  # the token-loop rules, fed every id, with params.stop_repeats
    hit: bool = False  # ended by EOS or a stop string (else by max_new_tokens)
    done: bool = False


class HFGenerator:
    """benchmarks.generation.Generator over a transformers causal LM."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, chat: bool | None = None,
                 progress: bool = False, prefill_tokens: int = PREFILL_TOKENS) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if prefill_tokens < 1:
            raise ValueError(f"prefill_tokens must be >= 1, got {prefill_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.prefill_tokens = prefill_tokens
        self.progress = progress
        self.eos_ids = eos_token_ids(model, tokenizer)
        if not self.eos_ids:
            raise ValueError("neither the model's generation_config nor the tokenizer defines an EOS token id")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.encoder = DialogueEncoder(tokenizer, self.eos_ids, chat)
        self.chat = self.encoder.chat

    def encode(self, dialogue: Dialogue) -> list[int]:
        return self.encoder.encode(dialogue)

    @cached_property
    def digit_ids(self) -> frozenset[int]:
        """For the counting-loop rule; decoded once, on the first call with params.stop_repeats (not in training)."""
        return digit_ids(self.tokenizer)

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        if params.seeds is not None and len(params.seeds) != len(dialogues):
            raise ValueError(f"SamplingParams.seeds has {len(params.seeds)} seeds for {len(dialogues)} dialogues; "
                             "give one seed per dialogue, in order")
        prompts = [self.encode(d) for d in dialogues]
        was_training = self.model.training
        self.model.eval()  # no dropout while sampling; restored for the trainer afterwards
        try:
            with torch.no_grad(), shared_prefix.enabled(self.model):
                sequences = _Decoder(self, prompts, params).run()
        finally:
            self.model.train(was_training)
        generations = []
        for dialogue, prompt, seq in zip(dialogues, prompts, sequences, strict=True):
            text = self.tokenizer.decode(seq.ids, skip_special_tokens=True)
            generations.append(finish(dialogue, prompt, seq.ids, text, seq.hit, params.stop))
        return generations


class _Decoder:
    """The continuous-batching loop of one generate call. Invariants between steps: the cache holds `width` positions
    for every active sequence after the shared prefix (padding where `mask` is 0, at the left), and each sequence's
    last id is still to be fed."""

    def __init__(self, owner: HFGenerator, prompts: list[list[int]], params: SamplingParams) -> None:
        self.model, self.tokenizer, self.params = owner.model, owner.tokenizer, params
        self.batch_size, self.pad_id, self.eos_ids = owner.batch_size, owner.pad_id, set(owner.eos_ids)
        self.prefill_tokens = owner.prefill_tokens
        self.digit_ids = owner.digit_ids if params.stop_repeats else frozenset()
        self.progress = owner.progress
        self.device = next(self.model.parameters()).device
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # peft
        # transformers 5 renamed `past_key_values` to `cache` (the old name goes in 5.40)
        self.cache_kwarg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self.prompts = prompts
        self.shared = shared_prefix_length(prompts)
        self.shared_states: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # its keys/values, per layer
        self.stop = [s for s in params.stop if s]
        # A token decodes to at least one character, so the newest stop-string match lies in this many tokens.
        self.window = max((len(s) for s in self.stop), default=0) + 2
        self.rng = None  # the call's shared generator when there are no per-sequence seeds
        if params.temperature > 0 and params.seeds is None and params.seed is not None:
            self.rng = torch.Generator(device=self.device).manual_seed(params.seed)
        self.active: list[_Sequence] = []
        self.cache: DynamicCache | None = None
        self.full_attention: bool | None = None  # every cache layer plain full attention (_mergeable)
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.device)

    def run(self) -> list[_Sequence]:
        from tqdm import tqdm

        order = sorted(range(len(self.prompts)), key=lambda i: -len(self.prompts[i]))  # longest first
        waiting = deque(order)
        finished: list[_Sequence | None] = [None] * len(self.prompts)
        refill_at = max(1, self.batch_size // 4)  # admit in groups: one prefill and one cache merge per group
        with tqdm(total=len(self.prompts), unit="seq", desc="generate", disable=not self.progress) as bar:
            while waiting or self.active:
                free = self.batch_size - len(self.active)
                if waiting and (not self.active or (free >= min(refill_at, len(waiting)) and self._mergeable())):
                    self._admit([waiting.popleft() for _ in range(min(free, len(waiting)))])
                else:
                    self._step()
                for seq in self._retire():
                    finished[seq.index] = seq
                    bar.update(1)
        return finished  # type: ignore[return-value]

    # --- model calls ---------------------------------------------------------------------------------------------
    def _admit(self, indices: list[int]) -> None:
        """Prefill these prompts (longest first) chunk by chunk and merge their caches into the running one."""
        skip = self.shared if self._shared_cached() else 0
        chunks = self._chunks(indices, skip) if self._mergeable() else [indices]
        parts = [self._prefill(chunk, skip) for chunk in chunks]
        if self.cache is None and len(parts) == 1:
            cache, self.mask = parts[0]
            if all(type(layer) is DynamicLayer for layer in cache.layers):  # full attention: decode in place
                cache.layers = [_GrowingLayer(layer.keys, layer.values) for layer in cache.layers]
            self.cache = cache
        else:
            self._merge(parts)

    def _chunks(self, indices: list[int], skip: int) -> list[list[int]]:
        """Consecutive runs of `indices` whose rows, padded to the run's longest prompt, hold at most
        prefill_tokens tokens (a longer prompt is a run of its own)."""
        chunks: list[list[int]] = []
        for i in indices:
            if chunks:
                chunk = chunks[-1]
                width = max(len(self.prompts[j]) for j in (*chunk, i)) - skip
                if (len(chunk) + 1) * width <= self.prefill_tokens:
                    chunk.append(i)
                    continue
            chunks.append([i])
        return chunks

    def _prefill(self, indices: list[int], skip: int) -> tuple[DynamicCache, torch.Tensor]:
        """One forward over these prompts; their first new tokens join `self.active`. Each row is left padding, then
        its prompt after the `skip` shared tokens (whose states the forward gets once). Returns the cache and mask."""
        width = max(len(self.prompts[i]) - skip for i in indices)
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            rest = self.prompts[i][skip:]
            ids[row, width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[row, width - len(rest):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        cache = DynamicCache()
        positions = skip + (mask.cumsum(1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **self._prefix_kwargs(skip), **{self.cache_kwarg: cache})
        watch = self.params.stop_repeats
        new = [_Sequence(i, self._sequence_rng(i), loops=LoopWatch(self.digit_ids) if watch else None) for i in indices]
        self._append(new, self._pick(out.logits[:, -1], new))
        self.active.extend(new)
        return cache, mask

    def _shared_cached(self) -> bool:
        """Prefill the shared prefix once, on first use; False when there is none or the model's cache is not plain
        full attention (a sliding-window layer cannot be reused this way)."""
        if self.shared and self.shared_states is None:
            ids = torch.tensor([self.prompts[0][:self.shared]], dtype=torch.long, device=self.device)
            cache = DynamicCache()
            self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self.cache_kwarg: cache})
            if all(type(layer) is DynamicLayer for layer in cache.layers):
                self.shared_states = [(layer.keys, layer.values) for layer in cache.layers]
            else:
                self.shared = 0
        return bool(self.shared)

    def _step(self) -> None:
        """Feed every active sequence its last id; append the next one."""
        last = torch.tensor([[seq.ids[-1]] for seq in self.active], dtype=torch.long, device=self.device)
        mask = torch.cat([self.mask, self.mask.new_ones((len(self.active), 1))], dim=1)
        skip = self.shared if self.shared_states is not None else 0
        position = skip + self.mask.sum(dim=1, keepdim=True)  # real tokens before this one
        out = self.model(input_ids=last, attention_mask=mask, position_ids=position, use_cache=True,
                         **self._prefix_kwargs(skip), **{self.cache_kwarg: self.cache})
        self.mask = mask
        self._append(self.active, self._pick(out.logits[:, -1], self.active))

    def _prefix_kwargs(self, skip: int) -> dict[str, Any]:
        """The forward's extra argument that makes attention read the shared prefix (none when nothing is shared)."""
        return {"shared_prefix": self.shared_states} if skip else {}

    def _sequence_rng(self, index: int) -> torch.Generator | None:
        if self.params.temperature == 0 or self.params.seeds is None:
            return None
        return torch.Generator(device=self.device).manual_seed(self.params.seeds[index])

    def _pick(self, logits: torch.Tensor, sequences: Sequence[_Sequence]) -> list[int]:
        params = self.params
        if params.temperature == 0:
            return logits.argmax(dim=-1).tolist()
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p  # keeps the top token always
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        if params.seeds is None:
            return torch.multinomial(probs, 1, generator=self.rng).squeeze(1).tolist()
        return [int(torch.multinomial(row, 1, generator=seq.rng)) for row, seq in zip(probs, sequences, strict=True)]

    # --- bookkeeping ---------------------------------------------------------------------------------------------
    def _append(self, sequences: Sequence[_Sequence], tokens: list[int]) -> None:
        """Add one token per sequence; mark the ones it ends (EOS kept in the ids, stop string cut after its token)."""
        for seq, token in zip(sequences, tokens, strict=True):
            seq.ids.append(token)
            if token in self.eos_ids:
                seq.hit = seq.done = True
            elif len(seq.ids) >= self.params.max_new_tokens:
                seq.done = True
        if self.stop:
            pending = [seq for seq in sequences if not seq.hit]
            texts = self.tokenizer.batch_decode([seq.ids[-self.window:] for seq in pending], skip_special_tokens=True)
            for seq, text in zip(pending, texts, strict=True):
                if any(s in text for s in self.stop):
                    seq.hit = seq.done = True
        if self.params.stop_repeats:  # benchmarks.stopping: a token loop, or a line that re-defines a name
            for seq, token in zip(sequences, tokens, strict=True):
                if seq.loops.add(token):
                    seq.hit = seq.done = True
            pending = [seq for seq in sequences if not seq.hit]
            pieces = self.tokenizer.batch_decode([seq.ids[-1:] for seq in pending], skip_special_tokens=True)
            pending = [seq for seq, piece in zip(pending, pieces, strict=True) if "\n" in piece]  # ends a line
            texts = self.tokenizer.batch_decode([seq.ids for seq in pending], skip_special_tokens=True)
            for seq, text in zip(pending, texts, strict=True):
                if repeated_definition_end(text) is not None:
                    seq.hit = seq.done = True

    def _retire(self) -> list[_Sequence]:
        """Drop finished sequences from the batch (and their rows from the cache); returns them."""
        done = [seq for seq in self.active if seq.done]
        if not done:
            return []
        keep = [row for row, seq in enumerate(self.active) if not seq.done]
        self.active = [self.active[row] for row in keep]
        if not keep:
            self.cache, self.mask = None, self.mask[:0, :0]
            return done
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        if start:  # columns that are padding in every remaining row: cut them from the cache too
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        return done

    def _mergeable(self) -> bool:
        """Sequences can join a running batch, and a group be prefilled in chunks, only if every cache layer is a
        plain full-attention one (a sliding-window cache cannot be left-padded); otherwise a group is one forward and
        the next one starts when the batch is empty. Known once a cache exists; before, the shared prefix's cache (if
        any) tells, else a probe of one token."""
        if self.cache is not None:
            return all(type(layer) is _GrowingLayer for layer in self.cache.layers)
        if self.full_attention is None:
            if self.shared_states is not None:
                self.full_attention = True
            else:
                cache = DynamicCache()
                ids = torch.tensor([self.prompts[0][:1]], dtype=torch.long, device=self.device)
                self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self.cache_kwarg: cache})
                self.full_attention = all(type(layer) is DynamicLayer for layer in cache.layers)
        return self.full_attention

    def _merge(self, parts: list[tuple[DynamicCache, torch.Tensor]]) -> None:
        """Append the rows of each part's cache and mask to the running ones (if any), left-padding all to a common
        width: one copy per layer however many parts."""
        everything = ([] if self.cache is None else [(self.cache, self.mask)]) + parts
        width = max(mask.shape[1] for _, mask in everything)

        def padded(t: torch.Tensor, dim: int) -> torch.Tensor:
            by = width - t.shape[dim]
            if by == 0:
                return t
            shape = list(t.shape)
            shape[dim] = by
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        layers = []
        for group in zip(*(cache.layers for cache, _ in everything), strict=True):
            keys = torch.cat([padded(layer.keys, 2) for layer in group])
            values = torch.cat([padded(layer.values, 2) for layer in group])
            layers.append(_GrowingLayer(keys, values))
        self.mask = torch.cat([padded(mask, 1) for _, mask in everything])
        if self.cache is None:
            self.cache = parts[0][0]
        self.cache.layers = layers
