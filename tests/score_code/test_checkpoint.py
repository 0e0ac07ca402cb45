"""Checkpoints: HF layout, atomic write, pruning that keeps the best, exact optimizer/RNG restore."""
from __future__ import annotations

import json
import random

import torch
from safetensors.torch import load_file, save_file

from score_code.train import checkpoint as ck


class TinySaveable(torch.nn.Module):
    """Stands in for a PreTrainedModel: save_pretrained writes model.safetensors + config.json."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x):
        return self.linear(x)

    def save_pretrained(self, path, safe_serialization=True, state_dict=None):
        save_file(state_dict or self.state_dict(), str(path / "model.safetensors"))
        (path / "config.json").write_text("{}")


class TinyTokenizer:
    def save_pretrained(self, path):
        (path / "tokenizer.json").write_text("{}")


def _setup():
    torch.manual_seed(0)
    model = TinySaveable()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    return model, opt, sched


def _step(model, opt, sched):
    loss = model(torch.ones(1, 3)).pow(2).sum()
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_layout_and_trainer_state(tmp_path):
    model, opt, sched = _setup()
    _step(model, opt, sched)
    state = ck.TrainerState(global_step=1, stage=2)
    state.record_reward(0.5)
    path = ck.save_checkpoint(tmp_path, state, model, TinyTokenizer(), ck.optimizer_state(model, opt), sched,
                                 save_total_limit=2)
    assert path.name == "checkpoint-1"
    names = {p.name for p in path.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "optimizer.pt", "scheduler.pt",
            "rng_state.pth", "trainer_state.json"} <= names
    saved = json.loads((path / "trainer_state.json").read_text())
    assert saved["global_step"] == 1 and saved["stage"] == 2
    assert saved["best_model_checkpoint"] == "checkpoint-1" and saved["best_metric"] == 0.5
    assert not list(tmp_path.glob(".tmp-*"))
    assert torch.equal(load_file(str(path / "model.safetensors"))["linear.weight"], model.linear.weight)
    # keyed by parameter name, not position: the same file restores a DDP, FSDP or single-process run
    assert set(torch.load(path / "optimizer.pt", weights_only=True)["state"]) == {"linear.weight", "linear.bias"}


def test_prune_keeps_newest_and_best(tmp_path):
    model, opt, sched = _setup()
    state = ck.TrainerState()
    for step, reward in [(1, 0.2), (2, 0.9), (3, 0.1), (4, 0.3), (5, 0.0)]:
        state.global_step = step
        state.record_reward(reward)
        ck.save_checkpoint(tmp_path, state, model, TinyTokenizer(), ck.optimizer_state(model, opt), sched,
                                 save_total_limit=2)
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-4", "checkpoint-5"]
    assert state.best_model_checkpoint == "checkpoint-2"
    assert ck.latest_checkpoint(tmp_path).name == "checkpoint-5"


def test_stale_temporary_directory_is_ignored_and_cleaned(tmp_path):
    (tmp_path / ".tmp-checkpoint-7-123").mkdir()  # a kill during a save
    assert ck.latest_checkpoint(tmp_path) is None
    model, opt, sched = _setup()
    ck.save_checkpoint(tmp_path, ck.TrainerState(global_step=3), model, TinyTokenizer(), ck.optimizer_state(model, opt),
                       sched, 2)
    assert not (tmp_path / ".tmp-checkpoint-7-123").exists()


def test_resume_continues_exactly(tmp_path):
    model, opt, sched = _setup()
    for _ in range(2):
        _step(model, opt, sched)
    random.seed(5)
    torch.manual_seed(5)
    ck.save_checkpoint(tmp_path, ck.TrainerState(global_step=2), model, TinyTokenizer(), ck.optimizer_state(model, opt),
                       sched, 2)
    expected_draw = (random.random(), torch.rand(1).item())
    for _ in range(2):
        _step(model, opt, sched)
    expected = model.linear.weight.detach().clone()

    fresh, opt2, sched2 = _setup()
    fresh.load_state_dict(load_file(str(tmp_path / "checkpoint-2" / "model.safetensors")))
    state = ck.load_training_state(tmp_path / "checkpoint-2", fresh, opt2, sched2)
    assert state.global_step == 2
    assert (random.random(), torch.rand(1).item()) == expected_draw
    assert sched2.last_epoch == 2
    for _ in range(2):
        _step(fresh, opt2, sched2)
    assert torch.allclose(fresh.linear.weight, expected, atol=0, rtol=0)


def test_missing_files_raise_naming_the_file(tmp_path):
    (tmp_path / "checkpoint-1").mkdir()
    model, opt, sched = _setup()
    try:
        ck.load_training_state(tmp_path / "checkpoint-1", model, opt, sched)
    except ck.CheckpointError as exc:
        assert "trainer_state.json is missing" in str(exc)
    else:
        raise AssertionError("expected CheckpointError")


def test_best_checkpoint_is_chosen_within_a_stage_and_each_stage_best_is_kept(tmp_path):
    """Stage I rewards (0.9) are not compared with stage II's (0.2, 0.4); a window never spans a stage change."""
    model, opt, sched = _setup()
    state = ck.TrainerState()
    for step, stage, reward in [(1, 1, 0.9), (2, 1, 0.5), (3, 2, 0.2), (4, 2, 0.4), (5, 2, 0.1), (6, 2, 0.0)]:
        state.global_step = step
        state.record_reward(reward, stage)
        if step in (1, 3, 4, 5, 6):  # step 2 (stage I) is not saved: its reward must not judge checkpoint-3
            ck.save_checkpoint(tmp_path, state, model, TinyTokenizer(), ck.optimizer_state(model, opt), sched,
                               save_total_limit=1)
    assert state.best_model_checkpoint == "checkpoint-4" and state.best_metric == 0.4
    assert state.best_by_stage["1"] == {"metric": 0.9, "checkpoint": "checkpoint-1"}
    assert state.best_by_stage["2"]["checkpoint"] == "checkpoint-4"
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-4", "checkpoint-6"]
