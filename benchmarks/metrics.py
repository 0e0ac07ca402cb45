"""Self-correction metrics (docs/method.md §5), pure functions over per-sample attempt verdicts.

Denominator: all problems, every sample. An attempt whose grading failed for infrastructure reasons (a sandbox
error, left after the harness's retries) is not a pass; such attempts are counted in `sandbox_errors` beside the
metrics, so a reader sees how far they could move them. With several samples per problem, a problem's accuracy is
the mean over its samples, and Accuracy@t is the mean over problems. (Training masks sandbox errors out of the
loss instead: a reward it does not know must not push the policy either way.)
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Trajectory:
    """One sample of one problem: the verdicts of its attempts in order."""

    task_id: str
    sample_id: int
    passed: tuple[bool, ...]  # per attempt
    sandbox_errors: int = 0  # attempts whose grading failed for infrastructure reasons
    solutions: tuple[str, ...] = ()  # the graded programs per attempt, for the edit-distance ratio


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): 1 - C(n-c, k) / C(n, k), as the stable product 1 - prod(1 - k/i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def levenshtein(a: str, b: str) -> int:
    """Character edit distance (insert, delete, substitute) with Hyyro's bit-parallel algorithm.

    O(len(a) * len(b) / word) instead of the O(len(a) * len(b)) table: Python big ints hold one bit per character
    of the shorter string, so two 2,000-character programs take about a millisecond.
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    full = (1 << m) - 1
    last = 1 << (m - 1)
    match: dict[str, int] = defaultdict(int)
    for i, ch in enumerate(b):
        match[ch] |= 1 << i
    vp, vn, distance = full, 0, m  # vertical +1 / -1 deltas of the current column; score of its last cell
    for ch in a:
        eq = match.get(ch, 0)
        xv = eq | vn
        xh = (((eq & vp) + vp) ^ vp) | eq
        hp = (vn | ~(xh | vp)) & full
        hn = vp & xh
        if hp & last:
            distance += 1
        elif hn & last:
            distance -= 1
        hp = ((hp << 1) | 1) & full  # the first row grows by one per column: global, not substring, alignment
        hn = (hn << 1) & full
        vp = (hn | ~(xv | hp)) & full
        vn = hp & xv
    return distance


def edit_ratio(y1: str, y2: str) -> float:
    """Levenshtein(y1, y2) / (len(y1) + len(y2)): 0 for identical programs, at most 1; 0 for two empty ones."""
    total = len(y1) + len(y2)
    return levenshtein(y1, y2) / total if total else 0.0


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def compute_metrics(trajectories: Sequence[Trajectory], k_values: Sequence[int] = (1, 5, 10)) -> dict:
    """Accuracy per attempt, transitions between consecutive attempts, pass@k, edit ratio, sandbox-error counts.

    Keys of a transition "t1->t2" (fractions of problems, except `counts`, which count samples):
    `delta` = acc(t2) - acc(t1) = `i_to_c` - `c_to_i`; `i_to_c` wrong then right; `c_to_i` right then wrong.
    """
    attempts = max((len(t.passed) for t in trajectories), default=0)
    for t in trajectories:
        if len(t.passed) != attempts:
            raise ValueError(f"{t.task_id} sample {t.sample_id}: {len(t.passed)} attempts, expected {attempts}")
    by_task: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_task[t.task_id].append(t)
    tasks = sorted(by_task)
    names = [f"t{i + 1}" for i in range(attempts)]

    def task_mean(task_id: str, value) -> float:
        return _mean(value(t) for t in by_task[task_id])

    accuracy = {names[a]: _mean(task_mean(tid, lambda t, a=a: float(t.passed[a])) for tid in tasks)
                for a in range(attempts)}
    transitions = {}
    edit = {}
    for a in range(attempts - 1):
        key = f"{names[a]}->{names[a + 1]}"
        i_to_c = _mean(task_mean(tid, lambda t, a=a: float(not t.passed[a] and t.passed[a + 1])) for tid in tasks)
        c_to_i = _mean(task_mean(tid, lambda t, a=a: float(t.passed[a] and not t.passed[a + 1])) for tid in tasks)
        counts = {"i->i": 0, "i->c": 0, "c->i": 0, "c->c": 0}
        for t in trajectories:
            counts[f"{'c' if t.passed[a] else 'i'}->{'c' if t.passed[a + 1] else 'i'}"] += 1
        transitions[key] = {
            "delta": accuracy[names[a + 1]] - accuracy[names[a]],
            "i_to_c": i_to_c,
            "c_to_i": c_to_i,
            "counts": counts,
        }
        if any(len(t.solutions) == attempts for t in trajectories):
            edit[key] = _mean(task_mean(tid, lambda t, a=a: edit_ratio(t.solutions[a], t.solutions[a + 1]))
                              for tid in tasks)
    samples_per_task = [len(by_task[tid]) for tid in tasks]
    pass_k: dict[str, dict[str, float]] = {}
    if samples_per_task and max(samples_per_task) > 1:
        usable = [k for k in k_values if k <= min(samples_per_task)]  # only k that every problem supports
        for a in range(attempts):
            pass_k[names[a]] = {
                str(k): _mean(pass_at_k(len(by_task[tid]), sum(t.passed[a] for t in by_task[tid]), k) for tid in tasks)
                for k in usable
            }
    return {
        "n_tasks": len(tasks),
        "n_samples": len(trajectories),
        "attempts": attempts,
        "accuracy": accuracy,
        "transitions": transitions,
        "pass_at_k": pass_k,
        "edit_ratio": edit,
        "sandbox_errors": {  # attempts still ungraded after retries, counted above as not passed
            "attempts": sum(t.sandbox_errors for t in trajectories),
            "samples": sum(1 for t in trajectories if t.sandbox_errors),
            "tasks": len({t.task_id for t in trajectories if t.sandbox_errors}),
        },
    }
