"""vLLM backend (GPU): the same Generator contract, token ids in and out through `vllm.LLM.generate`.

Prompts are passed as `TokensPrompt(prompt_token_ids=...)`, so the ids built by DialogueEncoder (token-in,
token-out) reach the engine verbatim. vLLM is an optional extra (`pip install 'score-code[vllm]'`): importing
this module never needs it; constructing a VLLMGenerator does.

For training, the engine is colocated with the policy in one process: `sync_weights(policy)` copies the
policy's current weights (LoRA deltas folded in, cast to the engine's dtype, one module at a time) into the engine's
model through vLLM's own `load_weights`, the pattern TRL's colocate mode uses. In bf16 the engine's copy is not
exactly the policy (a LoRA change smaller than half a bf16 step of the base weight rounds away), so a training
engine also returns each sampled token's log-probability after temperature (`logprobs_mode`), and the trainer logs
the gap to its own and corrects the policy gradient with a truncated importance weight (objectives.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from benchmarks.errors import ScoreCodeError
from benchmarks.generation import Dialogue, Generation, SamplingParams
from benchmarks.stopping import runaway_cut
from score_code.generation.encoding import DialogueEncoder, digit_ids, eos_token_ids, finish


class VLLMUnavailable(ScoreCodeError):
    """vllm is not installed (it needs a CUDA GPU)."""

    hint = "pip install 'score-code[vllm]' on a machine with a CUDA GPU, or use --backend hf"


class VLLMEngineError(ScoreCodeError):
    """The engine cannot serve this training run (the model kind, or a state that would make rollouts stale)."""


def import_vllm() -> Any:
    """The vllm module, or VLLMUnavailable with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise VLLMUnavailable(f"the vLLM backend needs the vllm package, which cannot be imported ({exc})") from exc
    return vllm


def vllm_dtype(dtype: str) -> str:
    """Our dtype spellings (fp32, bf16, fp16, or torch names) in vLLM's."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype).removeprefix("torch.")


def refuse_unservable(model_name: str) -> None:
    """Fail before anything is built for a model the training engine cannot take: a .gguf file (vLLM's GGUF path
    neither loads our names nor takes `load_weights` from an HF model) or a mixture-of-experts model (vLLM fuses
    its experts' weights, which a per-tensor copy from transformers' layout does not fill)."""
    if model_name.endswith(".gguf"):
        raise VLLMEngineError(f"backend vllm cannot train from the GGUF file {model_name}",
                              hint="convert it to an HF checkpoint directory (score_code.models.convert_gguf) and "
                                   "pass that as --model, or use --backend hf")
    if not model_name:
        return  # the embedded default: converted to a dense safetensors checkpoint
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_name)
    except OSError:
        return  # not found: loading the model reports it with its own hint
    experts = [k for k in ("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
               if getattr(config, k, None)]
    if experts:
        raise VLLMEngineError(f"backend vllm does not train mixture-of-experts models ({model_name}: "
                              f"{experts[0]}={getattr(config, experts[0])})", hint="use --backend hf")


def served_weights(model: Any, dtype: Any = None) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs of `model` as a plain HF checkpoint names them, which is what vLLM's `load_weights`
    reads, cast to `dtype` (the engine's) when given. Lazy, one module at a time: a LoRA weight's base + delta is
    computed when it is yielded, so no full copy of the model is ever held. The model is not touched (merging and
    unmerging in place would leave rounding drift in bf16 base weights)."""
    import torch

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if dtype is None else tensor.to(dtype)

    if not hasattr(model, "get_base_model"):  # a plain transformers model
        for name, tensor in model.state_dict().items():
            yield name, cast(tensor)
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    adapted = {f"{name}.weight": module for name, module in base.named_modules()
               if isinstance(module, LoraLayer) and not module.merged}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        module = adapted.get(name)
        if module is None:
            yield name, cast(tensor)
            continue
        with torch.no_grad():
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
            yield name, cast(tensor + delta if torch.is_tensor(delta) else tensor)


def request_seed(params: SamplingParams, index: int) -> int | None:
    """The seed of request `index`: its own from `params.seeds`, else `params.seed + index` (vLLM seeds every request
    on its own, so one seed for all would draw identical samples of a prompt), else None."""
    if params.seeds is not None:
        return params.seeds[index]
    return None if params.seed is None else params.seed + index


@dataclass
class EngineGeneration(Generation):
    """A Generation with the engine's log-probability of each sampled token (after temperature), for training."""

    logprobs: list[float] | None = None


def engine_model(llm: Any) -> Any:
    """The torch module inside an in-process vLLM engine (the path differs across vLLM versions)."""
    executor = getattr(getattr(llm, "llm_engine", None), "model_executor", None)
    worker = getattr(executor, "driver_worker", None)
    inner = getattr(worker, "worker", None)
    for runner in (getattr(worker, "model_runner", None), getattr(inner, "model_runner", None)):
        if runner is not None and hasattr(runner, "model"):
            return runner.model
    raise VLLMUnavailable(
        "cannot reach the model inside this vLLM engine to copy the policy's weights into it; the engine must run "
        "in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set by the trainer before the engine starts)"
    )


def run_engine_in_process() -> None:
    """Force vLLM's engine core into this process, whatever the environment says: the trainer copies weights into
    its model object (vLLM does the same for its external launcher)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"


class VLLMGenerator:
    """benchmarks.generation.Generator over a `vllm.LLM` engine."""

    def __init__(self, model: str, tokenizer: Any | None = None, chat: bool | None = None, dtype: str = "auto",
                 seed: int = 0, gpu_memory_utilization: float = 0.85, progress: bool = False,
                 llm: Any | None = None, logprobs: bool = False) -> None:
        """`model`: a hub id or an HF checkpoint directory (vLLM loads it); `llm`: an already built engine;
        `logprobs`: return each sampled token's log-probability after temperature (EngineGeneration)."""
        vllm = import_vllm()
        from vllm.inputs import TokensPrompt

        self._vllm = vllm
        self._tokens_prompt = TokensPrompt
        self.dtype = vllm_dtype(dtype)
        self.logprobs = logprobs
        engine_kwargs = {"logprobs_mode": "processed_logprobs"} if logprobs else {}
        self.llm = llm or vllm.LLM(model=model, dtype=self.dtype, seed=seed,
                                   gpu_memory_utilization=gpu_memory_utilization, **engine_kwargs)
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        self.progress = progress
        self.eos_ids = eos_token_ids(None, self.tokenizer)
        self.encoder = DialogueEncoder(self.tokenizer, self.eos_ids, chat)
        self.chat = self.encoder.chat

    def encode(self, dialogue: Dialogue) -> list[int]:
        return self.encoder.encode(dialogue)

    @cached_property
    def digit_ids(self) -> frozenset[int]:
        """For the counting-loop rule; decoded once, on the first call with params.stop_repeats (not in training)."""
        return digit_ids(self.tokenizer)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def sync_weights(self, model: Any) -> None:
        """Copy `model`'s current weights into the engine, so the next generate samples from it."""
        import torch

        weight_dtype = None if self.dtype == "auto" else getattr(torch, self.dtype)
        with torch.no_grad():
            engine_model(self.llm).load_weights(served_weights(model, weight_dtype))
        # Cached KV blocks were computed with the old weights. vLLM keeps them (and returns False) while a block is
        # still in use; every MBPP prompt shares the 3-shot prefix, so stale blocks would be reused silently.
        if self.llm.reset_prefix_cache() is False:
            raise VLLMEngineError("vLLM kept its prefix cache after a weight sync (reset_prefix_cache returned "
                                  "False: blocks still in use), so rollouts would reuse KV computed with the old "
                                  "weights", hint="sync only between generate calls, with no request in flight")

    def _sampling_params(self, params: SamplingParams, index: int) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,  # 0 = greedy in vLLM too
            top_p=params.top_p,
            seed=request_seed(params, index),
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,  # the contract keeps the stop string in the text
            stop_token_ids=self.eos_ids,
            skip_special_tokens=True,
            logprobs=0 if self.logprobs else None,  # 0: only the sampled token's
        )

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        if params.seeds is not None and len(params.seeds) != len(dialogues):
            raise ValueError(f"{len(params.seeds)} seeds for {len(dialogues)} dialogues: SamplingParams.seeds has "
                             "one per dialogue")
        prompts = [self.encode(d) for d in dialogues]
        outputs = self.llm.generate(
            [self._tokens_prompt(prompt_token_ids=p) for p in prompts],
            [self._sampling_params(params, i) for i in range(len(prompts))],
            use_tqdm=self.progress,
        )
        generations: list[Generation] = []
        for dialogue, prompt_ids, request in zip(dialogues, prompts, outputs, strict=True):
            completion = request.outputs[0]
            token_ids, text, hit = list(completion.token_ids), completion.text, completion.finish_reason == "stop"
            logprobs = completion.logprobs
            cut = runaway_cut(token_ids, self._decode, self.digit_ids) if params.stop_repeats else None
            if cut is not None:  # vLLM cannot stop on the rules: keep what the transformers backend would have made
                token_ids, logprobs, hit = token_ids[:cut], logprobs and logprobs[:cut], True
                text = self._decode(token_ids)
            generation = finish(dialogue, prompt_ids, token_ids, text, hit, params.stop)
            if self.logprobs:
                generation = EngineGeneration(**vars(generation), logprobs=[
                    position[token].logprob for token, position in zip(token_ids, logprobs, strict=True)])
            generations.append(generation)
        return generations
