"""Shared fixtures for score_code tests: the real SmolLM2 tokenizer and a tiny random Llama built on it.

The tokenizer comes from the cached conversion of the embedded GGUF default (converted once, about a minute, on
a fresh machine; seconds afterwards). The tiny model has the real vocabulary and chat template, so prompts,
token-in/token-out bookkeeping and stop strings behave as with the real model, while a forward pass costs
milliseconds.
"""
from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub

import torch  # noqa: E402

from benchmarks.generation import Dialogue, Generation, SamplingParams  # noqa: E402
from score_code.models import load_tokenizer  # noqa: E402

TINY_SEED = 0


def build_tiny_model(tokenizer, seed: int = TINY_SEED):
    """A fresh 2-layer, 64-wide LlamaForCausalLM over `tokenizer`'s vocabulary, deterministic for a seed."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    return model


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer with its chat template (shared: do not mutate)."""
    return load_tokenizer(None)


@pytest.fixture
def tiny_model(tokenizer):
    """A fresh seeded tiny Llama per test (tests may train or mutate it)."""
    return build_tiny_model(tokenizer)


@pytest.fixture
def make_tiny_model(tokenizer):
    """Builds fresh tiny models (seeded) for tests that need several."""
    return lambda seed=TINY_SEED: build_tiny_model(tokenizer, seed)


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer, tmp_path_factory) -> Path:
    """A saved HF checkpoint directory (tiny model + real tokenizer) for CLI and loading tests."""
    out_dir = tmp_path_factory.mktemp("tiny-model")
    build_tiny_model(tokenizer).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --- a stand-in `vllm` (the real one needs a CUDA GPU) ---------------------------------------------------------------


@pytest.fixture
def fake_vllm(monkeypatch):
    """A `vllm` module whose SamplingParams and TokensPrompt build plain dicts; a test sets `.LLM` if it needs one."""
    module = types.ModuleType("vllm")
    module.SamplingParams = lambda **kwargs: kwargs
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    module.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return module


class EngineModel:
    """Stands in for the model inside a vLLM engine: `load_weights` takes (HF name, tensor) pairs, as vLLM's do."""

    def __init__(self, model) -> None:
        self.model = model

    def load_weights(self, weights) -> None:
        params = self.model.state_dict()
        for name, tensor in weights:
            params[name].copy_(tensor)


def in_process_engine(model) -> types.SimpleNamespace:
    """`llm.llm_engine` of an engine running in this process, with `model` where vLLM keeps it."""
    runner = types.SimpleNamespace(model=EngineModel(model))
    return types.SimpleNamespace(model_executor=types.SimpleNamespace(
        driver_worker=types.SimpleNamespace(model_runner=runner)))


@pytest.fixture
def vllm_stand_ins() -> types.SimpleNamespace:
    """The helpers above, for test modules (imported with --import-mode=importlib, they cannot import conftest)."""
    return types.SimpleNamespace(in_process_engine=in_process_engine)


class CharGenerator:
    """Token-in/token-out fake: one id per character (ord), user turns rendered as '<text>|', answers canned."""

    def __init__(self, answers: list[str], retokenize: bool = False) -> None:
        self.answers = answers
        self.calls = 0
        self.retokenize = retokenize

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        out = []
        for d in dialogues:
            ids = list(d.token_ids or [])
            for m in d.messages[d.encoded_messages:]:
                ids += [ord(c) for c in m["content"] + ("|" if m["role"] == "user" else "")]
            if self.retokenize:
                ids = [i + 1 for i in ids]
            text = self.answers[self.calls % len(self.answers)]
            self.calls += 1
            completion = [ord(c) for c in text]
            dialogue = Dialogue(messages=[*d.messages, {"role": "assistant", "content": text}],
                                token_ids=ids + completion, encoded_messages=len(d.messages) + 1)
            out.append(Generation(text=text, token_ids=completion, prompt_token_ids=ids, finish_reason="stop",
                                  dialogue=dialogue))
        return out
