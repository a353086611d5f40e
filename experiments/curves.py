"""Learning curves: a run's evaluations read from its metrics.csv, and one figure of several runs' curves.
The sweep's per-dataset plots and the run records' figures both draw with ``plot_curves``; the records'
performance profile draws with ``plot_profiles``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

Curve = list[tuple[int, float]]
"""``(step, normalised score)`` of each evaluation of one run, in the order of the run."""


def eval_curve(metrics_csv: Path) -> Curve:
    """``(step, eval/normalized_score)`` of every evaluation in a run's metrics.csv (rows without an evaluation
    skipped), one per step: where a step holds two (a run finished by ``--resume DIR --num-updates S`` at a step S
    that already had an intermediate evaluation), the later one, the final evaluation over ``eval_episodes``,
    stands for it. Empty when the file does not exist."""
    if not metrics_csv.is_file():
        return []
    with open(metrics_csv) as f:
        curve = [
            (int(float(row["step"])), float(row["eval/normalized_score"]))
            for row in csv.DictReader(f)
            if row.get("eval/normalized_score") not in (None, "")
        ]
    return [point for i, point in enumerate(curve) if i + 1 == len(curve) or curve[i + 1][0] != point[0]]


def plot_curves(
    path: Path, title: str, lines: Sequence[tuple[str, Sequence[Curve]]], behavior: float | None = None
) -> Path:
    """Write one PNG of learning curves to ``path`` and return it. Each ``(label, runs)`` entry is one line: the
    mean normalised score over its runs at each step, with the runs' min-max band when there are several
    (seeds); an entry without evaluations is left out. ``behavior``: the behaviour policy's score, dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    banded = False
    for label, runs in lines:
        by_step: dict[int, list[float]] = {}
        for curve in runs:
            for step, score in curve:
                by_step.setdefault(step, []).append(score)
        if not by_step:
            continue
        steps = sorted(by_step)
        mean = [sum(by_step[s]) / len(by_step[s]) for s in steps]
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=label)
        if len(runs) > 1:
            banded = True
            low, high = [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps]
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    if behavior is not None:
        ax.axhline(behavior, color="gray", linestyle="--", label="behaviour policy")
    ax.set(xlabel="gradient updates", ylabel="normalised score (D4RL, x100)", title=title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    if banded:
        fig.text(0.99, 0.01, "line: mean over seeds; band: min-max", ha="right", fontsize=7, color="gray")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_profiles(
    path: Path,
    title: str,
    taus: Sequence[float],
    profiles: dict[str, Sequence[float]],
    bands: dict[str, Sequence[Sequence[float]]],
    xlabel: str,
    ylabel: str,
    marker: tuple[float, str] | None = None,
) -> Path:
    """Write one PNG of performance profiles (``rliable.plot_utils.plot_performance_profiles``: one line per
    entry of ``profiles`` over ``taus``, its ``bands`` ``[2, T]`` shaded) to ``path`` and return it. ``marker``:
    ``(tau, label)`` of a dashed vertical line. The PNG carries no software version, so the same inputs and
    library versions give the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import plot_utils

    fig, ax = plt.subplots(figsize=(10.0, 4.5))
    plot_utils.plot_performance_profiles(
        profiles,
        np.asarray(taus),
        performance_profile_cis=bands,
        ax=ax,
        alpha=0.08,
        xlabel=xlabel,
        ylabel=ylabel,
        labelsize="medium",
        ticklabelsize="medium",
    )
    if marker is not None:
        ax.axvline(marker[0], color="gray", linestyle="--", linewidth=1, label=marker[1])
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
