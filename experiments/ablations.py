"""An ablation table from run directories or records: what each run changed against the first, and how it went.

Each row is one run (a run directory or a record under ``bench/results/``, read from its ``config.json`` and
``metrics.csv``). The change is the config fields that differ from the first run's (the baseline), so the table
says what was ablated without a hand-written label. Columns, all read up to ``until`` updates:

- last-5 mean: the mean normalised score of the run's last 5 evaluations (``experiments.records.last_evals_mean``);
- final: the last evaluation's score;
- episode length: the mean evaluation episode length over those evaluations (steps; hopper and walker2d episodes
  end when the robot falls, so a falling policy shows here first);
- model terminal fraction: the mean of ``rollout/terminal_frac`` (rollout steps the model ends by leaving the
  healthy box) over the last ``window`` updates;
- reward RMSE: the mean of ``train/model_reward_rmse`` (the adversarial model's reward against the data's, on
  real minibatches; ARMOR) over the last ``window`` updates;
- relative pessimism: the mean of ``train/relative_pessimism`` (ARMOR's f(s, pi) - f(s, pi_ref)) likewise.

::

    python -m experiments.ablations bench/results/armor/simloop_hopper_medium-v0/seed0-ablation-* --until 50000
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from experiments.curves import eval_curve
from experiments.scores import last_evals_mean

IGNORED_FIELDS = ("command", "out", "num_updates", "num_threads", "progress", "checkpoint_interval", "reference")
"""Config fields that say where and how long a run ran, not what it ran: never listed as a change."""


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, f"{key}.") if isinstance(v, dict) else {key: v})
    return out


def config_changes(config: dict, baseline: dict) -> str:
    """``"field=value, ..."`` for the fields of ``config`` (a run's config.json, nested dicts flattened with
    dots) that differ from ``baseline``'s, ``IGNORED_FIELDS`` left out; ``"baseline"`` when none differ. A field
    only one of the two configs has (a run recorded before the field existed) is not compared."""
    a, b = _flat(config), _flat(baseline)
    diff = [f"{k}={a[k]!r}" for k in sorted(set(a) & set(b)) if a[k] != b[k] and k not in IGNORED_FIELDS]
    return ", ".join(diff) if diff else "baseline"


@dataclass(frozen=True)
class Row:
    """One run's figures (``None`` where the run has no such metric); see the module docstring."""

    name: str
    change: str
    last5: float | None
    final: float | None
    final_step: int | None
    episode_length: float | None
    terminal_frac: float | None
    reward_rmse: float | None
    relative_pessimism: float | None


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None


def read_row(run: Path, baseline_config: dict, until: int | None = None, window: int = 10_000) -> Row:
    """The ``Row`` of the run in ``run`` (a directory with ``config.json`` and ``metrics.csv``).

    Raises:
        FileNotFoundError: ``run`` lacks config.json or metrics.csv.
    """
    config = json.loads((run / "config.json").read_text())
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if until is None or int(float(r["step"])) <= until]

    def col(key: str, rows=rows) -> list[tuple[int, float]]:
        return [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]

    evals = [(s, v) for s, v in eval_curve(run / "metrics.csv") if until is None or s <= until]
    last_step = max((int(float(r["step"])) for r in rows), default=0)
    recent = [r for r in rows if int(float(r["step"])) > last_step - window]
    summary = last_evals_mean(evals)
    lengths = col("eval/episode_length")[-5:]
    return Row(
        name=run.name,
        change=config_changes(config, baseline_config),
        last5=None if summary is None else summary[0],
        final=evals[-1][1] if evals else None,
        final_step=evals[-1][0] if evals else None,
        episode_length=_mean([v for _, v in lengths]),
        terminal_frac=_mean([v for _, v in col("rollout/terminal_frac", recent)]),
        reward_rmse=_mean([v for _, v in col("train/model_reward_rmse", recent)]),
        relative_pessimism=_mean([v for _, v in col("train/relative_pessimism", recent)]),
    )


def table_markdown(runs: list[Path], until: int | None = None, window: int = 10_000) -> str:
    """A GitHub Markdown table with one ``read_row`` per run, the first run being the baseline.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("give at least one run directory (the first is the baseline)")
    baseline = json.loads((runs[0] / "config.json").read_text())

    def fmt(v: float | None, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    lines = [
        "| run | change against the first run | last-5 mean | final (step) | episode length | "
        "model terminal frac | reward RMSE | relative pessimism |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        r = read_row(run, baseline, until, window)
        final = "—" if r.final is None else f"{r.final:.1f} ({r.final_step:,})"
        lines.append(
            f"| {r.name} | {r.change} | {fmt(r.last5, '.1f')} | {final} | {fmt(r.episode_length, '.0f')} | "
            f"{fmt(r.terminal_frac, '.4f')} | {fmt(r.reward_rmse, '.3f')} | {fmt(r.relative_pessimism, '+.3f')} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Args:
    """Print the ablation table of some runs (the first is the baseline)."""

    runs: tyro.conf.Positional[tuple[Path, ...]]
    """Run directories or records (each with config.json and metrics.csv)."""
    until: int | None = None
    """Read each run up to this many updates (compare a long run's start with short ablations)."""
    window: int = 10_000
    """Updates over which the training metrics are averaged (the last ones up to ``until``)."""


def main(argv: list[str] | None = None) -> str:
    args = tyro.cli(Args, args=sys.argv[1:] if argv is None else argv)
    text = table_markdown(list(args.runs), args.until, args.window)
    print(text)
    return text


if __name__ == "__main__":
    main()
