"""The contract between the harness and any model: `generate(dialogues, params) -> generations`.

benchmarks/ never imports torch; score_code/generation/ implements this protocol for transformers and vLLM.
Multi-turn bookkeeping is token-in, token-out: a Dialogue carries the exact token ids of everything the model
has seen and produced so far, and a backend only ever appends to them (never decodes and re-tokenizes).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Dialogue:
    """A conversation so far.

    `messages` is the text view ([{"role": "user"|"assistant", "content": str}], the shape chat templates take).
    `token_ids`, once set by a backend, encodes exactly `messages[:n]` where n = `encoded_messages`; on the next
    call the backend encodes only the messages after that (e.g. the self-correction instruction) and appends.
    """

    messages: list[dict[str, str]]
    token_ids: list[int] | None = None
    encoded_messages: int = 0


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 512
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    seed: int | None = None  # one seed for the whole call (used when `seeds` is None)
    stop: tuple[str, ...] = ()  # generation ends after the first of these strings; the text is cut after it
    # One seed per dialogue of the generate call, in order: each sequence samples from its own random stream, so
    # its completion does not depend on which other sequences share the call (round size, a resume).
    seeds: tuple[int, ...] | None = None
    # End a sequence once it loops: a token chunk repeated back to back, or a top-level definition repeated in the same
    # code block (benchmarks.stopping), tokens the grader never uses. finish_reason is then "stop".
    stop_repeats: bool = False


def sequence_seed(*parts: object) -> int:
    """A 63-bit seed that depends only on `parts` (e.g. run seed, task_id, sample, attempt), stable across
    processes and Python versions: sha256 of their reprs, not Python's per-process salted hash()."""
    digest = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class Generation:
    text: str  # the completion's text, cut after a stop string if one was hit
    token_ids: list[int]  # the completion's ids exactly as sampled (not re-tokenized)
    prompt_token_ids: list[int]  # every id the model was conditioned on for this completion
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    dialogue: Dialogue = field(repr=False)  # input dialogue + this completion as an assistant message


@runtime_checkable
class Generator(Protocol):
    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        """One completion per dialogue, in input order."""
        ...
