"""The synthetic task family (benchmarks/synth.py): files load, references pass every assert in the Docker sandbox,
splits hold disjoint functions, and a seed gives byte-identical files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import synth
from benchmarks.prompts import first_user_message
from benchmarks.tasks import Task, load_task_file, load_tasks
from sandbox.verdict import Status
from score_code.cli import main


@pytest.fixture(scope="module")
def default_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.write(out)
    return out


@pytest.fixture(scope="module")
def splits(default_dir: Path) -> dict[str, list[Task]]:
    return {split: load_task_file(default_dir / synth.SPLIT_FILES[split]) for split in synth.SPLITS}


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_every_task_loads_as_an_mbpp_task_with_shown_and_hidden_asserts(default_dir: Path,
                                                                       splits: dict[str, list[Task]]) -> None:
    tasks = [t for ts in splits.values() for t in ts]
    assert 2000 <= len(tasks) <= 4000
    assert len({t.task_id for t in tasks}) == len(tasks)
    for t in tasks:
        assert t.test_format == "mbpp" and t.reference_solution.startswith(f"def {t.entry_point}(")
        assert len(t.tests) == synth.SHOWN_TESTS + synth.HIDDEN_TESTS and len(set(t.tests)) == len(t.tests)
        assert t.test_list_for_prompt == t.tests[: synth.SHOWN_TESTS]
        assert all(a.startswith(f"assert {t.entry_point}(") for a in t.tests)
        assert {"family", "template", "difficulty"} <= set(t.metadata)
    assert {t.metadata["family"] for t in tasks} >= {"arithmetic", "strings", "lists", "filtering", "counting",
                                                     "conditionals", "loops", "dicts", "math"}
    assert load_tasks(str(default_dir / "train.jsonl")) == splits["train"]  # as eval and the trainers read it


def test_the_prompt_is_mbpps_zero_shot_form_with_the_shown_asserts_only(splits: dict[str, list[Task]]) -> None:
    task = splits["validation"][0]
    text = first_user_message(task)
    assert text == (f"You are an expert Python programmer, and here is your task: {task.prompt} Your code should pass "
                    "these tests:\n\n" + "\n".join(task.tests[:3]) + "\n[BEGIN]\n")
    assert not any(hidden in text for hidden in task.tests[3:])


@pytest.mark.docker
def test_every_reference_passes_all_its_asserts_in_the_sandbox(splits: dict[str, list[Task]], docker_sandbox) -> None:
    tasks = [t for ts in splits.values() for t in ts]
    results = docker_sandbox.run_batch([t.to_job(t.reference_solution, timeout_s=10.0) for t in tasks])
    failed = {t.task_id: f"{r.status.value}: {r.first_failure}" for t, r in zip(tasks, results, strict=True)
              if r.status is not Status.PASSED}
    assert failed == {}
    assert all(r.reward == 1.0 and r.expected_tests == len(t.tests) for t, r in zip(tasks, results, strict=True))


def test_held_out_splits_ask_for_functions_no_training_task_asks_for(splits: dict[str, list[Task]]) -> None:
    def key(t: Task) -> tuple:
        return t.metadata["template"], tuple(t.metadata["key"])

    def text(t: Task) -> tuple:
        return t.prompt, t.tests

    train = splits["train"]
    for held_out in ("validation", "test"):
        assert splits[held_out], held_out
        assert not {text(t) for t in splits[held_out]} & {text(t) for t in train}
        assert not {key(t) for t in splits[held_out]} & {key(t) for t in train}
    assert not {key(t) for t in splits["validation"]} & {key(t) for t in splits["test"]}
    # another seed draws other keys, wording and inputs, but never moves a key to another split
    other = synth.generate(seed=1)
    assert not {key(t) for t in other["train"]} & {key(t) for s in ("validation", "test") for t in splits[s]}
    assert {text(t) for t in other["train"]} != {text(t) for t in train}


def test_same_seed_gives_byte_identical_files_and_counts_match(default_dir: Path, tmp_path: Path,
                                                                splits: dict[str, list[Task]]) -> None:
    assert main(["synth", "--output", str(tmp_path / "again")]) == 0
    assert _files(tmp_path / "again") == _files(default_dir)
    assert main(["synth", "--output", str(tmp_path / "other"), "--seed", "7", "--per-template", "5"]) == 0
    other = _files(tmp_path / "other")
    assert other["train.jsonl"] != _files(default_dir)["train.jsonl"]
    stats = json.loads(other["stats.json"])
    assert stats["seed"] == 7 and stats["per_template"] == 5
    assert stats["splits"]["train"] <= 4 * len(synth.TEMPLATES)  # 80% of 5
    saved = json.loads((default_dir / synth.STATS_FILE).read_text())
    assert saved["splits"] == {s: len(ts) for s, ts in splits.items()}
    for split, tasks in splits.items():
        for family, row in saved["families"].items():
            assert row[split] == sum(t.metadata["family"] == family for t in tasks)


def test_the_experiments_committed_tasks_are_the_default_generation(default_dir: Path) -> None:
    """experiments/cpu_learning trains and evaluates on the committed files: they must be what `score-code synth`
    (seed 0) writes today, so that anyone can regenerate them and a change to the generator is noticed."""
    committed = Path(__file__).resolve().parents[2] / "experiments" / "cpu_learning" / "synth"
    generated = _files(default_dir)
    assert {name: (committed / name).read_bytes() for name in generated} == generated


def test_per_template_below_one_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--output", str(tmp_path / "out"), "--per-template", "0"]) == 2
    assert "--per-template must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
