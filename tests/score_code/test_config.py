"""Config resolution: defaults < recipe < flags; unknown keys and wrong types are errors naming the key."""
from __future__ import annotations

import argparse
import json

import pytest

from score_code import config as cfg


def _parse(argv: list[str], config_cls: type[cfg.TrainerConfig] = cfg.ScoreConfig) -> cfg.TrainerConfig:
    parser = argparse.ArgumentParser()
    config_cls.add_arguments(parser)
    return config_cls.from_args(parser.parse_args(argv))


def test_paper_defaults():
    c = cfg.ScoreConfig()
    assert (c.objective.alpha, c.objective.beta1, c.objective.beta2) == (10.0, 0.01, 0.25)
    assert c.rollout.temperature == 1.0 and c.optim.learning_rate == 1e-5
    assert c.stages() == [1, 2]


def test_recipe_then_flags_override_in_order(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("beta2: 0.5\nlearning_rate: 1\nschedule: '1,2,1,2'\nlora: true\n")
    c = _parse(["--config", str(recipe), "--beta2", "0.7", "--init-from", "ckpt", "--no-lora"])
    assert c.objective.beta2 == 0.7  # flag beats recipe
    assert c.optim.learning_rate == 1.0 and isinstance(c.optim.learning_rate, float)  # int accepted for float
    assert c.stages() == [1, 2, 1, 2]
    assert c.model.init_from == "ckpt" and c.model.lora is False
    assert c.objective.alpha == 10.0  # untouched default


def test_unknown_key_names_key_and_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("beta_2: 0.5\n")
    with pytest.raises(cfg.ConfigError, match=r"bad.yaml: unknown config key 'beta_2'"):
        _parse(["--config", str(recipe)])


@pytest.mark.parametrize("text, message", [
    ("samples_per_prompt: 2.5\n", "samples_per_prompt: expected an integer"),
    ("lora: 'yes'\n", "lora: expected true/false"),
    ("beta1: fast\n", "beta1: expected a number"),
    ("baseline: mean\n", r"baseline: 'mean' is not one of \['rloo', 'none'\]"),
    ("max_steps: true\n", "max_steps: expected an integer"),
])
def test_type_mismatch_names_key(tmp_path, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(cfg.ConfigError, match=message):
        _parse(["--config", str(recipe)])


def test_cross_field_checks():
    with pytest.raises(cfg.ConfigError, match="baseline=rloo needs samples_per_prompt >= 2"):
        _parse(["--samples_per_prompt", "1"])
    assert _parse(["--samples_per_prompt", "1", "--baseline", "none"]).rollout.samples_per_prompt == 1
    with pytest.raises(cfg.ConfigError, match="schedule must be"):
        _parse(["--schedule", "1,3"])
    assert cfg.SFTConfig.from_flat({"sandbox_timeout_s": 20}).run.sandbox_timeout_s == 20.0  # flat; 0 = per task
    with pytest.raises(cfg.ConfigError, match="sandbox_timeout_s must be >= 0"):
        _parse(["--sandbox_timeout_s", "-1"])


def test_a_sandbox_url_makes_the_grader_remote_and_bad_settings_name_the_field(tmp_path, monkeypatch):
    monkeypatch.delenv("SANDBOX_URL", raising=False)
    (tmp_path / "token").write_text("tok\n")
    c = _parse(["--sandbox-url", "http://g1:8080,http://g2:8080", "--sandbox-token-file", str(tmp_path / "token")])
    assert c.run.sandbox_backend == "remote"  # implied, and so recorded in config.json
    assert c.run.sandbox_options() == {"backend": "remote", "urls": ["http://g1:8080", "http://g2:8080"],
                                       "token": "tok", "workers": None}
    assert cfg.SFTConfig.from_flat({"sandbox_workers": 2}).run.sandbox_options() == {"backend": "docker",
                                                                                     "workers": 2}
    with pytest.raises(cfg.ConfigError, match="sandbox_url: 'g1:8080' is not a grader URL"):
        _parse(["--sandbox_url", "g1:8080"])
    with pytest.raises(cfg.ConfigError, match="sandbox_url is for the remote backend; the backend is 'local'"):
        cfg.ScoreConfig.from_flat({"sandbox_url": "http://g1:8080", "sandbox_backend": "local"})
    with pytest.raises(cfg.ConfigError, match="the remote backend needs grader URLs: sandbox_url"):
        _parse(["--sandbox_backend", "remote"])
    with pytest.raises(cfg.ConfigError, match="sandbox_token_file .*missing: No such file"):
        _parse(["--sandbox-url", "http://g1:8080", "--sandbox-token-file", str(tmp_path / "missing")])


def test_training_refuses_nucleus_sampling_and_offers_the_k2_estimator():
    """The loss uses the full distribution's log-probs: top_p < 1 would train on other probabilities than sampled."""
    with pytest.raises(cfg.ConfigError, match="top_p must be 1.0 for SCoRe training"):
        _parse(["--top_p", "0.9"])
    assert cfg.SFTConfig.from_flat({"top_p": 0.9}).rollout.top_p == 0.9  # SFT computes no sampling log-probs
    assert _parse(["--kl_estimator", "k2"]).objective.kl_estimator == "k2"
    with pytest.raises(cfg.ConfigError, match="importance_sampling_cap must be >= 0"):
        _parse(["--importance_sampling_cap", "-1"])


def test_saved_config_json_is_a_recipe(tmp_path):
    c = _parse(["--beta2", "0.9", "--schedule", "2"])
    c.save_json(tmp_path / "config.json")
    flat = json.loads((tmp_path / "config.json").read_text())
    assert flat["beta2"] == 0.9 and set(flat) == set(cfg.ScoreConfig.keys())
    again = _parse(["--config", str(tmp_path / "config.json")])
    assert again == c


@pytest.mark.parametrize("config_cls", cfg.TRAINER_CONFIGS)
def test_flag_field_and_key_share_one_spelling(config_cls):
    parser = argparse.ArgumentParser()
    config_cls.add_arguments(parser)
    names = {opt.removeprefix("--no-").lstrip("-").replace("-", "_")
             for action in parser._actions for opt in action.option_strings}
    assert names == {"h", "help", "config"} | set(config_cls.keys())  # every key has its flag, and nothing else


def test_trainers_share_the_common_groups_and_keep_their_own_keys():
    score, sft = set(cfg.ScoreConfig.keys()), set(cfg.SFTConfig.keys())
    assert set(cfg.TrainerConfig.keys()) == score & sft
    assert {"alpha", "beta2", "schedule", "prompts_per_step", "eval_steps", "log_completions"} <= score - sft
    assert {"iterations", "plus", "loss_on", "epochs", "sft_batch_size"} <= sft - score


def test_a_shared_recipe_skips_the_other_trainers_keys_but_a_flag_cannot_name_them(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("beta2: 0.3\nepochs: 2\nlearning_rate: 1e-4\n")
    c = _parse(["--config", str(recipe)], cfg.SFTConfig)
    assert c.baseline.epochs == 2 and c.optim.learning_rate == 1e-4
    assert "not used by SFTConfig: beta2" in capsys.readouterr().err
    with pytest.raises(cfg.ConfigError, match="beta2 is a setting of another trainer"):
        cfg.SFTConfig().apply({"beta2": 0.5}, source="test")
    with pytest.raises(SystemExit):  # not a flag of the baselines
        _parse(["--beta2", "0.5"], cfg.SFTConfig)


def test_config_errors_from_args_point_at_the_command_help(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("beta3: 1\n")
    parser = argparse.ArgumentParser()
    cfg.ScoreConfig.add_arguments(parser)
    with pytest.raises(cfg.ConfigError) as info:
        cfg.ScoreConfig.from_args(parser.parse_args(["--config", str(recipe)]), "score-code train stage1")
    assert info.value.hint == "see `score-code train stage1 --help`"


@pytest.mark.parametrize("recipe", cfg.builtin_recipes())
def test_builtin_recipes_load(recipe):
    for config_cls in cfg.TRAINER_CONFIGS:
        c = _parse(["--config", recipe], config_cls)
        assert c.describe().startswith("[model]")
