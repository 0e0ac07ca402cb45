"""experiments/cpu_learning/run.py end to end on the tiny model: every step, the outputs, and skip / resume.

The tiny random model never passes a test, so every accuracy is 0 and the SFT baselines find no trace to train on:
this checks the plumbing (filter, five LoRA rows, selection, copied adapters loaded by eval, compare, table,
curves), not learning. The real experiment takes hours and is not part of CI.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = REPO / "experiments" / "cpu_learning"
ROWS = ("score", "stage2_only", "alpha0", "star", "pair_sft")


def _driver():
    sys.path.insert(0, str(EXPERIMENT))  # run.py imports report.py from beside it, as when run as a script
    spec = importlib.util.spec_from_file_location("cpu_learning_run", EXPERIMENT / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def _steps(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_the_experiment_runs_end_to_end_then_skips_and_rebuilds(tiny_model_dir, tmp_path, capsys):
    driver = _driver()
    root, results, adapters = tmp_path / "runs", tmp_path / "results", tmp_path / "adapters"
    config = {
        "model": str(tiny_model_dir), "recipe": str(REPO / "score_code" / "recipes" / "debug_tiny.yaml"),
        "train_overrides": {"stage1_steps": 1, "stage2_steps": 1, "save_steps": 1, "prompts_per_step": 2,
                            "samples_per_prompt": 2, "max_new_tokens": 8, "sft_batch_size": 4},
        "tasks": str(REPO / "tests" / "score_code" / "fixtures" / "baselines_tasks.jsonl"), "train_split": "all",
        "keep": "all", "filter_samples": 1, "star_iterations": 2,
        "evals": [{"name": "humaneval", "dataset": "humaneval", "limit": 2},
                  {"name": "validation", "dataset": "humaneval", "limit": 1}], "selection_set": "validation",
        "eval_max_new_tokens": 8, "sandbox": "local", "timeout_s": 5, "bootstrap_resamples": 200,
        "output_root": str(root), "results_dir": str(results), "adapters_dir": str(adapters)}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the local sandbox's "no isolation" warning, peft's notes
        # --rows base: the filter and base's evaluations only, and a report of those
        assert driver.main(["--config", str(path), "--rows", "base"]) == 0
        base_only = _steps(root)
        assert [s["step"] for s in base_only] == ["filter", "eval/base/humaneval", "eval/base/validation",
                                                  "eval/base/train"]
        assert "| base |" in (results / "results.md").read_text() and not (root / "train").exists()

        assert driver.main(["--config", str(path)]) == 0  # the rest; what --rows base ran is skipped
        first = _steps(root)[len(base_only):]
        assert {s["step"] for s in first if s["status"] == "skipped"} == {s["step"] for s in base_only}
        ran = {s["step"] for s in first if s["status"] == "ran"}
        assert not ran & {s["step"] for s in base_only}
        assert {f"train/{r}" for r in ROWS} <= ran
        assert {f"eval/{r}/{s}" for r in ROWS for s in ("humaneval", "train")} <= ran
        assert "select/score/checkpoint-1" in ran and "select/score/checkpoint-2" in ran  # two to choose from
        assert "eval/score/validation" not in ran  # the chosen checkpoint's selection eval stands for it
        train_cmd = next(s["command"] for s in first if s["step"] == "train/star")
        assert "--first_round_episodes" in train_cmd and "--lora" in train_cmd

        # Outputs: the table with every row and set, the curves, the comparisons, the adapters eval loaded.
        table = (results / "results.md").read_text()
        for name in ("humaneval", "validation", "train"):
            assert f"### {name} (" in table
            compared = (results / "compare" / name / "comparison.md").read_text()
            assert all(f"| {r} |" in compared for r in ("base", *ROWS))
        sections = {h.split("\n")[0]: h for h in table.split("\n## ")[1:]}
        assert all(sections["Runs"].count(f"| {r} |") == 1 for r in ROWS)
        assert all(sections["Evaluation wall time (minutes)"].count(f"| {r} |") == 1 for r in ("base", *ROWS))
        # the RL rows' logs, one window of their two steps; the SFT baselines log no attempts
        log = sections["Training logs"]
        assert all(f"| {r} | 1-2 |" in log for r in ("score", "stage2_only", "alpha0"))
        assert "| star |" not in log and "| pair_sft |" not in log
        for name in ("humaneval", "validation", "train"):
            assert all(table.split(f"### {name} (")[1].split("\n#")[0].count(f"| {r} |") == 1 for r in ROWS)
        assert "| score | 8 | 0.0 | 0.0 | +0.0 [+0.0, +0.0] |" in table  # budget B = (1 + 1) steps x 2 tasks x 2
        assert "| pair_sft | 4 |" in table  # the filter's episodes: 4 tasks x 1
        for row in ("score", "stage2_only", "alpha0"):
            assert (results / "curves" / f"{row}.png").read_bytes()[:4] == b"\x89PNG"
        for row in ROWS:
            assert (adapters / row / "adapter_model.safetensors").is_file()
            evaluated = json.loads((root / "evals" / row / "humaneval" / "config.json").read_text())["config"]
            assert evaluated["model"] == str(adapters / row)
        star_episodes = json.loads((root / "train" / "star" / "DONE.json").read_text())["episodes"]
        assert star_episodes == 4 * 1 + 4 * 1 == 8  # the filter's round (4 tasks x 1) + one round of k' = 1: B

        # A rerun skips every step, even where the checkpoints are gone (they are not committed: a later session's
        # fresh checkout has the selected adapters and the outputs only); a removed output is rebuilt, alone.
        for checkpoint in (root / "train" / "score").glob("checkpoint-*"):
            shutil.rmtree(checkpoint)
        capsys.readouterr()
        assert driver.main(["--config", str(path)]) == 0
        second = _steps(root)[len(base_only) + len(first):]
        assert {s["status"] for s in second} == {"skipped"}
        assert "[skip] train/score" in capsys.readouterr().err
        for file in (root / "evals" / "alpha0" / "humaneval").iterdir():
            file.unlink()
        # --report-only runs nothing and writes what has finished, naming what has not.
        assert driver.main(["--config", str(path), "--report-only"]) == 0
        partial = (results / "results.md").read_text()
        assert "**Partial: the run has not finished.** Not evaluated yet (row: sets): alpha0 (humaneval)." in partial
        humaneval_table = partial.split("### humaneval (")[1].split("###")[0]
        assert "| alpha0 |" not in humaneval_table and "| score |" in humaneval_table
        assert "| alpha0 |" in partial.split("### train (")[1].split("## Runs")[0]
        assert len(_steps(root)) == len(base_only) + len(first) + len(second)  # nothing ran, nothing logged
        (root / "train" / "alpha0" / "DONE.json").unlink()  # as if killed after its last checkpoint
        metrics_before = (root / "train" / "alpha0" / "metrics.jsonl").read_text()
        assert driver.main(["--config", str(path)]) == 0
        third = _steps(root)[len(base_only) + len(first) + len(second):]
        assert sorted(s["step"] for s in third if s["status"] == "ran") == ["eval/alpha0/humaneval", "train/alpha0"]
        resumed = next(s["command"] for s in third if s["step"] == "train/alpha0")
        assert resumed.endswith("--resume --alpha 0")
        assert (root / "train" / "alpha0" / "metrics.jsonl").read_text() == metrics_before  # nothing retrained
        assert (root / "evals" / "alpha0" / "humaneval" / "metrics.json").is_file()


def test_no_script_beside_the_driver_shadows_a_standard_module():
    """run.py runs as a script, so its folder is first on sys.path: a `signal.py` there once replaced the standard
    `signal` and the driver died importing torch."""
    scripts = {p.stem for p in EXPERIMENT.glob("*.py")}
    assert "run" in scripts and not scripts & set(sys.stdlib_module_names)


def test_the_committed_config_loads_and_names_files_that_exist():
    """The real experiment's config, as run.sh reads it from the repository root: its recipe, training tasks and
    every eval set given as a file are in the repository."""
    config = _driver().Experiment.load(EXPERIMENT / "config.yaml")
    assert (REPO / config.recipe).is_file() and (REPO / config.tasks).is_file()
    files = [e["dataset"] for e in config.evals if e["dataset"] not in ("humaneval", "mbpp")]
    assert files and all((REPO / f).is_file() for f in files)
    assert config.selection_set == "mbpp_validation"  # issue #16: the only set a choice may look at


def test_a_step_killed_mid_way_is_logged_with_the_time_it_ran(tmp_path, monkeypatch):
    """running.json is there while a step runs; a driver started after a kill logs the step as killed, with the
    seconds up to its last heartbeat, and wall_seconds counts them with the finished invocations'."""
    import score_code.cli

    driver = _driver()
    steps_class = driver.Steps
    steps = steps_class(tmp_path)
    seen = []
    monkeypatch.setattr(score_code.cli, "main", lambda argv: seen.append(
        json.loads((tmp_path / "running.json").read_text())) or 0)
    assert steps.run("train/score", tmp_path / "DONE", ["train", "score"])
    assert seen[0]["step"] == "train/score" and seen[0]["command"] == "score-code train score"
    assert not (tmp_path / "running.json").exists()
    ran = steps.wall_seconds("train/score")

    heartbeat = {"step": "train/score", "command": "score-code train score", "started": time.time() - 60}
    (tmp_path / "running.json").write_text(json.dumps({**heartbeat, "alive": time.time()}))
    with pytest.raises(driver.DriverError, match="another driver is running step train/score"):
        steps_class(tmp_path)  # a live heartbeat: a second driver is refused
    steps_class(tmp_path, driving=False)  # --report-only reads, and leaves the live driver's heartbeat alone
    assert (tmp_path / "running.json").exists() and _steps(tmp_path)[-1]["status"] == "ran"

    (tmp_path / "running.json").write_text(json.dumps({**heartbeat, "started": 100.0, "alive": 160.0}))
    steps_class(tmp_path)  # the next session's driver, long after the last heartbeat
    assert not (tmp_path / "running.json").exists()
    assert _steps(tmp_path)[-1]["status"] == "killed" and _steps(tmp_path)[-1]["seconds"] == 60.0
    assert steps_class(tmp_path).wall_seconds("train/score") == ran + 60.0
