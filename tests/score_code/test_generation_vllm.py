"""VLLMGenerator: a clear error without vllm; the token-in/token-out path against a stand-in engine; a real
engine only where vllm is installed (an optional extra that needs a CUDA GPU)."""
from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field

import pytest

from benchmarks.generation import Dialogue, SamplingParams
from score_code.generation.vllm import VLLMGenerator, VLLMUnavailable

P1 = "Please correct the error, if any."


def test_without_vllm_construction_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(VLLMUnavailable, match="needs the vllm package") as info:
        VLLMGenerator("any-model")
    assert "pip install 'score-code[vllm]'" in info.value.hint


@dataclass
class _Completion:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class _Request:
    outputs: list[_Completion]


@dataclass
class _FakeLLM:
    """Records what the engine was given; answers with fixed token ids."""

    tokenizer: object
    reply: str
    calls: list = field(default_factory=list)

    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.calls.append((prompts, sampling_params))
        ids = self.tokenizer(self.reply, add_special_tokens=False)["input_ids"]
        return [_Request([_Completion(self.reply, ids, "stop")]) for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = lambda **kwargs: kwargs
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    module.inputs = inputs
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    return module


def test_token_ids_in_and_out_through_the_engine(fake_vllm, tokenizer):
    llm = _FakeLLM(tokenizer, "x = 1\n```\n")
    generator = VLLMGenerator("unused", tokenizer=tokenizer, llm=llm)
    params = SamplingParams(max_new_tokens=20, temperature=0.7, top_p=0.9, seed=3, stop=("\n```\n",))
    first = generator.generate([Dialogue(messages=[{"role": "user", "content": "write x"}])], params)[0]
    prompts, sampling = llm.calls[0]
    assert prompts == [{"prompt_token_ids": first.prompt_token_ids}]
    assert sampling["max_tokens"] == 20 and sampling["seed"] == 3 and sampling["stop"] == ["\n```\n"]
    assert sampling["include_stop_str_in_output"] is True and tokenizer.eos_token_id in sampling["stop_token_ids"]
    assert first.finish_reason == "stop" and first.text == "x = 1\n```\n"

    first.dialogue.messages.append({"role": "user", "content": P1})
    generator.generate([first.dialogue], params)
    sent = llm.calls[1][0][0]["prompt_token_ids"]
    assert sent[:len(first.dialogue.token_ids)] == first.dialogue.token_ids
    assert tokenizer.decode(sent[len(first.dialogue.token_ids):]) == (
        f"<|im_end|>\n<|im_start|>user\n{P1}<|im_end|>\n<|im_start|>assistant\n")


def test_real_engine_greedy_generation(tokenizer):
    pytest.importorskip("vllm", reason="vllm is an optional extra (pip install 'score-code[vllm]', CUDA GPU)")
    from score_code.models import ensure_default_checkpoint

    generator = VLLMGenerator(str(ensure_default_checkpoint()), dtype="float32")
    gens = generator.generate([Dialogue(messages=[{"role": "user", "content": "Say hi."}])],
                              SamplingParams(max_new_tokens=8))
    assert gens[0].token_ids and gens[0].dialogue.token_ids == gens[0].prompt_token_ids + gens[0].token_ids
