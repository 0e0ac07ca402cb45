"""Report builders: the paper table in markdown and plain text, the transition plot."""
from __future__ import annotations

from pathlib import Path

from benchmarks.metrics import Trajectory, compute_metrics
from benchmarks.report import markdown_report, plot_transitions, summary_table, transition_figure


def metrics_of(*pairs: tuple[bool, bool]) -> dict:
    return compute_metrics([Trajectory(f"t{i}", 0, p, solutions=("a", "b")) for i, p in enumerate(pairs)])


def test_markdown_report_has_the_paper_table_and_header() -> None:
    m = metrics_of((False, True), (True, True), (True, False), (False, False))
    text = markdown_report(m, {"model": "m1", "dataset": "humaneval (sha256 abc)"}, plot_name="transitions.png")
    assert "- **model**: m1" in text and "- **dataset**: humaneval (sha256 abc)" in text
    assert ("| Acc@t1 | Acc@t2 | Δ(t1,t2) | Δ i→c | Δ c→i |\n|---|---|---|---|---|\n"
            "| 50.0 | 50.0 | 0.0 | 25.0 | 25.0 |") in text
    assert "| t1->t2 | 1 | 1 | 1 | 1 | 0.500 |" in text  # counts i->i, i->c, c->i, c->c and the edit ratio
    assert "![attempt 1 to attempt 2 transitions](transitions.png)" in text


def test_summary_counts_sandbox_errors_in_the_denominator() -> None:
    m = compute_metrics([Trajectory("a", 0, (True, True)), Trajectory("b", 0, (True, False), sandbox_errors=1)])
    summary = summary_table(m)
    assert "t1" in summary and "100.0" in summary and "t1->t2" in summary
    assert "2 problems, 2 samples, all in the denominator" in summary
    assert "1 attempts, counted as not passed (1 samples, 1 problems)" in summary


def test_single_attempt_report_has_no_transitions() -> None:
    m = compute_metrics([Trajectory("t", 0, (True,))])
    assert "| 100.0 | - | - | - | - |" in markdown_report(m, {})
    assert "t1->t2" not in summary_table(m)


def test_transition_plot_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "t.png"
    plot_transitions(metrics_of((False, True), (True, True)), path, title="model on data")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_transition_colour_bar_has_integer_ticks() -> None:
    """Counts of samples: on a small run the default locator labelled the colour bar 0.0, 0.2, ... 1.0."""
    import matplotlib.pyplot as plt

    fig = transition_figure(metrics_of((False, True), (True, True)))
    colour_bar = fig.axes[1]
    ticks = [t for t in colour_bar.get_yticks() if 0 <= t <= 1]
    plt.close(fig)
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
