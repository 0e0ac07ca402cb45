"""vLLM backend (GPU): the same Generator contract, token ids in and out through `vllm.LLM.generate`.

Prompts are passed as `TokensPrompt(prompt_token_ids=...)`, so the ids built by DialogueEncoder (token-in,
token-out) reach the engine verbatim. vLLM is an optional extra (`pip install 'score-code[vllm]'`): importing
this module never needs it; constructing a VLLMGenerator does.

This backend serves a model loaded by vLLM itself (e.g. for evaluation); a policy being trained with the HF
backend is not visible to it unless its weights are saved and reloaded.
"""
from __future__ import annotations

from typing import Any

from benchmarks.generation import Dialogue, Generation, SamplingParams
from score_code.generation import DialogueEncoder, eos_token_ids, finish


class VLLMUnavailable(ImportError):
    """vllm is not installed (it needs a CUDA GPU)."""

    hint = "pip install 'score-code[vllm]' on a machine with a CUDA GPU, or use --backend hf"


def import_vllm() -> Any:
    """The vllm module, or VLLMUnavailable with the install hint."""
    try:
        import vllm
    except ImportError as exc:
        raise VLLMUnavailable(f"the vLLM backend needs the vllm package, which cannot be imported ({exc})") from exc
    return vllm


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

    def _sampling_params(self, params: SamplingParams) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,  # 0 = greedy in vLLM too
            top_p=params.top_p,
            seed=params.seed,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,  # the contract keeps the stop string in the text
            stop_token_ids=self.eos_ids,
            skip_special_tokens=True,
        )

    def generate(self, dialogues: list[Dialogue], params: SamplingParams) -> list[Generation]:
        prompts = [self.encode(d) for d in dialogues]
        outputs = self.llm.generate(
            [self._tokens_prompt(prompt_token_ids=p) for p in prompts],
            self._sampling_params(params),
            use_tqdm=self.progress,
        )
        generations = []
        for dialogue, prompt_ids, request in zip(dialogues, prompts, outputs):
            completion = request.outputs[0]
            generations.append(finish(dialogue, prompt_ids, list(completion.token_ids), completion.text,
                                      completion.finish_reason == "stop", params.stop))
        return generations
