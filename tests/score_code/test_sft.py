"""SFT for the baselines: which token positions carry loss (real SmolLM2 tokenizer), and tiny end-to-end runs of
STaR and Pair-SFT (tiny random model; a deterministic fake grader, and the Docker sandbox in a slow test)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import prompts
from benchmarks.generation import Dialogue
from benchmarks.tasks import load_task_file
from sandbox.verdict import Result, Status
from sandbox.verdict import TestOutcome as Outcome
from score_code.baselines.data import build
from score_code.config import SFTConfig
from score_code.generation.encoding import DialogueEncoder
from score_code.train import checkpoint as ckpt
from score_code.train.rollout import collate
from score_code.train.sft import encode_record, sft_loss, train_baseline

FIXTURES = Path(__file__).parent / "fixtures"
TASKS = load_task_file(FIXTURES / "baselines_tasks.jsonl")


@pytest.fixture
def encoder(tokenizer):
    return DialogueEncoder(tokenizer, [tokenizer.eos_token_id], chat=True)


@pytest.fixture
def record():
    records, _ = build("star", FIXTURES / "baselines_eval", TASKS)
    return records[0]


def decode(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_only_attempt2_tokens_carry_loss_by_default(tokenizer, encoder, record):
    episode = encode_record(record, encoder)
    ids = episode.token_ids
    s1, e1 = episode.attempt1_span
    s2, e2 = episode.attempt2_span
    # The layout: chat-rendered first turn | y1 | end of turn + p1 turn + assistant header | y2 + end of turn.
    assert ids[:s1] == encoder.encode(Dialogue(messages=record["messages"]))
    assert decode(tokenizer, ids[s1:e1]) == record["y1"]
    between = decode(tokenizer, ids[e1:s2])
    assert between == f"<|im_end|>\n<|im_start|>user\n{prompts.SELF_CORRECTION_INSTRUCTION}<|im_end|>\n" \
                      "<|im_start|>assistant\n"
    assert decode(tokenizer, ids[s2:e2]) == record["y2"] + "<|im_end|>"
    assert e2 == len(ids)
    batch = collate([episode], tokenizer.pad_token_id)
    trained = (batch.mask1 + batch.mask2)[0].nonzero().flatten().tolist()
    assert trained == list(range(s2, e2))


def test_loss_on_both_attempts_adds_exactly_the_y1_tokens(tokenizer, encoder, record):
    episode = encode_record(record, encoder, train_attempt1=True)
    batch = collate([episode], tokenizer.pad_token_id)
    s1, e1 = episode.attempt1_span
    s2, e2 = episode.attempt2_span
    assert batch.mask1[0].nonzero().flatten().tolist() == list(range(s1, e1))
    assert batch.mask2[0].nonzero().flatten().tolist() == list(range(s2, e2))


def test_stored_token_ids_are_used_verbatim(tokenizer, encoder, record):
    y1_ids = tokenizer(record["y1"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    y2_ids = tokenizer(record["y2"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    episode = encode_record({**record, "y1_token_ids": y1_ids, "y2_token_ids": y2_ids}, encoder)
    s1, e1 = episode.attempt1_span
    s2, e2 = episode.attempt2_span
    assert episode.token_ids[s1:e1] == y1_ids and episode.token_ids[s2:e2] == y2_ids  # no second end of turn
    # y1 already ends its turn, so the instruction turn follows without another <|im_end|>.
    assert decode(tokenizer, episode.token_ids[e1:s2]).startswith("\n<|im_start|>user\n")


def test_sft_loss_is_the_token_mean_nll_over_masked_positions():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.5, 0.125], [0.5, 0.5, 0.25, 0.9]]))
    mask = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    expected = -(torch.log(torch.tensor(0.25)) + torch.log(torch.tensor(0.125)) + torch.log(torch.tensor(0.25))) / 3
    assert sft_loss(logp, mask, tokens=3.0).item() == pytest.approx(expected.item())


# --- tiny end-to-end runs ----------------------------------------------------------------------------------------


class ParityGrader:
    """A deterministic stand-in for the sandbox: a program passes iff its length is even (so a random tiny model
    produces a mix of i->c, c->c, ... traces); one job in 13 is a sandbox error, and stays one when graded again."""

    def __init__(self) -> None:
        self.graded = 0
        self.broken: set[str] = set()

    def run_batch(self, jobs):
        out = []
        for job in jobs:
            self.graded += 1
            if self.graded % 13 == 0 or job.job_id in self.broken:
                self.broken.add(job.job_id)
                out.append(Result.sandbox_error("injected", job_id=job.job_id, expected_tests=1))
                continue
            ok = len(job.program) % 2 == 0
            out.append(Result(status=Status.PASSED if ok else Status.FAILED, expected_tests=1, job_id=job.job_id,
                              tests=[Outcome("test", ok)]))
        return out


def tiny_config(model_dir: Path, run_dir: Path, **overrides) -> SFTConfig:
    config = SFTConfig()
    values = {"model": str(model_dir), "output_dir": str(run_dir), "samples_per_prompt": 4, "max_new_tokens": 8,
              "generation_batch_size": 16, "micro_batch_size": 4, "learning_rate": 1e-3, "save_steps": 1000,
              "progress": False, "save_total_limit": 2, **overrides}
    config.apply(values, source="test")
    return config


@pytest.mark.slow
def test_star_runs_rounds_of_sample_filter_train_and_resumes(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "star"
    sft = {"iterations": 2, "sft_batch_size": 4}
    train_baseline("star", tiny_config(tiny_model_dir, run_dir, **sft), sandbox=ParityGrader(), train_tasks=TASKS)
    for round_no in (1, 2):
        stats = json.loads((run_dir / f"iteration-{round_no}" / "data" / "stats.json").read_text())
        samples = (run_dir / f"iteration-{round_no}" / "samples" / "results.jsonl").read_text().splitlines()
        assert len(samples) == 4 * 4 * 2  # tasks x k x attempts
        assert stats["builder"] == "star" and stats["records"]["c->c"] == 0
        assert stats["sandbox_error_attempts"] >= 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    records = [json.loads((run_dir / f"iteration-{n}" / "data" / "stats.json").read_text())["records_total"]
               for n in (1, 2)]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) == sum(-(-n // 4) for n in records)  # ceil(records / sft_batch_size) steps per round
    assert all(r["loss"] > 0 and r["tokens"] > 0 for r in rows)
    state = ckpt.TrainerState.from_file(ckpt.latest_checkpoint(run_dir) / ckpt.TRAINER_STATE_NAME)
    assert state.extra == {"round": 2, "round_steps": len(rows) - (-(-records[0] // 4)), "round_done": True}
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["method"] == "star" and saved["iterations"] == 2 and "beta2" not in saved
    # A finished run resumed does nothing more.
    config = tiny_config(tiny_model_dir, run_dir, resume=True, **sft)
    train_baseline("star", config, sandbox=ParityGrader(), train_tasks=TASKS)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == len(rows)


@pytest.mark.slow
def test_pair_sft_plus_is_one_round_over_pairs(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "pair"
    config = tiny_config(tiny_model_dir, run_dir, iterations=3, plus=True, sft_batch_size=8, loss_on="both")
    train_baseline("pair-sft", config, sandbox=ParityGrader(), train_tasks=TASKS)
    assert sorted(p.name for p in run_dir.glob("iteration-*")) == ["iteration-1"]  # one pass whatever iterations
    stats = json.loads((run_dir / "iteration-1" / "data" / "stats.json").read_text())
    assert stats["builder"] == "pair-sft+" and stats["records"]["i->c"] > 0 and stats["records"]["c->c"] > 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == -(-stats["records_total"] // 8)
    sampled = json.loads((run_dir / "iteration-1" / "samples" / "metrics.json").read_text())["metrics"]
    assert all(r["attempt1/reward"] == sampled["accuracy"]["t1"] and r["attempt2/reward"] == sampled["accuracy"]["t2"]
               and r["delta"] == sampled["transitions"]["t1->t2"]["delta"] for r in rows)
    assert ckpt.latest_checkpoint(run_dir).name == f"checkpoint-{len(rows)}"


@pytest.mark.slow
def test_first_round_from_filter_episodes_samples_nothing(tiny_model_dir, tmp_path):
    """Pair-SFT built from a filter run's base-model traces: no sampling, its data and logged accuracy are those
    traces'."""
    episodes = [{"task_id": t.task_id, "sample_id": s, "messages": prompts.first_dialogue(t, (), True).messages,
                 "y1": f"```python\ndef f{t.task_id[1]}():\n    return 0\n```", "instruction": "p1",
                 "y2": f"```python\ndef f{t.task_id[1]}():\n    return {t.task_id[1]}\n```",
                 "reward1": 0.0, "reward2": float(s == 0)} for t in TASKS for s in range(2)]
    filter_dir = tmp_path / "filter"
    filter_dir.mkdir()
    (filter_dir / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    run_dir = tmp_path / "pair"
    grader = ParityGrader()
    train_baseline("pair-sft", tiny_config(tiny_model_dir, run_dir, first_round_episodes=str(filter_dir),
                                           sft_batch_size=4), sandbox=grader, train_tasks=TASKS)
    assert grader.graded == 0 and not (run_dir / "iteration-1" / "samples").exists()
    stats = json.loads((run_dir / "iteration-1" / "data" / "stats.json").read_text())
    assert stats["source_dir"] == str(filter_dir / "episodes.jsonl") and stats["traces"] == 8
    assert stats["records"]["i->c"] == 4 * 3  # per task: 2 failing attempts 1 + 1 failing attempt 2
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["attempt1/reward"] == 0.0 and r["attempt2/reward"] == 0.5
                                  and 0 < r["edit_ratio"] < 0.2 for r in rows)


@pytest.mark.slow
@pytest.mark.docker
def test_star_with_the_docker_sandbox(tiny_model_dir, tmp_path, docker_sandbox):
    run_dir = tmp_path / "star-docker"
    config = tiny_config(tiny_model_dir, run_dir, samples_per_prompt=2, iterations=1, plus=True, sft_batch_size=4)
    train_baseline("star", config, sandbox=docker_sandbox, train_tasks=TASKS)
    results = [json.loads(line) for line in (run_dir / "iteration-1" / "samples" / "results.jsonl").read_text()
               .splitlines()]
    assert len(results) == 4 * 2 * 2 and all(r["status"] != "sandbox_error" for r in results)
    stats = json.loads((run_dir / "iteration-1" / "data" / "stats.json").read_text())
    assert stats["traces"] == 8 and stats["sandbox_error_attempts"] == 0
    assert ckpt.latest_checkpoint(run_dir) is not None


@pytest.mark.slow
def test_train_star_command_with_the_local_sandbox(tiny_model_dir, tmp_path, capsys):
    """The CLI path: flags -> config -> a round graded by the real (local) sandbox; config.json is a recipe."""
    from score_code.cli import main

    run_dir = tmp_path / "run"
    argv = ["train", "star", "--model", str(tiny_model_dir), "--tasks", str(FIXTURES / "baselines_tasks.jsonl"),
            "--train_split", "test", "--output_dir", str(run_dir), "--iterations", "1", "--samples_per_prompt", "2",
            "--max_new_tokens", "4", "--sandbox_backend", "local", "--no-progress"]
    assert main(argv) == 0
    results = (run_dir / "iteration-1" / "samples" / "results.jsonl").read_text().splitlines()
    assert len(results) == 4 * 2 * 2
    assert (run_dir / "iteration-1" / "data" / "data.jsonl").is_file()
    assert ckpt.latest_checkpoint(run_dir) is not None
    recipe = tmp_path / "recipe.yaml"
    saved = json.loads((run_dir / "config.json").read_text())
    recipe.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in saved.items() if k != "method") + "\nbeta2: 0.3\n")
    capsys.readouterr()
    assert main(["train", "star", "--config", str(recipe)]) == 2  # the run exists: refused, after the note
    err = capsys.readouterr().err
    assert "not used by score-code train star: beta2" in err  # a shared recipe's SCoRe keys are skipped
    assert "already holds a run" in err
    with pytest.raises(SystemExit):
        main(["train", "star", "--config", str(recipe), "--beta2", "0.5"])
    assert "unrecognized arguments: --beta2 0.5" in capsys.readouterr().err  # a SCoRe flag is refused


@pytest.mark.slow
def test_resume_mid_round_replays_the_same_steps(tiny_model_dir, tmp_path):
    """Kill after step 1 (simulated: later checkpoints removed): the resumed run takes the same remaining steps."""
    import shutil

    run_dir = tmp_path / "star"
    sft = {"iterations": 1, "sft_batch_size": 2, "save_steps": 1, "save_total_limit": 50}
    train_baseline("star", tiny_config(tiny_model_dir, run_dir, **sft), sandbox=ParityGrader(), train_tasks=TASKS)
    full = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(full) >= 2, "the fixture run must take at least two steps"
    for checkpoint in ckpt.list_checkpoints(run_dir):
        if ckpt.checkpoint_step(checkpoint) > 1:
            shutil.rmtree(checkpoint)
    state = ckpt.TrainerState.from_file(run_dir / "checkpoint-1" / ckpt.TRAINER_STATE_NAME)
    assert state.extra == {"round": 1, "round_steps": 1, "round_done": False}
    train_baseline("star", tiny_config(tiny_model_dir, run_dir, resume=True, **sft), sandbox=ParityGrader(),
                   train_tasks=TASKS)
    resumed = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [r["step"] for r in full]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full], rel=1e-5)


def test_baselines_make_the_same_early_refusals_as_score(tiny_model_dir, tmp_path):
    """A .gguf model with the vLLM backend, and a checkpoint of another base model, are refused before any model is
    built, in the baselines as in `train score` (both go through train/common.py)."""
    from score_code.generation.vllm import VLLMEngineError
    from score_code.train.common import TrainError

    with pytest.raises(VLLMEngineError, match="GGUF"):
        train_baseline("star", tiny_config(tmp_path / "m.gguf", tmp_path / "gguf", backend="vllm"),
                       sandbox=ParityGrader(), train_tasks=TASKS)
    first = tmp_path / "first"
    train_baseline("pair-sft", tiny_config(tiny_model_dir, first, sft_batch_size=64), sandbox=ParityGrader(),
                   train_tasks=TASKS)
    other = tmp_path / "other-base"
    other.mkdir()
    with pytest.raises(TrainError, match="trained from base model"):
        train_baseline("star", tiny_config(other, tmp_path / "second", init_from=str(ckpt.latest_checkpoint(first))),
                       sandbox=ParityGrader(), train_tasks=TASKS)
