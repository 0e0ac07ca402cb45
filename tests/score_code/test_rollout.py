"""Episodes: token bookkeeping, masks, one grading batch for both attempts, sandbox errors."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks.generation import Dialogue, SamplingParams
from benchmarks.tasks import Task
from score_code.train.rollout import Episode, RolloutError, SandboxReward, collate, generate_rollouts
from tests.score_code.conftest import CharGenerator

TASKS = [
    Task(task_id=f"t{i}", prompt=f"P{i}", entry_point="f", tests=("assert f() == 1",), test_format="mbpp")
    for i in range(2)
]


def first_dialogue(task: Task) -> Dialogue:
    return Dialogue(messages=[{"role": "user", "content": task.prompt}])


def test_episode_layout_masks_and_one_grading_call():
    graded: list[tuple[list[str], list[str]]] = []

    def reward(tasks, completions):
        graded.append(([t.task_id for t in tasks], list(completions)))
        return [1.0 if "ok" in c else 0.0 for c in completions]

    gen = CharGenerator(["a1", "b2", "c3", "d4", "ok", "x", "ok", "y"])
    out = generate_rollouts(gen, TASKS, first_dialogue, "FIX", 2, SamplingParams(), SamplingParams(), reward)
    assert len(graded) == 1  # both attempts of every episode in one batch
    assert graded[0][0] == ["t0", "t0", "t1", "t1"] * 2
    eps = out.episodes
    assert [(e.task_id, e.sample_index) for e in eps] == [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]
    e = eps[0]
    text = "".join(chr(i) for i in e.token_ids)
    assert text == "P0|a1FIX|ok"  # prompt1 + y1 + instruction + y2, ids kept verbatim
    assert text[slice(*e.attempt1_span)] == "a1" and text[slice(*e.attempt2_span)] == "ok"
    assert (e.reward1, e.reward2) == (0.0, 1.0) and eps[1].reward2 == 0.0

    batch = collate(eps, pad_token_id=0)
    assert batch.input_ids.shape == (4, len("P0|a1FIX|ok"))
    row = batch.mask1[0].tolist()
    assert row == [0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert batch.mask2[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    assert (batch.mask1 * batch.mask2).sum() == 0


def test_sandbox_errors_zero_the_masks_and_are_counted():
    def reward(tasks, completions):
        return [None if c == "b2" else 0.0 for c in completions]

    gen = CharGenerator(["a1", "b2", "c3", "d4", "e", "f", "g", "h"])
    out = generate_rollouts(gen, TASKS, first_dialogue, "FIX", 2, SamplingParams(), SamplingParams(), reward)
    assert out.sandbox_errors == 1
    assert [e.valid for e in out.episodes] == [True, False, True, True]
    batch = collate(out.episodes, pad_token_id=0)
    assert batch.mask1[1].sum() == 0 and batch.mask2[1].sum() == 0
    assert batch.mask1[0].sum() > 0


def test_offline_first_attempts_are_reused_and_not_trained():
    gen = CharGenerator(["zz"])
    stored = CharGenerator(["OFF"]).generate([first_dialogue(TASKS[0])], SamplingParams())[0]
    out = generate_rollouts(gen, TASKS[:1], first_dialogue, "FIX", 2, SamplingParams(), SamplingParams(),
                            lambda t, c: [0.0] * len(c), offline_first={1: stored})
    assert gen.calls == 3  # one first attempt sampled, two second attempts
    assert out.episodes[1].text1 == "OFF" and out.episodes[1].offline_attempt1
    batch = collate(out.episodes, pad_token_id=0)
    assert batch.mask1[1].sum() == 0 and batch.mask2[1].sum() == 2


def test_retokenizing_backend_is_refused():
    gen = CharGenerator(["a"], retokenize=True)
    with pytest.raises(RolloutError, match="t0: attempt 2's input does not start with"):
        generate_rollouts(gen, TASKS[:1], first_dialogue, "FIX", 2, SamplingParams(), SamplingParams(),
                          lambda t, c: [0.0] * len(c))


def test_reward_count_mismatch_is_an_error():
    gen = CharGenerator(["a"])
    with pytest.raises(RolloutError, match="returned 1 rewards for 4 completions"):
        generate_rollouts(gen, TASKS[:1], first_dialogue, "FIX", 2, SamplingParams(), SamplingParams(),
                          lambda t, c: [0.0])


def test_sandbox_reward_extracts_and_masks_sandbox_errors():
    from sandbox.verdict import Result, Status

    class FakeSandbox:
        def __init__(self):
            self.jobs = []

        def run_batch(self, jobs):
            self.jobs = jobs
            return [Result(status=Status.PASSED, tests=[], expected_tests=0),
                    Result.sandbox_error("docker died")]

    box = FakeSandbox()
    rewards = SandboxReward(box)(TASKS, ["```python\ndef f():\n    return 1\n```", "def f(): pass"])
    assert rewards == [0.0, None]
    assert "return 1" in box.jobs[0].program and "```" not in box.jobs[0].program
    assert box.jobs[0].tests == TASKS[0].tests


@pytest.mark.parametrize("flat_timeout_s", [0.0, 7.0])
def test_the_training_reward_grades_under_the_runs_timeouts_and_records_them(tmp_path, flat_timeout_s):
    """0 (the default): per task, calibrated from the references (t1's took 5 s: 20 s); else flat for every task."""
    from benchmarks.timeouts import RULE
    from sandbox.verdict import Result, Status
    from score_code.train.score import TIMEOUTS_FILE, sandbox_reward

    class TimingSandbox:
        def __init__(self):
            self.jobs = []

        def run_batch(self, jobs):
            self.jobs += jobs
            return [Result(Status.PASSED, [], 0, wall_time_s=5.0 if "slow" in j.program else 0.1) for j in jobs]

    class OneProcess:
        is_main_process = True

        def wait_for_everyone(self):
            pass

    tasks = [dataclasses.replace(t, reference_solution=f"def f(): return 1  # {'slow' if t.task_id == 't1' else ''}")
             for t in TASKS]
    box = TimingSandbox()
    reward = sandbox_reward(box, tasks, flat_timeout_s, OneProcess(), tmp_path)
    box.jobs.clear()
    reward(tasks, ["def f(): return 1", "def f(): return 1"])
    recorded = json.loads((tmp_path / TIMEOUTS_FILE).read_text())
    if flat_timeout_s:
        assert [j.timeout_s for j in box.jobs] == [7.0, 7.0]
        assert recorded == {"timeout_rule": "flat 7 s", "task_timeouts_s": {}}
    else:
        assert [j.timeout_s for j in box.jobs] == [None, 20.0]  # t0 keeps the sandbox's limit
        assert recorded == {"timeout_rule": RULE, "task_timeouts_s": {"t1": 20.0}}


def test_collate_pads_right():
    eps = [Episode("t", 0, [5, 6, 7, 8], (1, 2), (3, 4), "", "", "stop", "stop", 1.0, 0.0),
           Episode("t", 1, [5, 6], (1, 1), (1, 2), "", "", "stop", "stop", 1.0, 0.0)]
    batch = collate(eps, pad_token_id=99)
    assert batch.input_ids[1].tolist() == [5, 6, 99, 99]
    assert batch.attention_mask[1].tolist() == [1, 1, 0, 0]
    assert batch.mask2[1].tolist() == [0, 1, 0, 0]
    assert torch.equal(batch[0:1].input_ids, batch.input_ids[:1])


def test_a_trimmed_micro_batch_drops_only_the_columns_that_are_padding_in_every_row():
    eps = [Episode("t", 0, [5, 6, 7, 8, 9], (1, 2), (3, 5), "", "", "stop", "stop", 1.0, 0.0),
           Episode("t", 1, [5, 6, 7], (1, 2), (2, 3), "", "", "stop", "stop", 1.0, 0.0),
           Episode("t", 2, [5, 6], (1, 1), (1, 2), "", "", "stop", "stop", 1.0, 0.0)]
    batch = collate(eps, pad_token_id=99)
    assert batch[1:3].trimmed().input_ids.tolist() == [[5, 6, 7], [5, 6, 99]]
    single = batch[2:3].trimmed()
    assert single.attention_mask.tolist() == [[1, 1]] and single.mask2.tolist() == [[0, 1]]
    assert batch.trimmed().input_ids.shape == (3, 5)  # the longest row keeps every column


def test_stage1_trains_an_episode_whose_attempt1_grading_failed_but_stage2_does_not():
    """r1 is not used in stage I: a sandbox error on attempt 1 keeps the episode (its y1 KL and y2 policy gradient)."""
    episode = Episode("t", 0, [1, 2, 3, 4, 5, 6], (1, 3), (4, 6), "", "", "stop", "stop", None, 1.0)
    stage1, stage2 = collate([episode], 0, stage=1), collate([episode], 0, stage=2)
    assert stage1.mask1.sum() == 2 and stage1.mask2.sum() == 2
    assert stage2.mask1.sum() == 0 and stage2.mask2.sum() == 0
    assert episode.trainable(1) and not episode.trainable(2)


def test_every_sequence_gets_the_seed_of_its_episode_and_attempt():
    seen: list[tuple[int, ...] | None] = []

    class Recording(CharGenerator):
        def generate(self, dialogues, params):
            seen.append(params.seeds)
            return super().generate(dialogues, params)

    offline = CharGenerator(["z"]).generate([first_dialogue(TASKS[0])], SamplingParams())[0]
    generate_rollouts(Recording(["a", "b"]), TASKS, first_dialogue, "FIX", 2, SamplingParams(), SamplingParams(),
                      lambda tasks, completions: [1.0] * len(completions), offline_first={1: offline},
                      seed_of=lambda episode, attempt: 10 * episode + attempt)
    assert seen == [(1, 21, 31), (2, 12, 22, 32)]  # episode 1's attempt 1 is offline: not sampled


def test_engine_log_probs_travel_into_the_batch_and_unknown_ones_are_nan():
    episode = Episode("t", 0, [1, 2, 3, 4, 5, 6], (1, 3), (4, 6), "", "", "stop", "stop", 1.0, 1.0,
                      sampling_logprobs1=None, sampling_logprobs2=[-0.5, -1.5])
    batch = collate([episode], 0)
    assert batch.sampling_logp[0, 4:6].tolist() == [-0.5, -1.5] and batch.sampling_logp[0, :4].isnan().all()
    assert batch[0:1].sampling_logp.shape == (1, 6) and collate([episode], 0).to("cpu").sampling_logp is not None
    plain = Episode("t", 0, [1, 2, 3], (1, 2), (2, 3), "", "", "stop", "stop", 1.0, 1.0)
    assert collate([plain], 0).sampling_logp is None
