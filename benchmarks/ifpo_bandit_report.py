"""Summary statistics, Markdown table and plot for benchmarks/ifpo_bandit.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and population std over seeds."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def _map_leaves(tree: dict, function) -> dict:
    return {key: _map_leaves(value, function) if isinstance(value, dict) else function(value) for key, value in tree.items()}


def _leaf(tree: dict, path: Sequence[str]):
    for key in path:
        tree = tree[key]
    return tree


def summarize(runs: Sequence[dict[str, np.ndarray]], kinds: Sequence[str]) -> dict:
    """Reduce the runs of one method (one per seed) to final values, training means and curves.

    "per_seed" keeps one value per seed for every metric; "final" and
    "training_mean" hold their mean and std over seeds. A training mean
    averages over the steps of one run first; consult rates include the
    initial policy.
    """
    consult = np.stack([run["consult"] for run in runs])  # (seed, step, kind)
    expected = np.stack([run["expected_reward"] for run in runs])  # (seed, step)
    sampled = np.stack([run["batch_reward"] for run in runs])  # (seed, step)

    per_seed = {
        "final": {
            "consult": {kind: consult[:, -1, k].tolist() for k, kind in enumerate(kinds)},
            "expected_reward": expected[:, -1].tolist(),
        },
        "training_mean": {
            "consult": {kind: consult[:, :, k].mean(axis=1).tolist() for k, kind in enumerate(kinds)},
            "batch_reward": sampled.mean(axis=1).tolist(),
            "expected_reward": expected.mean(axis=1).tolist(),
        },
    }
    return {
        **_map_leaves(per_seed, _mean_std),
        "per_seed": per_seed,
        "curves": {
            "consult": {
                kind: {"mean": consult[:, :, k].mean(axis=0).tolist(), "std": consult[:, :, k].std(axis=0).tolist()}
                for k, kind in enumerate(kinds)
            },
            "expected_reward": {"mean": expected.mean(axis=0).tolist(), "std": expected.std(axis=0).tolist()},
        },
    }


def paired_difference(treatment: dict, baseline: dict) -> dict:
    """Mean and std over seeds of treatment minus baseline, seed by seed, for every per-seed metric.

    Both methods run from the same seeds with common random numbers, so the
    paired difference is far less noisy than the gap between the two means.
    """
    def difference(path: tuple[str, ...]) -> dict[str, float]:
        return _mean_std(np.subtract(_leaf(treatment["per_seed"], path), _leaf(baseline["per_seed"], path)))

    def walk(tree: dict, path: tuple[str, ...]) -> dict:
        return {
            key: walk(value, (*path, key)) if isinstance(value, dict) else difference((*path, key))
            for key, value in tree.items()
        }

    return walk(treatment["per_seed"], ())


def table_rows(summary: dict) -> list[tuple[str, tuple[str, ...]]]:
    """Return (row label, path into a method's summary) for every table row, in table order."""
    rows = [(f"consult {kind}, final", ("final", "consult", kind)) for kind in summary["kinds"]]
    rows += [(f"consult {kind}, training mean", ("training_mean", "consult", kind)) for kind in summary["kinds"]]
    rows += [
        ("reward per rollout, training mean", ("training_mean", "batch_reward")),
        ("expected reward, training mean", ("training_mean", "expected_reward")),
        ("expected reward, final", ("final", "expected_reward")),
    ]
    return rows


def format_cell(statistic: dict[str, float], signed: bool = False) -> str:
    mean = f"{statistic['mean']:+.3f}" if signed else f"{statistic['mean']:.3f}"
    return f"{mean} ± {statistic['std']:.3f}"


def table_markdown(summary: dict) -> str:
    """Render one row per metric, one column per method and one per paired difference, each "mean ± std"."""
    methods = list(summary["methods"])
    differences = list(summary["paired_difference"])
    header = methods + [f"{name.replace('_minus_', ' − ')} (paired)" for name in differences]
    lines = [
        "| metric | " + " | ".join(header) + " |",
        "| --- |" + " --- |" * len(header),
    ]
    for label, path in table_rows(summary):
        cells = [format_cell(_leaf(summary["methods"][method], path)) for method in methods]
        cells += [format_cell(_leaf(summary["paired_difference"][name], path), signed=True) for name in differences]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(summary: dict, path: Path) -> None:
    """Plot consult probability per kind and expected reward against step, mean ± std band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = summary["kinds"]
    figure, grid = plt.subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    axes = list(grid.flat)
    colors = {"grpo": "tab:blue", "ifpo": "tab:orange"}

    for method, result in summary["methods"].items():
        curves = result["curves"]
        series = [curves["consult"][kind] for kind in kinds] + [curves["expected_reward"]]
        for axis, curve in zip(axes, series):
            mean, std = np.array(curve["mean"]), np.array(curve["std"])
            steps = np.arange(len(mean))
            axis.plot(steps, mean, color=colors.get(method), label=method.upper())
            axis.fill_between(steps, mean - std, mean + std, color=colors.get(method), alpha=0.2, linewidth=0)

    for axis, kind in zip(axes, kinds):
        axis.set_title(f"P(consult | {kind})")
        axis.set_ylim(-0.02, 1.02)
    axes[-1].axhline(summary["optimum_expected_reward"], color="gray", linestyle="--", label="optimum")
    axes[-1].set_title("expected reward")
    for axis in axes:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[-1].legend(loc="lower right")

    train = summary["train"]
    figure.suptitle(
        f"GRPO vs IFPO: {train['seeds']} seeds, G={train['group_size']}, {train['prompts']} prompts/step, "
        f"{train['optimizer']} lr={train['lr']}\nline: mean over seeds, band: ± 1 std"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=110)
    plt.close(figure)
    temporary.replace(path)
