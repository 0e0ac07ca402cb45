"""benchmarks.bootstrap: intervals whose answers are known (identical runs, all flips), an exact enumeration of the
bootstrap distribution, pairing by problem, and the refusals."""
from __future__ import annotations

import itertools
import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from benchmarks.bootstrap import (
    BootstrapError,
    Interval,
    delta_interval,
    difference_intervals,
    per_problem,
    percentile_interval,
)
from benchmarks.evaluate import trajectories_from_files
from benchmarks.metrics import compute_metrics


def make_run(path: Path, outcomes: dict[str, list[tuple[bool, bool]]]) -> Path:
    """An eval output directory: results.jsonl with (attempt 1, attempt 2) verdicts per sample, and metrics.json."""
    path.mkdir(parents=True)
    lines = []
    for task_id, samples in outcomes.items():
        for sample_id, passed in enumerate(samples):
            for attempt, ok in enumerate(passed, start=1):
                lines.append({"task_id": task_id, "sample_id": sample_id, "attempt": attempt,
                              "status": "passed" if ok else "failed", "passed": ok})
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    metrics = compute_metrics(trajectories_from_files(path))
    (path / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    return path


def one_sample(pairs: list[tuple[bool, bool]]) -> dict[str, list[tuple[bool, bool]]]:
    return {f"P/{i}": [p] for i, p in enumerate(pairs)}


IC, CI, CC, II = (False, True), (True, False), (True, True), (False, False)


def test_identical_runs_differ_by_exactly_zero(tmp_path):
    outcomes = one_sample([IC, CI, CC, II, II, IC])
    run, base = make_run(tmp_path / "run", outcomes), make_run(tmp_path / "base", outcomes)
    intervals = difference_intervals(run, base)
    assert set(intervals) == {"acc_t1", "acc_t2", "delta"}
    for interval in intervals.values():
        assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
        assert not interval.excludes_zero


def test_every_problem_fixed_gives_delta_exactly_one(tmp_path):
    interval = delta_interval(make_run(tmp_path / "run", one_sample([IC] * 7)))
    assert (interval.estimate, interval.low, interval.high) == (1.0, 1.0, 1.0)
    assert interval.excludes_zero and interval.format() == "+100.0 [+100.0, +100.0]*"


def test_mixed_run_matches_the_exact_bootstrap_distribution(tmp_path):
    """Five problems (Δ per problem 1, 1, 0, -1, 0): all 5^5 equally likely resamples enumerated; the 10,000-draw
    percentiles land on the exact 2.5% and 97.5% quantiles (both levels sit far from a jump of the exact CDF)."""
    run = make_run(tmp_path / "run", one_sample([IC, IC, CC, CI, II]))
    values = [1, 1, 0, -1, 0]
    counts = Counter(Fraction(sum(t), 5) for t in itertools.product(values, repeat=5))
    cdf, quantiles = Fraction(0), {}
    for mean in sorted(counts):
        cdf += Fraction(counts[mean], 5 ** 5)
        for level in (Fraction(1, 40), Fraction(39, 40)):
            if level not in quantiles and cdf >= level:
                assert cdf - level > Fraction(1, 200), "the level sits on a jump: the test would be luck"
                quantiles[level] = float(mean)
    interval = delta_interval(run)
    assert interval.estimate == pytest.approx(0.2)
    assert (interval.low, interval.high) == (quantiles[Fraction(1, 40)], quantiles[Fraction(39, 40)]) == (-0.4, 0.8)
    assert interval.estimate == pytest.approx(json.loads((run / "metrics.json").read_text())
                                              ["metrics"]["transitions"]["t1->t2"]["delta"])


def test_difference_is_paired_by_problem(tmp_path):
    """The base fails everything; the run fixes 2 of 100 problems (noise: a resample without both is likely) or 20
    (not noise). Pairing makes each problem's difference the unit, whatever order the runs list problems in."""
    base = make_run(tmp_path / "base", one_sample([II] * 100))
    two = make_run(tmp_path / "two", {f"P/{i}": [IC if i in (3, 70) else II] for i in reversed(range(100))})
    twenty = make_run(tmp_path / "twenty", one_sample([IC] * 20 + [II] * 80))
    noise = difference_intervals(two, base)
    assert noise["acc_t2"].estimate == pytest.approx(0.02) and noise["acc_t1"].estimate == 0.0
    assert noise["acc_t2"].low == 0.0 and not noise["acc_t2"].excludes_zero
    supported = difference_intervals(twenty, base, metrics=("delta",))
    assert list(supported) == ["delta"]
    assert supported["delta"].estimate == pytest.approx(0.2) and supported["delta"].excludes_zero
    assert supported["delta"].format().endswith("]*")
    ids = sorted(f"P/{i}" for i in range(100))  # problems in id order, as paired; the same seed, the same draws
    direct = percentile_interval([1.0 if int(t[2:]) < 20 else 0.0 for t in ids])
    assert (supported["delta"].low, supported["delta"].high) == (direct.low, direct.high)


def test_a_problem_is_the_mean_of_its_samples(tmp_path):
    run = make_run(tmp_path / "run", {"A": [IC, II], "B": [CC, CC, CI, CI]})
    assert per_problem(run) == {"A": {"acc_t1": 0.0, "acc_t2": 0.5, "delta": 0.5},
                                "B": {"acc_t1": 1.0, "acc_t2": 0.5, "delta": -0.5}}
    assert delta_interval(run).estimate == 0.0


def test_runs_on_other_problems_are_refused_with_the_missing_ids(tmp_path):
    base = make_run(tmp_path / "base", {"A": [II], "B": [II], "C": [II]})
    run = make_run(tmp_path / "run", {"A": [IC], "B": [IC], "D": [IC]})
    with pytest.raises(BootstrapError) as info:
        difference_intervals(run, base)
    message = str(info.value)
    assert "lacks 1 problem(s) that" in message and ": D" in message and ": C" in message


def test_unfinished_or_unknown_inputs_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BootstrapError, match="no metrics.json"):
        delta_interval(tmp_path / "empty")
    run = make_run(tmp_path / "run", {"A": [IC]})
    with pytest.raises(BootstrapError, match="unknown metric"):
        difference_intervals(run, run, metrics=("pass@1",))
    with pytest.raises(BootstrapError, match="resamples"):
        percentile_interval([1.0], resamples=0)


def test_the_same_inputs_give_the_same_bounds():
    values = [1.0, 0.0, -1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert percentile_interval(values) == percentile_interval(values)
    assert isinstance(percentile_interval(values, resamples=200, level=0.9, seed=3), Interval)
