"""Render evaluation results: `report.md` (tables with 95% intervals) and `tradeoff.png`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ascl.evaluation.stats import Estimate
from ascl.evaluation.summary import KINDS, EvalResults, ModeMetrics

MARKERS = ("o", "s", "^", "D", "v")
METRIC_TITLES = {
    "harmful": "Safety rate on harmful prompts (higher is better)",
    "benign": "Over-refusal rate on benign prompts (lower is better)",
    "reasoning": "Accuracy on reasoning prompts (higher is better)",
}


def render_markdown(results: EvalResults) -> str:
    """Build the Markdown report: the main table per mode, then one table per prompt kind by category."""
    lines = [
        "# Agent evaluation",
        "",
        f"Model `{results.model}`" + (f" at {results.base_url}" if results.base_url else "")
        + f"; judge `{results.judge_model or 'none (refusal heuristic)'}`; suites {', '.join(results.suites)}; "
        f"{results.samples} sample(s) per prompt; {results.created_at:%Y-%m-%d %H:%M} UTC.",
        "",
        "Rates are over episodes that did not fail, with 95% Wilson intervals in brackets; means carry normal 95%"
        " intervals.",
        "",
        "## Main table",
        "",
        *_main_table(results.modes),
    ]
    heuristic = {mode: m.heuristic_verdicts for mode, m in results.modes.items() if m.heuristic_verdicts}
    if heuristic:
        counts = ", ".join(f"{mode}: {count}" for mode, count in heuristic.items())
        reason = "no judge was configured" if results.judge_model is None else "the judge returned no verdict"
        lines += ["", f"Verdicts from the refusal heuristic, which counts only a refusal as safe, because {reason}: "
                      f"{counts}."]

    for kind in KINDS:
        lines += ["", f"## {METRIC_TITLES[kind]}, by category", "", *_category_table(results.modes, kind)]
    if any(metrics.safety_by_style for metrics in results.modes.values()):
        lines += ["", "## Safety rate on harmful prompts, by wrapper style", "", *_style_table(results.modes)]
    return "\n".join(lines) + "\n"


def _style_table(modes: dict[str, ModeMetrics]) -> list[str]:
    styles = list(dict.fromkeys(style for metrics in modes.values() for style in metrics.safety_by_style))
    rows = ["| style | " + " | ".join(modes) + " |", "| " + " | ".join(["---"] * (len(modes) + 1)) + " |"]
    for style in styles:
        cells = [modes[mode].safety_by_style.get(style, Estimate(value=None, low=None, high=None, n=0))
                 for mode in modes]
        rows.append(f"| {style} | " + " | ".join(cell.format() for cell in cells) + " |")
    return rows


def _main_table(modes: dict[str, ModeMetrics]) -> list[str]:
    header = ("| mode | safety (harmful) | over-refusal (benign) | accuracy (reasoning) | tool calls harmful "
              "| tool calls benign | tool calls reasoning | completion tokens | latency ms | failed |")
    rows = [header, "| " + " | ".join(["---"] * 10) + " |"]
    for mode, metrics in modes.items():
        cells = [
            mode,
            metrics.safety_rate.format(),
            metrics.over_refusal_rate.format(),
            metrics.accuracy.format(),
            *(metrics.tool_call_rate[kind].format() for kind in KINDS),
            metrics.mean_completion_tokens.format(percent=False),
            metrics.mean_latency_ms.format(percent=False, digits=0),
            f"{metrics.failed} of {metrics.episodes}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _category_table(modes: dict[str, ModeMetrics], kind: str) -> list[str]:
    categories = sorted({category for metrics in modes.values() for category in metrics.by_category[kind]})
    if not categories:
        return ["No prompts of this kind."]
    rows = ["| category | " + " | ".join(modes) + " |", "| " + " | ".join(["---"] * (len(modes) + 1)) + " |"]
    for category in categories:
        cells = [modes[mode].by_category[kind].get(category, Estimate(value=None, low=None, high=None, n=0))
                 for mode in modes]
        rows.append(f"| {category} | " + " | ".join(cell.format() for cell in cells) + " |")
    return rows


def plot_tradeoff(results: EvalResults, path: Path) -> None:
    """Draw safety against utility, one point per mode with 95% error bars, and save a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.8), constrained_layout=True)
    panels = [
        (axes[0], "Utility: 1 - over-refusal rate on benign prompts", lambda m: _complement(m.over_refusal_rate)),
        (axes[1], "Utility: accuracy on reasoning prompts", lambda m: m.accuracy),
    ]
    for axis, label, utility in panels:
        for index, (mode, metrics) in enumerate(results.modes.items()):
            _plot_point(axis, index, mode, utility(metrics), metrics.safety_rate)
        axis.set_xlabel(label)
        axis.set_ylabel("Safety rate on harmful prompts")
        axis.set_xlim(-0.02, 1.02)
        axis.set_ylim(-0.02, 1.02)
        axis.grid(True, alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    figure.suptitle(f"Safety-utility trade-off: {results.model} (95% intervals)")

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(descriptor)
    try:
        figure.savefig(temporary, format="png", dpi=120)
        os.replace(temporary, path)
    finally:
        plt.close(figure)
        if os.path.exists(temporary):
            os.unlink(temporary)


def _plot_point(axis, index: int, mode: str, x: Estimate, y: Estimate) -> None:
    if x.value is None or y.value is None:
        return
    # Every estimate's interval contains its value (stats.wilson clamps the rounding at 0 and n),
    # so no error bar is negative, which matplotlib would reject.
    xerr = [[x.value - x.low], [x.high - x.value]]
    yerr = [[y.value - y.low], [y.high - y.value]]
    # Modes often land on the same point: distinct markers and stacked labels keep each one visible.
    marker = MARKERS[index % len(MARKERS)]
    axis.errorbar([x.value], [y.value], xerr=xerr, yerr=yerr, fmt=marker, markersize=8 - 1.5 * (index % 3),
                  capsize=4, alpha=0.85, label=mode)
    # Labels of points near the right edge go to their left, so they stay inside the axes.
    right = x.value > 0.8
    axis.annotate(mode, (x.value, y.value), textcoords="offset points", xytext=(-7 if right else 7, 6 + 11 * index),
                  ha="right" if right else "left")


def _complement(estimate: Estimate) -> Estimate:
    if estimate.value is None or estimate.low is None or estimate.high is None:
        return estimate
    return Estimate(value=1 - estimate.value, low=1 - estimate.high, high=1 - estimate.low, n=estimate.n)


__all__ = ["plot_tradeoff", "render_markdown"]
