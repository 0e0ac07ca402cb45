"""Metrics on hand-made attempt tables: accuracies, Delta = i->c - c->i, pass@k, edit ratio, sandbox-error counts."""
from __future__ import annotations

import itertools
import random
from math import comb

import pytest

from benchmarks.metrics import Trajectory, compute_metrics, edit_ratio, levenshtein, pass_at_k


def traj(task: str, *passed: bool, sample: int = 0, errors: int = 0, solutions: tuple[str, ...] = ()) -> Trajectory:
    return Trajectory(task, sample, tuple(passed), sandbox_errors=errors, solutions=solutions)


T, F = True, False


def test_paper_metrics_on_a_hand_made_table() -> None:
    # 10 problems: 3 c->c, 2 i->c, 1 c->i, 4 i->i  => acc t1 = 4/10, t2 = 5/10
    table = [traj("c1", T, T), traj("c2", T, T), traj("c3", T, T), traj("f1", F, T), traj("f2", F, T),
             traj("b1", T, F), *(traj(f"w{i}", F, F) for i in range(4))]
    m = compute_metrics(table)
    assert m["accuracy"] == {"t1": pytest.approx(0.4), "t2": pytest.approx(0.5)}
    tr = m["transitions"]["t1->t2"]
    assert tr["i_to_c"] == pytest.approx(0.2) and tr["c_to_i"] == pytest.approx(0.1)
    assert tr["delta"] == pytest.approx(0.1) == pytest.approx(tr["i_to_c"] - tr["c_to_i"])
    assert tr["counts"] == {"i->i": 4, "i->c": 2, "c->i": 1, "c->c": 3}
    assert m["n_tasks"] == 10 and m["n_samples"] == 10 and m["pass_at_k"] == {}
    assert m["sandbox_errors"] == {"attempts": 0, "samples": 0, "tasks": 0}


def test_delta_identity_holds_on_random_tables() -> None:
    rng = random.Random(7)
    for _ in range(50):
        table = [traj(f"t{i}", rng.random() < 0.5, rng.random() < 0.5, rng.random() < 0.5) for i in range(17)]
        m = compute_metrics(table)
        for a, b in (("t1", "t2"), ("t2", "t3")):
            tr = m["transitions"][f"{a}->{b}"]
            assert tr["delta"] == pytest.approx(tr["i_to_c"] - tr["c_to_i"])
            assert tr["delta"] == pytest.approx(m["accuracy"][b] - m["accuracy"][a])


def test_three_attempts_give_consecutive_transitions() -> None:
    m = compute_metrics([traj("a", F, T, T), traj("b", T, F, T)])
    assert m["attempts"] == 3 and list(m["accuracy"]) == ["t1", "t2", "t3"]
    assert list(m["transitions"]) == ["t1->t2", "t2->t3"]
    assert m["accuracy"]["t3"] == 1.0
    assert m["transitions"]["t2->t3"]["counts"]["i->c"] == 1


def test_every_problem_is_in_the_denominator_and_sandbox_errors_are_counted_beside() -> None:
    """docs/method.md §5: fractions of all problems. Dropping b (all its samples hit sandbox errors) made Acc@t1
    1/2 instead of 1/3, and dropping c's sample lost its attempt-1 pass, which the attempt-2 error does not touch."""
    table = [traj("a", T, T), traj("b", F, F, errors=2), traj("c", T, F, errors=1)]
    m = compute_metrics(table)
    assert m["accuracy"] == {"t1": pytest.approx(2 / 3), "t2": pytest.approx(1 / 3)}
    assert m["transitions"]["t1->t2"]["c_to_i"] == pytest.approx(1 / 3)
    assert m["n_tasks"] == 3 and m["n_samples"] == 3
    assert m["sandbox_errors"] == {"attempts": 3, "samples": 2, "tasks": 2}


def test_several_samples_average_per_problem_and_pass_at_k() -> None:
    table = [traj("a", T, T, sample=0), traj("a", F, T, sample=1), traj("a", F, F, sample=2), traj("a", F, F, sample=3),
             traj("b", F, F, sample=0), traj("b", F, F, sample=1), traj("b", F, T, sample=2),
             traj("b", F, F, sample=3, errors=1)]  # its attempt 2 ungraded: counted as not passed
    m = compute_metrics(table, k_values=(1, 2, 3, 4))
    assert m["accuracy"]["t1"] == pytest.approx((1 / 4 + 0) / 2)
    assert m["accuracy"]["t2"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert list(m["pass_at_k"]["t1"]) == ["1", "2", "3", "4"]
    assert m["pass_at_k"]["t2"]["1"] == pytest.approx(m["accuracy"]["t2"])
    assert m["pass_at_k"]["t2"]["2"] == pytest.approx((pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 2)
    assert m["sandbox_errors"] == {"attempts": 1, "samples": 1, "tasks": 1}


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force_over_all_subsets(n: int) -> None:
    for c in range(n + 1):
        outcomes = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            brute = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
            assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)
            assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_n() -> None:
    assert 0.0 < pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert pass_at_k(2000, 3, 100) == pytest.approx(1 - comb(1997, 100) / comb(2000, 100))
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 4)


def _dp_levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def test_levenshtein_matches_the_dynamic_programme() -> None:
    rng = random.Random(3)
    for _ in range(500):
        a = "".join(rng.choice("ab(\n ") for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice("ab(\n ") for _ in range(rng.randint(0, 70)))
        assert levenshtein(a, b) == _dp_levenshtein(a, b), (a, b)
    assert levenshtein("kitten", "sitting") == 3


def test_edit_ratio() -> None:
    assert edit_ratio("", "") == 0.0
    assert edit_ratio("def f(): pass", "def f(): pass") == 0.0
    assert edit_ratio("abc", "xyz") == pytest.approx(3 / 6)
    assert edit_ratio("", "abcd") == 1.0
    m = compute_metrics([traj("a", F, T, solutions=("return 1", "return 2")), traj("b", T, T, solutions=("x", "x"))])
    assert m["edit_ratio"]["t1->t2"] == pytest.approx((1 / 16 + 0) / 2)


def test_ragged_attempts_are_rejected() -> None:
    with pytest.raises(ValueError, match="b sample 0: 1 attempts, expected 2"):
        compute_metrics([traj("a", T, T), traj("b", T)])
