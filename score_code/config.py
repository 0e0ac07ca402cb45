"""Trainer configuration in TRL's style: one dataclass per trainer, built from shared groups, each field with its
default and help in one place.

    TrainerConfig    the groups every trainer has: model, data, rollout, optim, run
    ScoreConfig      SCoRe: adds objective and schedule, and SCoRe's own rollout, data and run fields
    SFTConfig        the STaR / Pair-SFT baselines: adds the baseline group

Settings apply in order: dataclass defaults, then `--config recipe.yaml`, then CLI flags. A YAML key, a CLI flag
and a field share one spelling (`beta2` / `--beta2`; `--init-from` is accepted as an alias of `--init_from`), and
keys are unique across a config's groups, so recipes are flat mappings. Unknown keys and type mismatches are errors
that name the key. A recipe shared by several trainers may hold keys that only another trainer reads: those are
skipped with a note. The resolved config is saved flat as `config.json`, itself a valid recipe.
Paper defaults (docs/method.md §4): Adam, lr 1e-5, temperature 1.0, alpha 10, beta1 0.01, beta2 0.25.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from benchmarks.errors import ScoreCodeError

RECIPES_DIR = Path(__file__).parent / "recipes"


class ConfigError(ScoreCodeError):
    """A recipe or flag is wrong; the message names the key (and the file when there is one)."""


def config_field(default: Any, help: str) -> Any:
    """A config field: its default and the help text its CLI flag shows."""
    return field(default=default, metadata={"help": help})


# --- groups shared by every trainer ---------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    model: str = config_field("", "base model: a path, a hub id (offline cache) or a .gguf file; '' = the embedded "
                                  "default SmolLM2-135M-Instruct. It is also the frozen KL reference.")
    init_from: str = config_field("", "start the policy from this checkpoint directory (e.g. a stage-I run's "
                                      "checkpoint-N); the reference stays --model")
    dtype: Literal["auto", "float32", "bfloat16"] = config_field(
        "auto", "compute dtype (trained weights stay float32); auto = bfloat16 on a bf16-capable GPU or on a CPU "
        "with native bf16 (AVX512-BF16, AMX), else float32")
    backend: Literal["hf", "vllm"] = config_field(
        "hf", "generation backend for rollouts: the policy itself through transformers, or a vLLM engine colocated "
              "in the (single) training process whose weights are synced from the policy after each update")
    vllm_gpu_memory_utilization: float = config_field(
        0.3, "backend vllm: share of GPU memory the engine may take (weights + KV cache); the rest is left to training")
    lora: bool = config_field(False, "train a LoRA adapter (peft); the reference is the same model with the adapter "
                                     "disabled")
    lora_r: int = config_field(16, "LoRA rank")
    lora_alpha: int = config_field(32, "LoRA scaling numerator (scale = lora_alpha / lora_r)")
    lora_dropout: float = config_field(0.0, "LoRA dropout; 0 keeps the reference comparison exact")
    lora_target_modules: str = config_field("all-linear", "peft target_modules: 'all-linear' or comma-separated "
                                                          "module names")
    gradient_checkpointing: bool = config_field(False, "recompute activations in backward to save memory")


@dataclass
class DataConfig:
    tasks: str = config_field("mbpp", "training tasks: 'mbpp' (prompt form: mbpp_shots) or a task file (.jsonl) "
                                      "readable by benchmarks.tasks.load_tasks")
    mbpp_path: str = config_field("", "MBPP jsonl (the original release); '' = env SCORE_CODE_MBPP")
    train_split: str = config_field("train", "split of --tasks used for training (MBPP train = task_ids 601-974)")
    max_train_tasks: int = config_field(0, "use only the first N training tasks (0 = all); for smoke tests")
    mbpp_shots: int = config_field(
        3, "prompt form of MBPP-format training tasks (from 'mbpp' or a task file): the first N of the canonical 3 "
           "shots (shots from --mbpp_path / $SCORE_CODE_MBPP), 0 = zero-shot with the task's asserts shown (a fifth "
           "of the 3-shot prompt's length). Evaluation keeps the standard 3-shot prompt")


@dataclass
class RolloutConfig:
    samples_per_prompt: int = config_field(4, "k two-attempt episodes per task; the RLOO baseline needs k >= 2")
    max_new_tokens: int = config_field(256, "token budget of each attempt")
    temperature: float = config_field(1.0, "sampling temperature of training rollouts (paper: 1.0)")
    top_p: float = config_field(1.0, "nucleus sampling for rollouts; SCoRe training needs 1.0 (its loss is the "
                                     "full distribution's log-prob); the SFT baselines accept less")
    generation_batch_size: int = config_field(16, "sequences per generate call (memory vs speed)")


@dataclass
class OptimConfig:
    learning_rate: float = config_field(1e-5, "Adam learning rate (paper: 1e-5)")
    adam_beta1: float = config_field(0.9, "Adam beta1")
    adam_beta2: float = config_field(0.999, "Adam beta2")
    weight_decay: float = config_field(0.0, "AdamW weight decay; 0 = plain Adam as in the paper")
    warmup_steps: int = config_field(0, "linear learning-rate warm-up steps, then constant")
    max_grad_norm: float = config_field(1.0, "gradient clipping (0 = off)")
    micro_batch_size: int = config_field(4, "sequences per forward/backward; a step accumulates gradients over its "
                                            "whole batch")


@dataclass
class RunConfig:
    output_dir: str = config_field("runs/score", "run directory: config.json, metrics.jsonl, tensorboard/, "
                                                 "checkpoint-N/")
    resume: bool = config_field(False, "continue from the latest checkpoint in output_dir (refuses a non-empty "
                                       "output_dir otherwise)")
    seed: int = config_field(0, "seed of task sampling, generation and dropout")
    save_steps: int = config_field(50, "checkpoint every N global steps (and at the end)")
    save_total_limit: int = config_field(2, "keep the newest N checkpoints (the best-reward one is never pruned)")
    sandbox_backend: Literal["docker", "local", "remote"] = config_field(
        "docker", "grader: the hardened Docker sandbox, local (rlimits only, no isolation: trusted code only) or "
                  "remote (hosts running `sandbox serve`; a sandbox_url, or $SANDBOX_URL, implies it)")
    sandbox_url: str = config_field("", "remote grader URLs, comma-separated (http://grader1:8080,http://grader2:8080)"
                                        "; '' = $SANDBOX_URL when set")
    sandbox_token_file: str = config_field("", "file holding the remote graders' bearer token ('' = $SANDBOX_TOKEN)")
    sandbox_workers: int = config_field(0, "programs graded in parallel (0 = one per core; remote: the hosts' own)")
    sandbox_timeout_s: float = config_field(
        0.0, "per program: 0 = per task, the sandbox's limit or 4 x the reference solution's runtime if more "
             "(measured once per machine, cached); > 0 = this flat timeout for every task")
    progress: bool = config_field(True, "show a tqdm progress bar")

    def sandbox_options(self) -> dict[str, Any]:
        """Sandbox(**options) for the grader these fields choose, by the rule every command shares
        (sandbox.remote_backend.sandbox_options); a bad URL or token file is a ConfigError naming the field."""
        from sandbox.errors import SandboxError
        from sandbox.remote_backend import sandbox_options

        try:
            options = sandbox_options(self.sandbox_backend, self.sandbox_url, self.sandbox_token_file,
                                      url_source="sandbox_url", token_source="sandbox_token_file")
        except SandboxError as exc:
            raise ConfigError(str(exc), hint=exc.hint or None) from None
        return {**options, "workers": self.sandbox_workers or None}


# --- SCoRe's own fields and groups ----------------------------------------------------------------------------------


@dataclass
class ScoreDataConfig(DataConfig):
    eval_split: str = config_field("validation", "held-out split for evaluation during training (MBPP 511-600)")


@dataclass
class ScoreRolloutConfig(RolloutConfig):
    prompts_per_step: int = config_field(4, "distinct tasks per optimizer step per process")
    offline_ratio: float = config_field(0.0, "stage II: fraction of episodes whose attempt 1 was sampled once from the "
                                             "reference model (offline first attempts; only attempt 2 is trained on "
                                             "them)")


@dataclass
class ObjectiveConfig:
    alpha: float = config_field(10.0, "stage-II bonus: attempt-2 reward = r2 + alpha * (r2 - r1)")
    beta1: float = config_field(0.01, "KL coefficient on attempt 2 (stage I) and on both attempts (stage II)")
    beta2: float = config_field(0.25, "stage-I KL coefficient on attempt 1: keeps the first attempt near the "
                                      "reference")
    baseline: Literal["rloo", "none"] = config_field(
        "rloo", "advantage baseline: leave-one-out over the k samples of a task per attempt, or none (plain "
                "REINFORCE as in the paper)")
    loss_aggregation: Literal["token", "sequence"] = config_field(
        "token", "average each attempt's per-token loss over all its tokens in the batch, or per episode first")
    kl_estimator: Literal["k3", "k2"] = config_field(
        "k3", "per-token KL estimator: k3 = exp(d) - d - 1 (its gradient is, in expectation, that of KL(ref||pi)) or "
              "k2 = 0.5 d^2 (that of KL(pi||ref)), d = log ref - log pi (docs/method.md §4.3)")
    importance_sampling_cap: float = config_field(
        2.0, "backend vllm: truncate the per-token importance weight pi / pi_engine at this value (0 = no "
             "correction); it corrects for the engine's bf16 copy of the weights")
    skip_zero_advantage_groups: bool = config_field(
        False, "dynamic sampling (DAPO): leave out of the update every task group whose advantages are all 0 (its k "
               "episodes scored alike), KL terms included; a step with no group left makes no optimizer step. Off: "
               "the paper's loss, where such groups still train their KL terms")


@dataclass
class ScheduleConfig:
    schedule: str = config_field("1,2", "stages in order, comma-separated: '1,2' (default) or '1,2,1,2' "
                                        "(interleaved); `train stage1` / `train stage2` override it")
    stage1_steps: int = config_field(100, "optimizer steps per stage-I phase")
    stage2_steps: int = config_field(100, "optimizer steps per stage-II phase")
    max_steps: int = config_field(0, "stop after this global step even if the schedule is longer (0 = run it all); "
                                     "`--resume` continues")


@dataclass
class ScoreRunConfig(RunConfig):
    log_completions: int = config_field(2, "episodes per step written to completions.jsonl")
    eval_steps: int = config_field(0, "evaluate on eval_split every N steps through benchmarks.evaluate (0 = off)")
    eval_max_tasks: int = config_field(20, "tasks of eval_split used per evaluation (0 = all)")
    eval_max_new_tokens: int = config_field(256, "token budget per attempt during evaluation (greedy)")


# --- the baselines' group -------------------------------------------------------------------------------------------


@dataclass
class BaselineConfig:
    iterations: int = config_field(3, "STaR rounds of sample -> filter -> train (paper: 3); pair-sft always does one")
    plus: bool = config_field(False, "the D+ variants: also keep correct->correct traces (STaR) or pairs (Pair-SFT)")
    loss_on: Literal["attempt2", "both"] = config_field("attempt2", "tokens that carry loss: y2 only, or y1 and y2")
    epochs: int = config_field(1, "passes over each round's dataset (paper Pair-SFT: 1)")
    sft_batch_size: int = config_field(16, "examples per optimizer step (micro_batch_size of them per forward pass)")
    first_round_episodes: str = config_field(
        "", "a `score-code filter` output directory (or its episodes.jsonl) of the starting model on these tasks, "
            "sampled with this run's prompt form: round 1 builds its data from those traces (all their samples) "
            "instead of sampling; '' = sample samples_per_prompt traces per task")


# --- the trainers' configs ------------------------------------------------------------------------------------------

C = TypeVar("C", bound="TrainerConfig")


@dataclass
class TrainerConfig:
    """The groups every trainer has; subclasses add or widen groups. Keys are looked up across all groups."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def groups(cls) -> dict[str, type]:
        """Group name -> group dataclass, in declaration order."""
        return _groups(cls)

    @classmethod
    def keys(cls) -> dict[str, tuple[str, Any]]:
        """Flat key -> (group name, resolved field type), for every field of every group."""
        return _keys(cls)

    def get(self, key: str) -> Any:
        return getattr(getattr(self, self.keys()[key][0]), key)

    def apply(self, values: dict[str, Any], source: str = "", skip_other_trainers: bool = False) -> list[str]:
        """Set flat `key: value` pairs; unknown keys and wrong types raise ConfigError naming them. With
        `skip_other_trainers` (a recipe shared between trainers), keys that only another trainer's config has are
        skipped and returned."""
        where = f"{source}: " if source else ""
        keys, skipped = self.keys(), []
        for key, value in values.items():
            if key not in keys:
                if key in _other_trainer_keys(type(self)):
                    if skip_other_trainers:
                        skipped.append(key)
                        continue
                    raise ConfigError(f"{where}{key} is a setting of another trainer; "
                                      f"{type(self).__name__} has no such key")
                raise ConfigError(f"{where}unknown config key {key!r} (see the trainer's --help)")
            group, typ = keys[key]
            setattr(getattr(self, group), key, _coerce(key, value, typ, where))
        return skipped

    def validate(self: C) -> C:
        """Cross-field checks; each message names the values and the fix."""
        for key in ("samples_per_prompt", "max_new_tokens", "micro_batch_size", "generation_batch_size",
                    "save_total_limit", "save_steps"):
            if self.get(key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {self.get(key)}")
        if not 0 <= self.data.mbpp_shots <= 3:
            raise ConfigError(f"mbpp_shots must be 0 (zero-shot with the asserts), 1, 2 or 3 (MBPP's canonical shots), "
                              f"got {self.data.mbpp_shots}")
        if self.rollout.temperature <= 0:
            raise ConfigError(f"temperature must be > 0: training samples its episodes (paper: 1.0), got "
                              f"{self.rollout.temperature}")
        if self.run.sandbox_timeout_s < 0:
            raise ConfigError(f"sandbox_timeout_s must be >= 0 (0 = per task, calibrated), got "
                              f"{self.run.sandbox_timeout_s}")
        self.run.sandbox_options()  # a bad URL or token file is refused before anything loads
        if self.run.sandbox_url:
            self.run.sandbox_backend = "remote"  # implied by the URL: config.json says which grader the run used
        return self

    def to_flat_dict(self) -> dict[str, Any]:
        return {k: v for group in self.groups() for k, v in dataclasses.asdict(getattr(self, group)).items()}

    def save_json(self, path: Path, **extra: Any) -> None:
        """config.json: `extra` (e.g. the method) then the flat keys."""
        path.write_text(json.dumps({**extra, **self.to_flat_dict()}, indent=2) + "\n")

    def describe(self) -> str:
        """The resolved config, grouped, one `key: value` per line (printed at start)."""
        lines = []
        for group in self.groups():
            lines.append(f"[{group}]")
            lines += [f"  {k}: {v!r}" for k, v in dataclasses.asdict(getattr(self, group)).items()]
        return "\n".join(lines)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """`--config RECIPE` and one flag per field, under one argument group per config group."""
        parser.add_argument("--config", metavar="RECIPE", help="YAML recipe (flat keys = the flags below without --)")
        for group, group_cls in cls.groups().items():
            add_dataclass_arguments(parser.add_argument_group(group), group_cls)

    @classmethod
    def from_flat(cls: type[C], values: dict[str, Any], source: str = "") -> C:
        """A validated config from flat `key: value` pairs over the defaults (what a recipe holds)."""
        config = cls()
        config.apply(values, source)
        return config.validate()

    @classmethod
    def from_args(cls: type[C], args: argparse.Namespace, command: str = "") -> C:
        """Defaults, then the --config recipe (other trainers' keys skipped, with a note), then the flags present in
        `args`. ConfigErrors point at `command --help`."""
        try:
            config = cls()
            if getattr(args, "config", None):
                skipped = config.apply(load_recipe(args.config), source=args.config, skip_other_trainers=True)
                if skipped:
                    print(f"{args.config}: not used by {command or cls.__name__}: {', '.join(skipped)}",
                          file=sys.stderr)
            config.apply({k: v for k, v in vars(args).items() if k in cls.keys()}, source="command line")
            return config.validate()
        except ConfigError as e:
            if command and not e.hint:
                e.hint = f"see `{command} --help`"
            raise


@dataclass
class ScoreConfig(TrainerConfig):
    """SCoRe stage I / stage II (score_code.train.score)."""

    data: ScoreDataConfig = field(default_factory=ScoreDataConfig)
    rollout: ScoreRolloutConfig = field(default_factory=ScoreRolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: ScoreRunConfig = field(default_factory=ScoreRunConfig)

    def stages(self) -> list[int]:
        """The schedule as a list of stage numbers, e.g. [1, 2, 1, 2]."""
        return parse_schedule(self.schedule.schedule)

    def validate(self) -> ScoreConfig:
        super().validate()
        parse_schedule(self.schedule.schedule)
        r, o = self.rollout, self.objective
        if r.prompts_per_step < 1:
            raise ConfigError(f"prompts_per_step must be >= 1, got {r.prompts_per_step}")
        if o.baseline == "rloo" and r.samples_per_prompt < 2:
            raise ConfigError(f"baseline=rloo needs samples_per_prompt >= 2 (got {r.samples_per_prompt}); "
                              "raise samples_per_prompt or set baseline=none")
        if not 0.0 <= r.offline_ratio <= 1.0:
            raise ConfigError(f"offline_ratio must be in [0, 1], got {r.offline_ratio}")
        if r.top_p != 1.0:
            raise ConfigError(f"top_p must be 1.0 for SCoRe training, got {r.top_p}: the loss uses the log-probs of "
                              "the full distribution at the sampling temperature, not of the nucleus")
        if o.importance_sampling_cap < 0:
            raise ConfigError(f"importance_sampling_cap must be >= 0 (0 = off), got {o.importance_sampling_cap}")
        return self


@dataclass
class SFTConfig(TrainerConfig):
    """The supervised baselines STaR and Pair-SFT (score_code.train.sft)."""

    baseline: BaselineConfig = field(default_factory=BaselineConfig)

    def validate(self) -> SFTConfig:
        super().validate()
        for key in ("iterations", "epochs", "sft_batch_size"):
            if self.get(key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {self.get(key)}")
        return self


TRAINER_CONFIGS: tuple[type[TrainerConfig], ...] = (ScoreConfig, SFTConfig)


def parse_schedule(text: str) -> list[int]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages or any(s not in ("1", "2") for s in stages):
        raise ConfigError(f"schedule must be a comma-separated list of 1 and 2 (e.g. '1,2' or '1,2,1,2'), "
                          f"got {text!r}")
    return [int(s) for s in stages]


# --- fields, flags, recipes -----------------------------------------------------------------------------------------


@functools.cache
def _groups(cls: type) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@functools.cache
def _keys(cls: type) -> dict[str, tuple[str, Any]]:
    out: dict[str, tuple[str, Any]] = {}
    for group, group_cls in _groups(cls).items():
        hints = typing.get_type_hints(group_cls)
        for f in dataclasses.fields(group_cls):
            if f.name in out:
                raise TypeError(f"{cls.__name__}: key {f.name!r} is in groups {out[f.name][0]} and {group}")
            out[f.name] = (group, hints[f.name])
    return out


@functools.cache
def _other_trainer_keys(cls: type) -> frozenset[str]:
    return frozenset(k for other in TRAINER_CONFIGS for k in other.keys()) - set(_keys(cls))


def _coerce(key: str, value: Any, typ: Any, where: str) -> Any:
    """Check a recipe value against the field type; ints are accepted for float fields, nothing else converts."""
    if typing.get_origin(typ) is Literal:
        if value not in typing.get_args(typ):
            raise ConfigError(f"{where}{key}: {value!r} is not one of {list(typing.get_args(typ))}")
        return value
    expected = {bool: "true/false", float: "a number", int: "an integer", str: "a string"}
    if typ not in expected:
        raise ConfigError(f"{where}{key}: unsupported field type {typ!r}")
    accepted = (int, float) if typ is float else (typ,)
    if not isinstance(value, accepted) or (typ is not bool and isinstance(value, bool)):
        raise ConfigError(f"{where}{key}: expected {expected[typ]}, got {value!r} ({type(value).__name__})")
    return float(value) if typ is float else value


def add_dataclass_arguments(arg_group: argparse._ArgumentGroup, cls: type) -> None:
    """A flag per field of `cls`, spelled like the field (a dashed alias too), typed from its annotation. Defaults
    are SUPPRESSed, so that only flags given on the command line override the recipe."""
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


def builtin_recipes() -> list[str]:
    """Paths of the recipes shipped with the package (score_code/recipes/*.yaml)."""
    return sorted(str(p) for p in RECIPES_DIR.glob("*.yaml"))
