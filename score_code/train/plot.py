"""Training curves of a run: reward per attempt, delta (and its i->c / c->i parts), KL per attempt, the edit ratio
between the attempts, loss.

Reads RUN_DIR/metrics.jsonl; stage boundaries are shaded so stage I and stage II can be told apart.
"""
from __future__ import annotations

import math
from pathlib import Path

from benchmarks.errors import ScoreCodeError
from score_code.train.run_log import read_metrics

PANELS = (
    ("reward (training, temperature 1.0)", ("attempt1/reward", "attempt2/reward")),
    ("delta = attempt 2 - attempt 1", ("delta", "delta_i2c", "delta_c2i")),
    ("KL to the reference (per token, k3)", ("kl/attempt1", "kl/attempt2")),
    ("edit ratio, attempt 1 -> attempt 2 (0 = unchanged)", ("edit_ratio",)),
    ("loss", ("loss",)),
)


class PlotError(ScoreCodeError):
    """The run directory has nothing to plot."""

    hint = "pass the --output_dir of a `score-code train` run"


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` finite points (NaN where none), so noisy per-step rewards stay readable."""
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1): i + 1] if math.isfinite(v)]
        out.append(sum(recent) / len(recent) if recent else math.nan)
    return out


def plot_run(run_dir: Path, output: Path | None = None, smooth_steps: int = 0) -> Path:
    """Write one panel per PANELS entry, two per row, to `output` (default RUN_DIR/training_curves.png); returns
    its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    if not rows:
        raise PlotError(f"{run_dir}: no metrics.jsonl rows to plot")
    steps = [r["step"] for r in rows]
    window = smooth_steps or max(1, len(rows) // 20)
    rows_of_panels = math.ceil(len(PANELS) / 2)
    fig, axes = plt.subplots(rows_of_panels, 2, figsize=(12, 3.75 * rows_of_panels), sharex=True)
    for ax in axes.flat[len(PANELS):]:
        ax.set_visible(False)
    for ax, (title, keys) in zip(axes.flat, PANELS, strict=False):
        for key in keys:
            values = [float(r.get(key, math.nan)) for r in rows]
            line, = ax.plot(steps, _smooth(values, window), label=key, linewidth=1.8)
            if window > 1:
                ax.plot(steps, values, color=line.get_color(), alpha=0.2, linewidth=0.8)
        _shade_stages(ax, rows)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    for ax in axes.flat[len(PANELS) - 2:len(PANELS)]:  # the lowest panel of each column
        ax.set_xlabel("global step")
        ax.xaxis.set_tick_params(labelbottom=True)
    note = f" (lines: trailing mean over {window} steps)" if window > 1 else ""
    fig.suptitle(f"{run_dir.name}: SCoRe training, grey = stage II{note}")
    fig.tight_layout()
    output = output or run_dir / "training_curves.png"
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def _shade_stages(ax, rows: list[dict]) -> None:
    """Shade stage-II steps grey, so each stage's span is visible."""
    start = None
    for r in rows + [{"step": rows[-1]["step"] + 1, "stage": 0}]:
        if r.get("stage") == 2 and start is None:
            start = r["step"] - 0.5
        elif r.get("stage") != 2 and start is not None:
            ax.axvspan(start, r["step"] - 0.5, color="grey", alpha=0.12, label=None)
            start = None
