"""vLLM backend (GPU): the same Generator contract, token ids in and out through `vllm.LLM.generate`.

Prompts are passed as `TokensPrompt(prompt_token_ids=...)`, so the ids built by DialogueEncoder (token-in,
token-out) reach the engine verbatim. vLLM is an optional extra (`pip install 'score-code[vllm]'`): importing
this module never needs it; constructing a VLLMGenerator does.

For training, the engine is colocated with the policy in one process: `sync_weights(policy)` copies the
policy's current weights (LoRA deltas folded in) into the engine's model through vLLM's own `load_weights`, the
pattern TRL's colocate mode uses, so rollouts sample from the policy being trained.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from benchmarks.errors import ScoreCodeError
from benchmarks.generation import Dialogue, Generation, SamplingParams
from score_code.generation.encoding import DialogueEncoder, eos_token_ids, finish


class VLLMUnavailable(ScoreCodeError):
    """vllm is not installed (it needs a CUDA GPU)."""

    hint = "pip install 'score-code[vllm]' on a machine with a CUDA GPU, or use --backend hf"


def import_vllm() -> Any:
    """The vllm module, or VLLMUnavailable with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise VLLMUnavailable(f"the vLLM backend needs the vllm package, which cannot be imported ({exc})") from exc
    return vllm


def vllm_dtype(dtype: str) -> str:
    """Our dtype spellings (fp32, bf16, fp16, or torch names) in vLLM's."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)


def served_weights(model: Any) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs of `model` as a plain HF checkpoint names them, which is what vLLM's `load_weights`
    reads. For a peft LoRA model each adapted weight is base + delta, computed aside: the model is not touched
    (merging and unmerging in place would leave rounding drift in bf16 base weights)."""
    import torch

    if not hasattr(model, "get_base_model"):  # a plain transformers model
        yield from model.state_dict().items()
        return
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, LoraLayer) and not module.merged:
                weight = module.get_base_layer().weight
                delta = sum(module.get_delta_weight(a) for a in module.active_adapters if a in module.lora_A)
                merged[f"{name}.weight"] = weight + delta if torch.is_tensor(delta) else weight
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        name = name.replace(".base_layer.", ".")
        yield name, merged.get(name, tensor)


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


class VLLMGenerator:
    """benchmarks.generation.Generator over a `vllm.LLM` engine."""

    def __init__(self, model: str, tokenizer: Any | None = None, chat: bool | None = None, dtype: str = "auto",
                 seed: int = 0, gpu_memory_utilization: float = 0.85, progress: bool = False,
                 llm: Any | None = None) -> None:
        """`model`: a hub id or an HF checkpoint directory (vLLM loads it); `llm`: an already built engine."""
        vllm = import_vllm()
        from vllm.inputs import TokensPrompt

        self._vllm = vllm
        self._tokens_prompt = TokensPrompt
        self.llm = llm or vllm.LLM(model=model, dtype=dtype, seed=seed,
                                   gpu_memory_utilization=gpu_memory_utilization)
        self.tokenizer = tokenizer or self.llm.get_tokenizer()
        self.progress = progress
        self.eos_ids = eos_token_ids(None, self.tokenizer)
        self.encoder = DialogueEncoder(self.tokenizer, self.eos_ids, chat)
        self.chat = self.encoder.chat

    def encode(self, dialogue: Dialogue) -> list[int]:
        return self.encoder.encode(dialogue)

    def sync_weights(self, model: Any) -> None:
        """Copy `model`'s current weights into the engine, so the next generate samples from it."""
        import torch

        with torch.no_grad():
            engine_model(self.llm).load_weights(served_weights(model))
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def _sampling_params(self, params: SamplingParams, index: int) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,  # 0 = greedy in vLLM too
            top_p=params.top_p,
            # vLLM seeds each request on its own: one seed for all would draw identical samples of a prompt
            seed=None if params.seed is None else params.seed + index,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,  # the contract keeps the stop string in the text
            stop_token_ids=self.eos_ids,
            skip_special_tokens=True,
        )

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        prompts = [self.encode(d) for d in dialogues]
        outputs = self.llm.generate(
            [self._tokens_prompt(prompt_token_ids=p) for p in prompts],
            [self._sampling_params(params, i) for i in range(len(prompts))],
            use_tqdm=self.progress,
        )
        generations = []
        for dialogue, prompt_ids, request in zip(dialogues, prompts, outputs, strict=True):
            completion = request.outputs[0]
            generations.append(finish(dialogue, prompt_ids, list(completion.token_ids), completion.text,
                                      completion.finish_reason == "stop", params.stop))
        return generations
