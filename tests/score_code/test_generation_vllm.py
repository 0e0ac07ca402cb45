"""VLLMGenerator: a clear error without vllm; the token-in/token-out path against a stand-in engine; a real
engine only where vllm is installed (an optional extra that needs a CUDA GPU)."""
from __future__ import annotations

import copy
import os
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch

from benchmarks.generation import Dialogue, SamplingParams
from score_code.generation.vllm import VLLMEngineError, VLLMGenerator, VLLMUnavailable, served_weights

P1 = "Please correct the error, if any."


def test_without_vllm_construction_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(VLLMUnavailable, match="needs the vllm package") as info:
        VLLMGenerator("any-model")
    assert "pip install 'score-code[vllm]'" in info.value.hint


@dataclass
class _FakeLLM:
    """Records what the engine was given; answers with fixed token ids."""

    tokenizer: object
    reply: str
    calls: list = field(default_factory=list)

    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.calls.append((prompts, sampling_params))
        ids = self.tokenizer(self.reply, add_special_tokens=False)["input_ids"]
        completion = types.SimpleNamespace(text=self.reply, token_ids=ids, finish_reason="stop", logprobs=None)
        return [types.SimpleNamespace(outputs=[completion]) for _ in prompts]


def test_token_ids_in_and_out_through_the_engine(fake_vllm, tokenizer):
    llm = _FakeLLM(tokenizer, "x = 1\n```\n")
    generator = VLLMGenerator("unused", tokenizer=tokenizer, llm=llm)
    params = SamplingParams(max_new_tokens=20, temperature=0.7, top_p=0.9, seed=3, stop=("\n```\n",))
    first = generator.generate([Dialogue(messages=[{"role": "user", "content": "write x"}])], params)[0]
    prompts, (sampling,) = llm.calls[0]
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


def test_each_prompt_gets_its_own_seed_so_samples_of_one_prompt_differ(fake_vllm, tokenizer):
    """vLLM seeds every request separately: k copies of a prompt under one seed would be k identical samples."""
    llm = _FakeLLM(tokenizer, "x = 1\n")
    generator = VLLMGenerator("unused", tokenizer=tokenizer, llm=llm)
    dialogue = Dialogue(messages=[{"role": "user", "content": "write x"}])
    generator.generate([dialogue] * 3, SamplingParams(max_new_tokens=4, temperature=1.0, seed=7))
    assert [p["seed"] for p in llm.calls[0][1]] == [7, 8, 9]
    generator.generate([dialogue] * 2, SamplingParams(max_new_tokens=4, temperature=1.0))
    assert [p["seed"] for p in llm.calls[1][1]] == [None, None]


def _lora(model):
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)  # peft starts B at zero (a no-op adapter); make the delta visible
    return policy


def test_served_weights_of_a_plain_model_are_its_state_dict(tiny_model):
    served = dict(served_weights(tiny_model))
    assert served.keys() == tiny_model.state_dict().keys()
    assert all(torch.equal(served[k], v) for k, v in tiny_model.state_dict().items())


def test_served_weights_of_a_lora_policy_fold_the_adapter_in_without_touching_it(make_tiny_model):
    base_names = make_tiny_model().state_dict().keys()
    policy = _lora(make_tiny_model())
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    served = dict(served_weights(policy))
    merged = copy.deepcopy(policy).merge_and_unload().state_dict()
    assert served.keys() == base_names == merged.keys()
    assert all(torch.allclose(served[k], merged[k], atol=1e-6) for k in merged)
    changed = [k for k in merged if not torch.equal(merged[k], make_tiny_model().state_dict()[k])]
    assert changed and all(k.endswith("proj.weight") for k in changed)  # the adapter really changed them
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())  # the policy is untouched


def test_sync_weights_makes_the_engine_compute_the_policy(fake_vllm, vllm_stand_ins, tokenizer, make_tiny_model):
    engine = make_tiny_model(seed=5)  # different weights from the policy's base
    llm = _FakeLLM(tokenizer, "x\n")
    llm.llm_engine = vllm_stand_ins.in_process_engine(engine)
    resets = []
    llm.reset_prefix_cache = lambda: resets.append(True)
    policy = _lora(make_tiny_model())
    ids = torch.tensor([[1, 5, 9, 200, 31]])
    with torch.no_grad():
        assert not torch.allclose(engine(ids).logits, policy(input_ids=ids).logits, atol=1e-4)
        VLLMGenerator("unused", tokenizer=tokenizer, llm=llm).sync_weights(policy)
        assert torch.allclose(engine(ids).logits, policy(input_ids=ids).logits, atol=1e-4)
    assert resets == [True]


def test_sync_weights_into_an_out_of_process_engine_says_what_to_set(fake_vllm, tokenizer, tiny_model):
    generator = VLLMGenerator("unused", tokenizer=tokenizer, llm=_FakeLLM(tokenizer, "x"))
    with pytest.raises(VLLMUnavailable, match="VLLM_ENABLE_V1_MULTIPROCESSING=0"):
        generator.sync_weights(tiny_model)


# --- the GPU path (issue #13) ----------------------------------------------------------------------------------------


def test_a_prefix_cache_that_vllm_kept_is_an_error(fake_vllm, vllm_stand_ins, tokenizer, tiny_model):
    """vLLM returns False and keeps its KV blocks when one is in use: rollouts would reuse the old weights' KV."""
    llm = _FakeLLM(tokenizer, "x")
    llm.llm_engine = vllm_stand_ins.in_process_engine(copy.deepcopy(tiny_model))
    llm.reset_prefix_cache = lambda: False
    with pytest.raises(VLLMEngineError, match="reset_prefix_cache returned False"):
        VLLMGenerator("unused", tokenizer=tokenizer, llm=llm).sync_weights(tiny_model)


def test_served_weights_are_cast_to_the_engine_dtype_one_module_at_a_time(make_tiny_model):
    """No full copy before the first weight is sent: a LoRA weight's merge happens when it is yielded."""
    from peft.tuners.lora import LoraLayer

    policy = _lora(make_tiny_model())
    merges = []
    for module in policy.modules():
        if isinstance(module, LoraLayer):
            delta = module.get_delta_weight
            module.get_delta_weight = lambda adapter, delta=delta: merges.append(1) or delta(adapter)
    weights = served_weights(policy, torch.bfloat16)
    first_adapted = next(i for i, (name, _) in enumerate(weights) if name.endswith("q_proj.weight"))
    assert len(merges) == 1 and first_adapted > 0
    assert {t.dtype for _, t in served_weights(policy, torch.bfloat16)} == {torch.bfloat16}


def test_each_request_takes_its_own_seed_from_params_seeds(fake_vllm, tokenizer):
    llm = _FakeLLM(tokenizer, "x = 1\n")
    generator = VLLMGenerator("unused", tokenizer=tokenizer, llm=llm)
    dialogue = Dialogue(messages=[{"role": "user", "content": "write x"}])
    generator.generate([dialogue] * 3, SamplingParams(max_new_tokens=4, temperature=1.0, seed=7, seeds=(5, 90, 3)))
    assert [p["seed"] for p in llm.calls[0][1]] == [5, 90, 3]
    with pytest.raises(ValueError, match="2 seeds for 3 dialogues"):
        generator.generate([dialogue] * 3, SamplingParams(seeds=(1, 2)))


def test_a_training_engine_returns_the_sampled_tokens_log_probs(fake_vllm, tokenizer):
    from score_code.generation.vllm import EngineGeneration

    built = {}
    fake_vllm.LLM = lambda **kwargs: built.update(kwargs) or llm
    llm = _FakeLLM(tokenizer, "x = 1\n")
    ids = tokenizer("x = 1\n", add_special_tokens=False)["input_ids"]
    llm.generate = lambda prompts, params, use_tqdm=False: [types.SimpleNamespace(outputs=[types.SimpleNamespace(
        text="x = 1\n", token_ids=ids, finish_reason="stop",
        logprobs=[{t: types.SimpleNamespace(logprob=-0.1 * i)} for i, t in enumerate(ids)])])]
    generator = VLLMGenerator("m", tokenizer=tokenizer, dtype="bf16", logprobs=True)
    assert built["logprobs_mode"] == "processed_logprobs" and built["dtype"] == "bfloat16"
    (gen,) = generator.generate([Dialogue(messages=[{"role": "user", "content": "x"}])], SamplingParams())
    assert isinstance(gen, EngineGeneration) and gen.logprobs == pytest.approx([-0.1 * i for i in range(len(ids))])


def test_the_trainer_forces_the_engine_into_this_process(fake_vllm, vllm_stand_ins, tokenizer, tiny_model,
                                                         monkeypatch):
    from score_code.generation import make_generator

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    llm = _FakeLLM(tokenizer, "x")
    llm.llm_engine = vllm_stand_ins.in_process_engine(copy.deepcopy(tiny_model))
    llm.reset_prefix_cache = lambda: True
    fake_vllm.LLM = lambda **kwargs: llm
    make_generator("vllm", "unused", policy=tiny_model, tokenizer=tokenizer, dtype="float32")
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_gguf_and_mixture_of_experts_models_are_refused_with_what_to_pass(tmp_path):
    from transformers import MixtralConfig

    from score_code.generation.vllm import refuse_unservable

    with pytest.raises(VLLMEngineError, match="GGUF file") as info:
        refuse_unservable("/models/x.Q4.gguf")
    assert "HF checkpoint directory" in info.value.hint
    MixtralConfig(num_local_experts=4, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=4).save_pretrained(tmp_path)
    with pytest.raises(VLLMEngineError, match="mixture-of-experts.*experts=4") as info:
        refuse_unservable(str(tmp_path))
    assert info.value.hint == "use --backend hf"
    refuse_unservable("")  # the embedded default is a dense checkpoint


def test_stop_repeats_cuts_what_the_engine_ran_on_to_where_the_rules_fire(fake_vllm, tokenizer):
    """vLLM cannot stop on the runaway rules, so its completion is cut afterwards, log-probs with it."""
    text = "```python\ndef f(x):\n    return x\n\ndef f(x):\n    return x\n\ndef f(x):\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    llm = _FakeLLM(tokenizer, text)
    llm.generate = lambda prompts, params, use_tqdm=False: [types.SimpleNamespace(outputs=[types.SimpleNamespace(
        text=text, token_ids=ids, finish_reason="length",
        logprobs=[{t: types.SimpleNamespace(logprob=-0.1 * i)} for i, t in enumerate(ids)])])]
    generator = VLLMGenerator("m", tokenizer=tokenizer, llm=llm, logprobs=True)
    dialogue = Dialogue(messages=[{"role": "user", "content": "x"}])
    (free,) = generator.generate([dialogue], SamplingParams())
    assert free.token_ids == ids and free.finish_reason == "length"
    (cut,) = generator.generate([dialogue], SamplingParams(stop_repeats=True))
    # through the token that ends the repeated line ("\n   " here)
    assert cut.finish_reason == "stop" and cut.text.rstrip(" ").endswith("\n\ndef f(x):\n")
    assert cut.text.count("def f(") == 2
    assert cut.token_ids == ids[:len(cut.token_ids)] and len(cut.logprobs) == len(cut.token_ids)
