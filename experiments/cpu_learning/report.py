"""The experiment's results from its run directories (run.py step 7): results.md, compare/SET/, curves/ROW.png.

Everything here is recomputed from files on every run (seconds): the table's numbers from each evaluation's
metrics.json, its intervals from benchmarks.bootstrap over the per-problem results, the wall times from the
driver's steps.jsonl, the episodes from each training row's DONE.json.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.bootstrap import delta_interval, difference_intervals
from benchmarks.report import markdown_table

RESULTS_FILE = "results.md"
LOG_WINDOW = 10  # training steps per row of the training-log table
LOG_COLUMNS = {"attempt-1 reward": ("attempt1/reward", 3), "attempt-2 reward": ("attempt2/reward", 3),
               "i→c": ("delta_i2c", 3), "c→i": ("delta_c2i", 3), "edit ratio": ("edit_ratio", 3),
               "KL t1": ("kl/attempt1", 4), "KL t2": ("kl/attempt2", 4)}  # header: (log key, decimals)
HEADER = ("row", "episodes", "Acc@t1", "Acc@t2", "Δ [95% CI]", "Δ i→c", "Δ c→i", "edit ratio",
          "Acc@t1 − base [95% CI]", "Acc@t2 − base [95% CI]", "Δ − base [95% CI]")


def _eval_minutes(driver: Any, out: Path | None) -> str:
    """Wall minutes of the step that wrote eval directory `out` (a selection eval for the selection set)."""
    if out is None:
        return "-"
    step = "/".join(out.relative_to(driver.root).parts)  # evals/ROW/SET -> eval/ROW/SET; select/ROW/checkpoint-N
    step = "eval" + step[len("evals"):] if step.startswith("evals/") else step
    return f"{driver.steps.wall_seconds(step) / 60:.1f}"


def _selection_minutes(driver: Any, row: str) -> float:
    """Wall minutes of every checkpoint's evaluation on the selection set (none when there was one checkpoint)."""
    return sum(driver.steps.wall_seconds(step) for step in driver.steps.commands()
               if step.startswith(f"select/{row}/")) / 60


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def set_table(evals: dict[str, dict[str, Path]], name: str, episodes: dict[str, str], resamples: int) -> str:
    """One eval set's table: base first, then every trained row evaluated on it, with its paired differences from
    base."""
    rows = []
    base = evals["base"][name]
    for row, dirs in evals.items():
        if name not in dirs:
            continue
        metrics = json.loads((dirs[name] / "metrics.json").read_text())["metrics"]
        tr = metrics["transitions"]["t1->t2"]
        cells = [row, episodes.get(row, "-"), _pct(metrics["accuracy"]["t1"]), _pct(metrics["accuracy"]["t2"]),
                 delta_interval(dirs[name], resamples).format(), _pct(tr["i_to_c"]), _pct(tr["c_to_i"]),
                 f"{metrics['edit_ratio'].get('t1->t2', float('nan')):.3f}"]
        if row == "base":
            cells += ["-", "-", "-"]
        else:
            diff = difference_intervals(dirs[name], base, resamples=resamples)
            cells += [diff[m].format() for m in ("acc_t1", "acc_t2", "delta")]
        rows.append(cells)
    n = json.loads((base / "metrics.json").read_text())["metrics"]["n_tasks"]
    return (f"### {name} ({n} problems: one problem = {100 / n:.2f} points)\n\n" + markdown_table(HEADER, rows)
            + "\n")


def training_log_table(root: Path, rows: list[str]) -> str:
    """Means of each RL row's training log (train/ROW/metrics.jsonl) over windows of LOG_WINDOW steps: what the
    policy did on its own training samples as it learned. A resumed run logs the steps after its checkpoint again;
    the last record of a step counts."""
    table = []
    for row in rows:
        path = root / "train" / row / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        by_step = {r["step"]: r for r in records}
        for start in range(1, max(by_step, default=0) + 1, LOG_WINDOW):
            window = [by_step[s] for s in range(start, start + LOG_WINDOW) if s in by_step]
            if not window:
                continue
            means = [f"{sum(r[key] for r in window) / len(window):.{places}f}" for key, places in LOG_COLUMNS.values()]
            skipped = sum(r.get("rollout/groups_skipped", 0) for r in window)
            groups = skipped + sum(r.get("rollout/groups_kept", 0) for r in window)
            table.append([row, f"{window[0]['step']}-{window[-1]['step']}", *means, f"{skipped:.0f} of {groups:.0f}"])
    return markdown_table(["row", "steps", *LOG_COLUMNS, "groups skipped"], table) if table else ""


def write_results(driver: Any, evals: dict[str, dict[str, Path]], n_tasks: int) -> Path:
    """results.md, compare/SET/comparison.{md,png} and curves/ROW.png under the config's results_dir. `evals` may
    be partial (run.py --report-only): a set appears once base has it, with the rows evaluated on it, and the page
    opens by naming what is missing."""
    from score_code.cli import main
    from score_code.train.plot import PlotError, plot_run

    c = driver.c
    out = Path(c.results_dir)
    (out / "curves").mkdir(parents=True, exist_ok=True)
    rows = [r for r in evals if r != "base"]
    episodes = {r: str(json.loads((driver.root / "train" / r / "DONE.json").read_text())["episodes"]) for r in rows}
    sets = list(evals["base"])
    for name in sets:
        done = [r for r in evals if name in evals[r]]
        code = main(["compare", *(str(evals[r][name]) for r in done), "--labels", *done,
                     "--output", str(out / "compare" / name), "--overwrite"])
        if code != 0:
            raise RuntimeError(f"score-code compare failed on {name} (exit {code})")
    curves = {}
    for row in rows:
        try:
            curves[row] = plot_run(driver.root / "train" / row, out / "curves" / f"{row}.png")
        except PlotError:
            curves[row] = None  # a baseline whose filter kept nothing trained no step

    lines = ["# Issue #16: SCoRe against the baselines and ablations", "",
             f"Base model: {c.model or 'SmolLM2-135M-Instruct (embedded default)'}; recipe `{c.recipe}`; "
             f"{n_tasks} training tasks (`{driver.root / 'train_tasks.jsonl'}`); budget B = {driver.budget()} "
             "sampled episodes (run.py's docstring: how each row's is set). Greedy evaluation, two attempts; "
             f"checkpoints chosen on `{c.selection_set}` only.", "",
             "Δ and every difference from base carry a 95% paired bootstrap interval over problems "
             f"({c.bootstrap_resamples} resamples, benchmarks/bootstrap.py). **\\*** marks an interval that excludes "
             "0: only those differences are more than the noise of which problems the benchmark happens to hold.",
             ""]
    names = driver.set_names()
    missing = [f"{row} ({', '.join(n for n in names if n not in evals.get(row, {}))})"
               for row in ("base", *driver.rows) if any(n not in evals.get(row, {}) for n in names)]
    if missing:
        lines[1:1] = ["", "**Partial: the run has not finished.** Not evaluated yet (row: sets): "
                      + "; ".join(missing) + ". Rows not trained and selected yet have no set at all."]
    for name in sets:
        lines.append(set_table(evals, name, episodes, c.bootstrap_resamples))
    lines += ["## Runs", "", markdown_table(
        ["row", "training wall time", "selection wall time", "selected checkpoint",
         "adapter (`score-code eval ... --model PATH`)", "curves"],
        [[r, f"{driver.steps.wall_seconds(f'train/{r}') / 60:.1f} min", f"{_selection_minutes(driver, r):.1f} min",
          json.loads((driver.root / "select" / r / "selected.json").read_text())["checkpoint"],
          f"`{Path(c.adapters_dir) / r}`", f"![{r}](curves/{r}.png)" if curves[r] else "no training step"]
         for r in rows])]
    log = training_log_table(driver.root, [r for r in rows if r in driver.rl_rows])
    if log:
        lines += ["## Training logs", "", f"Means over {LOG_WINDOW} steps of each RL row's log, on its own training "
                  "samples (train/ROW/metrics.jsonl; the curves plot every step):", "", log]
    if sets:
        lines += ["## Evaluation wall time (minutes)", "", markdown_table(
            ["row", *sets], [[r, *(_eval_minutes(driver, evals[r].get(name)) for name in sets)] for r in evals])]
        lines += ["Comparison tables and bar charts from `score-code compare`: " + ", ".join(
            f"[{name}](compare/{name}/comparison.md)" for name in sets) + ".", ""]
    lines += ["## Commands", "", "Every step as the driver ran it (`run.sh` runs them all; `runs/steps.jsonl` has "
              "each invocation and its wall time):", "", "```bash",
              *(f"{command}  # {step}" for step, command in driver.steps.commands().items()), "```", ""]
    path = out / RESULTS_FILE
    path.write_text("\n".join(lines))
    return path
