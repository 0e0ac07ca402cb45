"""Generation backends behind benchmarks.generation.Generator: hf.py (transformers, continuous batching) and
vllm.py (a vLLM engine, GPU). encoding.py holds what both share (token-in/token-out dialogue encoding).

`make_generator` is the one factory, used by `score-code eval` (a model loaded by name) and by the trainers (the
policy being trained); `sync_policy` keeps a vLLM engine's copy of the weights equal to the policy's.
"""
from __future__ import annotations

from typing import Any, Literal

from benchmarks.generation import Generator

Backend = Literal["hf", "vllm"]


def make_generator(backend: Backend, model_name: str | None, *, policy: Any = None, tokenizer: Any = None,
                   dtype: str = "auto", device: str = "auto", batch_size: int = 32, chat: bool | None = None,
                   seed: int = 0, progress: bool = False, gpu_memory_utilization: float | None = None) -> Generator:
    """A generator for `model_name` ('' or None = the embedded default).

    Without `policy` the model is loaded here (hf) or by the engine (vllm). With `policy` (training, with its
    `tokenizer`), hf samples the policy itself, and vllm colocates an engine in this process, loaded from
    `model_name` in `dtype` (pass the policy's compute dtype: "auto" would be the checkpoint's), then synced to the
    policy's weights (it may be a checkpoint or carry a LoRA adapter); it returns each token's log-probability.
    """
    if backend == "hf":
        from score_code.generation.hf import HFGenerator

        if policy is None:
            from score_code.models import load_model

            loaded = load_model(model_name or None, dtype=dtype, device=device, float32_logits=True)
            policy, tokenizer = loaded.model, loaded.tokenizer
        return HFGenerator(policy, tokenizer, batch_size=batch_size, chat=chat, progress=progress)
    from score_code.generation.vllm import VLLMGenerator, import_vllm, run_engine_in_process
    from score_code.models import ModelLoadError, adapter_dir, ensure_default_checkpoint

    if policy is None and adapter_dir(model_name) is not None:
        raise ModelLoadError(f"{model_name} is a LoRA adapter; the vllm backend loads full checkpoints only",
                             hint="use --backend hf (it applies the adapter over its base model)")
    import_vllm()  # fail before converting or loading anything
    if policy is not None:
        run_engine_in_process()  # the trainer copies weights into the engine's model object
    engine_kwargs = {} if gpu_memory_utilization is None else {"gpu_memory_utilization": gpu_memory_utilization}
    generator = VLLMGenerator(model_name or str(ensure_default_checkpoint()), tokenizer=tokenizer, chat=chat,
                              dtype=dtype, seed=seed, progress=progress, logprobs=policy is not None,
                              **engine_kwargs)
    if policy is not None:
        generator.sync_weights(policy)
    return generator


def sync_policy(generator: Generator, policy: Any) -> None:
    """After the policy changed: a vLLM engine's copy of the weights is synced (the hf backend samples the policy)."""
    from score_code.generation.vllm import VLLMGenerator

    if isinstance(generator, VLLMGenerator):
        generator.sync_weights(policy)
