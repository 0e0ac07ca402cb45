"""Paired bootstrap intervals over problems: is a Δ, or a row's difference from the base model, more than noise?

At a few hundred problems one problem is 0.2 to 0.6 points, and two problems either way is what resampling the
same benchmark gives; a table of such runs has to say which of its differences the data support. Both intervals
here resample problems with replacement (a problem is the unit the benchmark samples; its samples and attempts
stay together):

- `delta_interval(run)`: Δ = Acc@t2 - Acc@t1 of one run, each problem contributing its own t2 - t1.
- `difference_intervals(run, base)`: the run's Acc@t1, Acc@t2 and Δ minus the base's, paired by problem id (the
  same resampled problems enter both runs), so the per-problem correlation between two models' answers is kept
  and the interval is narrower than comparing two independent intervals. Both runs must cover the same problems.

Intervals are percentile intervals of `resamples` bootstrap means (default 10,000, seeded: the same inputs give
the same bounds). A problem's value is the mean over its samples, so a run with several samples per problem is
resampled by problem, not by sample. Runs are read from `score-code eval` output directories (results.jsonl,
through benchmarks.evaluate); the point estimates equal metrics.json's.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.errors import ScoreCodeError
from benchmarks.evaluate import METRICS_FILE, trajectories_from_files

RESAMPLES, LEVEL, SEED = 10_000, 0.95, 0
METRICS = ("acc_t1", "acc_t2", "delta")  # the per-problem quantities a difference is taken on


class BootstrapError(ScoreCodeError):
    """Runs cannot be bootstrapped or paired; the message names the directory and the problems."""

    hint = "pass output directories of finished `score-code eval` runs on the same tasks"


@dataclass(frozen=True)
class Interval:
    """A point estimate (fraction of problems) with its percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float = LEVEL

    @property
    def excludes_zero(self) -> bool:
        """The whole interval on one side of 0: a difference the data support at this level."""
        return self.low > 0 or self.high < 0

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """'+12.2 [+4.9, +19.5]' in points; a '*' marks an interval that excludes 0."""
        mark = "*" if self.excludes_zero else ""
        return (f"{self.estimate * scale:+.{digits}f} [{self.low * scale:+.{digits}f}, "
                f"{self.high * scale:+.{digits}f}]{mark}")


def per_problem(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """Problem id -> {"acc_t1", "acc_t2", "delta"}: the problem's pass rate per attempt (mean over its samples).

    The run must be finished (metrics.json written) and have two attempts or more."""
    out = Path(run_dir)
    if not (out / METRICS_FILE).is_file():
        raise BootstrapError(f"{out}: no {METRICS_FILE}; is it a finished `score-code eval` output directory?")
    by_task: dict[str, list[tuple[bool, ...]]] = defaultdict(list)
    for t in trajectories_from_files(out):
        if len(t.passed) < 2:
            raise BootstrapError(f"{out}: {t.task_id} has {len(t.passed)} attempt(s); Δ needs two")
        by_task[t.task_id].append(t.passed)
    if not by_task:
        raise BootstrapError(f"{out}: no graded problems in results.jsonl")
    values = {}
    for task_id, samples in by_task.items():
        t1 = sum(p[0] for p in samples) / len(samples)
        t2 = sum(p[1] for p in samples) / len(samples)
        values[task_id] = {"acc_t1": t1, "acc_t2": t2, "delta": t2 - t1}
    return values


def percentile_interval(values: Sequence[float], resamples: int = RESAMPLES, level: float = LEVEL,
                        seed: int = SEED) -> Interval:
    """The mean of `values` and the percentile interval of the means of `resamples` resamples with replacement."""
    n = len(values)
    if n == 0:
        raise BootstrapError("no problems to resample")
    if resamples < 1 or not 0 < level < 1:
        raise BootstrapError(f"resamples must be >= 1 and level in (0, 1); got {resamples} and {level}")
    rng = random.Random(seed)
    population = list(values)
    means = sorted(math.fsum(rng.choices(population, k=n)) / n for _ in range(resamples))
    tail = (1 - level) / 2
    low = means[max(0, math.ceil(tail * resamples) - 1)]  # nearest-rank percentiles
    high = means[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)]
    return Interval(estimate=math.fsum(population) / n, low=low, high=high, level=level)


def delta_interval(run_dir: str | Path, resamples: int = RESAMPLES, level: float = LEVEL,
                   seed: int = SEED) -> Interval:
    """Δ = Acc@t2 - Acc@t1 of one run with its bootstrap interval over problems."""
    values = per_problem(run_dir)
    return percentile_interval([values[t]["delta"] for t in sorted(values)], resamples, level, seed)


def paired_ids(run: dict[str, dict[str, float]], base: dict[str, dict[str, float]], run_name: str = "run",
               base_name: str = "base") -> list[str]:
    """The shared problem ids, sorted; refuses runs that do not cover the same problems, naming the missing ones."""
    only_run, only_base = sorted(set(run) - set(base)), sorted(set(base) - set(run))
    if only_run or only_base:
        parts = []
        for name, other, ids in ((base_name, run_name, only_run), (run_name, base_name, only_base)):
            if ids:
                shown = ", ".join(ids[:5]) + (f", ... ({len(ids)} in all)" if len(ids) > 5 else "")
                parts.append(f"{name} lacks {len(ids)} problem(s) that {other} has: {shown}")
        raise BootstrapError("runs are paired by problem and must cover the same problems; " + "; ".join(parts))
    return sorted(run)


def difference_intervals(run_dir: str | Path, base_dir: str | Path, metrics: Sequence[str] = METRICS,
                         resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED) -> dict[str, Interval]:
    """Metric -> (run - base) with its paired bootstrap interval: each resample draws problems, and both runs'
    values of the drawn problems enter the difference."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise BootstrapError(f"unknown metric(s) {unknown}; expected some of {METRICS}")
    run, base = per_problem(run_dir), per_problem(base_dir)
    ids = paired_ids(run, base, str(run_dir), str(base_dir))
    return {m: percentile_interval([run[t][m] - base[t][m] for t in ids], resamples, level, seed) for m in metrics}
