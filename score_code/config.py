"""Training configuration: one dataclass per concern, every field with a default and its help in one place.

Settings apply in order: dataclass defaults, then `--config recipe.yaml`, then CLI flags. A YAML key, a CLI flag
and a field share one spelling (`beta2` / `--beta2`; `--init-from` is accepted as an alias of `--init_from`), and
all keys are unique across groups, so recipes are flat mappings. Unknown keys and type mismatches are errors
that name the key. The resolved config is saved flat as `config.json`, which is itself a valid recipe.
Paper defaults (design/score.md section 4): Adam, lr 1e-5, temperature 1.0, alpha 10, beta1 0.01, beta2 0.25.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe or flag is wrong; the message names the key (and the file when there is one)."""


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    model: str = _f("", "base model: a path, a hub id (offline cache) or a .gguf file; '' = the embedded default "
                        "SmolLM2-135M-Instruct. It is also the frozen KL reference.")
    init_from: str = _f("", "start the policy from this checkpoint directory (e.g. a stage-I run's checkpoint-N); "
                            "the reference stays --model")
    dtype: Literal["auto", "float32", "bfloat16"] = _f("auto", "weights dtype; auto = bfloat16 on a bf16-capable "
                                                               "GPU, float32 on CPU")
    backend: Literal["hf", "vllm"] = _f("hf", "generation backend for rollouts: the policy itself through "
                                               "transformers, or a vLLM engine colocated in the (single) training "
                                               "process whose weights are synced from the policy after each update")
    vllm_gpu_memory_utilization: float = _f(0.3, "backend vllm: share of GPU memory the engine may take (weights + "
                                                 "KV cache); the rest is left to training")
    lora: bool = _f(False, "train a LoRA adapter (peft); the reference is the same model with the adapter disabled")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA scaling numerator (scale = lora_alpha / lora_r)")
    lora_dropout: float = _f(0.0, "LoRA dropout; 0 keeps the reference comparison exact")
    lora_target_modules: str = _f("all-linear", "peft target_modules: 'all-linear' or comma-separated module names")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")


@dataclass
class DataConfig:
    tasks: str = _f("mbpp", "training tasks: 'mbpp' (3-shot prompt) or a task file (.jsonl) readable by "
                            "benchmarks.tasks.load_tasks")
    mbpp_path: str = _f("", "MBPP jsonl (the original release); '' = env SCORE_CODE_MBPP")
    train_split: str = _f("train", "split of --tasks used for training (MBPP train = task_ids 601-974)")
    eval_split: str = _f("validation", "held-out split for evaluation during training (MBPP 511-600)")
    max_train_tasks: int = _f(0, "use only the first N training tasks (0 = all); for smoke tests")


@dataclass
class RolloutConfig:
    prompts_per_step: int = _f(4, "distinct tasks per optimizer step per process")
    samples_per_prompt: int = _f(4, "k two-attempt episodes per task; the RLOO baseline needs k >= 2")
    max_new_tokens: int = _f(256, "token budget of each attempt")
    temperature: float = _f(1.0, "sampling temperature of training rollouts (paper: 1.0)")
    top_p: float = _f(1.0, "nucleus sampling for training rollouts; 1.0 keeps them on-policy")
    generation_batch_size: int = _f(16, "sequences per generate call (memory vs speed)")
    offline_ratio: float = _f(0.0, "stage II: fraction of episodes whose attempt 1 was sampled once from the "
                                   "reference model (offline first attempts; only attempt 2 is trained on them)")


@dataclass
class ObjectiveConfig:
    alpha: float = _f(10.0, "stage-II bonus: attempt-2 reward = r2 + alpha * (r2 - r1)")
    beta1: float = _f(0.01, "KL coefficient on attempt 2 (stage I) and on both attempts (stage II)")
    beta2: float = _f(0.25, "stage-I KL coefficient on attempt 1: keeps the first attempt near the reference")
    baseline: Literal["rloo", "none"] = _f("rloo", "advantage baseline: leave-one-out over the k samples of a task "
                                                   "per attempt, or none (plain REINFORCE as in the paper)")
    loss_aggregation: Literal["token", "sequence"] = _f("token", "average each attempt's per-token loss over all "
                                                                 "its tokens in the batch, or per episode first")


@dataclass
class OptimConfig:
    learning_rate: float = _f(1e-5, "Adam learning rate (paper: 1e-5)")
    adam_beta1: float = _f(0.9, "Adam beta1")
    adam_beta2: float = _f(0.999, "Adam beta2")
    weight_decay: float = _f(0.0, "AdamW weight decay; 0 = plain Adam as in the paper")
    warmup_steps: int = _f(0, "linear learning-rate warm-up steps, then constant")
    max_grad_norm: float = _f(1.0, "gradient clipping (0 = off)")
    micro_batch_size: int = _f(4, "episodes per forward/backward; the step accumulates gradients over "
                                  "prompts_per_step * samples_per_prompt episodes")


@dataclass
class ScheduleConfig:
    schedule: str = _f("1,2", "stages in order, comma-separated: '1,2' (default) or '1,2,1,2' (interleaved); "
                              "`train stage1` / `train stage2` override it")
    stage1_steps: int = _f(100, "optimizer steps per stage-I phase")
    stage2_steps: int = _f(100, "optimizer steps per stage-II phase")
    max_steps: int = _f(0, "stop after this global step even if the schedule is longer (0 = run it all); "
                           "`--resume` continues")


@dataclass
class RunConfig:
    output_dir: str = _f("runs/score", "run directory: config.json, metrics.jsonl, completions.jsonl, "
                                       "tensorboard/, checkpoint-N/")
    resume: bool = _f(False, "continue from the latest checkpoint in output_dir (refuses a non-empty "
                             "output_dir otherwise)")
    seed: int = _f(0, "seed of task sampling, generation and dropout")
    save_steps: int = _f(50, "checkpoint every N global steps (and at the end)")
    save_total_limit: int = _f(2, "keep the newest N checkpoints (the best-reward one is never pruned)")
    log_completions: int = _f(2, "episodes per step written to completions.jsonl")
    eval_steps: int = _f(0, "evaluate on eval_split every N steps through benchmarks.evaluate (0 = off)")
    eval_max_tasks: int = _f(20, "tasks of eval_split used per evaluation (0 = all)")
    eval_max_new_tokens: int = _f(256, "token budget per attempt during evaluation (greedy)")
    sandbox_backend: Literal["docker", "local"] = _f("docker", "grader: the hardened Docker sandbox, or local "
                                                               "(rlimits only, no isolation: trusted code only)")
    sandbox_workers: int = _f(0, "programs graded in parallel (0 = one per core)")
    progress: bool = _f(True, "show a tqdm progress bar")


GROUPS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "rollout": RolloutConfig,
    "objective": ObjectiveConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "run": RunConfig,
}


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def stages(self) -> list[int]:
        """The schedule as a list of stage numbers, e.g. [1, 2, 1, 2]."""
        return parse_schedule(self.schedule.schedule)

    def validate(self) -> "TrainConfig":
        """Cross-field checks; each message names the values and the fix."""
        parse_schedule(self.schedule.schedule)
        r, o = self.rollout, self.objective
        for key in ("prompts_per_step", "samples_per_prompt", "max_new_tokens", "micro_batch_size",
                    "generation_batch_size"):
            if get_value(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {get_value(self, key)}")
        if o.baseline == "rloo" and r.samples_per_prompt < 2:
            raise ConfigError(f"baseline=rloo needs samples_per_prompt >= 2 (got {r.samples_per_prompt}); "
                              "raise samples_per_prompt or set baseline=none")
        if not 0.0 <= r.offline_ratio <= 1.0:
            raise ConfigError(f"offline_ratio must be in [0, 1], got {r.offline_ratio}")
        if r.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 for training rollouts (sampling), got {r.temperature}")
        if self.run.save_total_limit < 1:
            raise ConfigError(f"save_total_limit must be >= 1, got {self.run.save_total_limit}")
        return self

    def to_flat_dict(self) -> dict[str, Any]:
        return {k: v for group in GROUPS for k, v in dataclasses.asdict(getattr(self, group)).items()}

    def save_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_flat_dict(), indent=2) + "\n")

    def describe(self) -> str:
        """The resolved config, grouped, one `key: value` per line (printed at start)."""
        lines = []
        for group in GROUPS:
            lines.append(f"[{group}]")
            lines += [f"  {k}: {v!r}" for k, v in dataclasses.asdict(getattr(self, group)).items()]
        return "\n".join(lines)


def parse_schedule(text: str) -> list[int]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages or any(s not in ("1", "2") for s in stages):
        raise ConfigError(f"schedule must be a comma-separated list of 1 and 2 (e.g. '1,2' or '1,2,1,2'), got {text!r}")
    return [int(s) for s in stages]


def _field_types() -> dict[str, tuple[str, Any, dataclasses.Field]]:
    """key -> (group, resolved type, field) for every field of every group."""
    out: dict[str, tuple[str, Any, dataclasses.Field]] = {}
    for group, cls in GROUPS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            out[f.name] = (group, hints[f.name], f)
    return out


FIELDS = _field_types()


def get_value(config: TrainConfig, key: str) -> Any:
    return getattr(getattr(config, FIELDS[key][0]), key)


def _coerce(key: str, value: Any, typ: Any, where: str) -> Any:
    """Check a recipe value against the field type; ints are accepted for float fields, nothing else converts."""
    origin = typing.get_origin(typ)
    if origin is Literal:
        if value not in typing.get_args(typ):
            raise ConfigError(f"{where}{key}: {value!r} is not one of {list(typing.get_args(typ))}")
        return value
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}{key}: expected true/false, got {value!r} ({type(value).__name__})")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}{key}: expected a number, got {value!r} ({type(value).__name__})")
        return float(value)
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}{key}: expected an integer, got {value!r} ({type(value).__name__})")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}{key}: expected a string, got {value!r} ({type(value).__name__})")
        return value
    raise ConfigError(f"{where}{key}: unsupported field type {typ!r}")


def apply_overrides(config: TrainConfig, values: dict[str, Any], source: str = "") -> TrainConfig:
    """Set flat `key: value` pairs on the config; unknown keys and wrong types raise ConfigError naming them."""
    where = f"{source}: " if source else ""
    for key, value in values.items():
        if key not in FIELDS:
            raise ConfigError(f"{where}unknown config key {key!r} (see `score-code train score --help`)")
        group, typ, _ = FIELDS[key]
        setattr(getattr(config, group), key, _coerce(key, value, typ, where))
    return config


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `1e-5` is a string; recipes expect YAML 1.2 floats."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_recipe(path: str | Path) -> dict[str, Any]:
    """A flat YAML (or JSON) mapping of config keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found (built-in recipes: {', '.join(builtin_recipes())})")
    try:
        data = yaml.load(path.read_text(), Loader=_RecipeLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of config keys, got {type(data).__name__}")
    return data


RECIPES_DIR = Path(__file__).parent / "recipes"


def builtin_recipes() -> list[str]:
    """Paths of the recipes shipped with the package (score_code/recipes/*.yaml)."""
    return sorted(str(p) for p in RECIPES_DIR.glob("*.yaml"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field (default SUPPRESS, so only flags given on the command line override the recipe)."""
    parser.add_argument("--config", metavar="RECIPE", help="YAML recipe (flat keys = the flags below without --)")
    for group, cls in GROUPS.items():
        add_dataclass_arguments(parser.add_argument_group(group), cls)


def add_dataclass_arguments(arg_group: argparse._ArgumentGroup, cls: type) -> None:
    """A flag per field of `cls`, spelled like the field (a dashed alias too), typed from its annotation."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{f.metadata['help']} (default: {f.default!r})"}
        if typ is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(typ) is Literal:
            kw["choices"] = list(typing.get_args(typ))
        else:
            kw["type"] = typ
            kw["metavar"] = typ.__name__.upper()
        arg_group.add_argument(*names, **kw)


def from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --config recipe, then the flags present in `args`."""
    config = TrainConfig()
    if getattr(args, "config", None):
        apply_overrides(config, load_recipe(args.config), source=args.config)
    flags = {k: v for k, v in vars(args).items() if k in FIELDS}
    apply_overrides(config, flags, source="command line")
    return config.validate()
