"""A sweep's results, from the files in its directory alone: one record per trial (``collect``), rows per
dataset, algorithm and variant with mean ± std over seeds and the published figures (``aggregate``), and the
files ``results.md``, ``results.csv``, ``trials.csv``, ``failed.json`` and ``plots/`` (learning curves per
dataset, the throughput chart of a pytest-benchmark run)."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

from algos import ALGOS
from experiments.curves import eval_curve, plot_curves
from experiments.published import PUBLISHED_NOTE, PUBLISHED_SOURCES, format_published, published_for
from experiments.throughput import throughput_plot


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then a rename), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def collect(sweep_dir: Path) -> list[dict]:
    """One record per trial directory under ``sweep_dir``: every ``summary.json`` (status ``done``) and
    every ``failed.json`` without a summary beside it (status ``failed``), with ``trial.json``'s variant."""
    records = []
    for path in sorted(sweep_dir.rglob("summary.json")):
        summary = json.loads(path.read_text())
        spec_path = path.parent / "trial.json"
        spec = json.loads(spec_path.read_text()) if spec_path.is_file() else {}
        records.append(
            {
                "algo": summary["algo"],
                "dataset": summary["dataset"],
                "seed": summary["seed"],
                "variant": spec.get("variant", ""),
                "status": "done",
                "normalized_score": summary["normalized_score"],
                "behavior_normalized_score": summary.get("behavior_normalized_score"),
                "num_updates": summary.get("num_updates"),
                "wall_s": summary.get("wall_s"),
                "error": "",
                "run_dir": str(path.parent),
            }
        )
    for path in sorted(sweep_dir.rglob("failed.json")):
        if path.parent.resolve() == sweep_dir.resolve() or (path.parent / "summary.json").is_file():
            continue
        f = json.loads(path.read_text())
        records.append(
            {
                **{k: f.get(k) for k in ("algo", "dataset", "seed")},
                "variant": f.get("variant", ""),
                "status": "failed",
                "normalized_score": None,
                "behavior_normalized_score": None,
                "num_updates": None,
                "wall_s": None,
                "error": f.get("error", ""),
                "run_dir": str(path.parent),
            }
        )
    algo_order = {a: i for i, a in enumerate(ALGOS)}
    records.sort(key=lambda r: (r["dataset"], algo_order.get(r["algo"], 99), r["variant"], r["seed"]))
    return records


def _mean_std(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def aggregate(records: list[dict]) -> list[dict]:
    """Rows per (dataset, algo, variant): mean ± std (population, over seeds) of the final normalised
    score, the number of seeds done and failed, the behaviour policy's score, updates, published figures."""
    rows = []
    key_of = lambda r: (r["dataset"], r["algo"], r["variant"])  # noqa: E731
    for (dataset, algo, variant), group in itertools.groupby(records, key=key_of):
        group = list(group)
        done = [r for r in group if r["status"] == "done"]
        scores = [r["normalized_score"] for r in done]
        behavior = [r["behavior_normalized_score"] for r in done if r["behavior_normalized_score"] is not None]
        updates = sorted({r["num_updates"] for r in done})
        mean, std = _mean_std(scores) if scores else (None, None)
        rows.append(
            {
                "dataset": dataset,
                "algo": algo,
                "variant": variant,
                "score_mean": mean,
                "score_std": std,
                "num_seeds": len(done),
                "num_failed": len(group) - len(done),
                "behavior_score": _mean_std(behavior)[0] if behavior else None,
                "num_updates": "/".join(str(u) for u in updates),
                "published": "; ".join(format_published(*fig) for fig in published_for(algo, dataset)),
            }
        )
    return rows


def _fmt(x, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def write_results(sweep_dir: str | Path, plots: bool = True, benchmark_json: str | None = None) -> list[dict]:
    """Write ``results.md``, ``results.csv`` (per dataset/algo/variant), ``trials.csv`` (per trial, with
    status and error) and ``failed.json`` (every failed trial) into ``sweep_dir``, and the plots into
    ``sweep_dir/plots``. Returns the aggregate rows.

    Raises:
        FileNotFoundError: ``sweep_dir`` is missing, or a given ``benchmark_json`` is.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no sweep directory {root}")
    records = collect(root)
    rows = aggregate(records)
    columns = list(rows[0]) if rows else ["dataset", "algo", "variant", "score_mean", "score_std", "num_seeds"]
    with open(root / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    trial_cols = ["algo", "dataset", "seed", "variant", "status", "normalized_score", "behavior_normalized_score"]
    trial_cols += ["num_updates", "wall_s", "error", "run_dir"]
    with open(root / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=trial_cols)
        w.writeheader()
        w.writerows(records)
    write_json(root / "failed.json", [r for r in records if r["status"] == "failed"])
    figures = write_plots(root, records, benchmark_json) if plots else []
    (root / "results.md").write_text(results_markdown(root, rows, records, figures))
    return rows


def results_markdown(root: Path, rows: list[dict], records: list[dict], figures: list[Path]) -> str:
    """The Markdown report: the aggregate table, its notes, the per-trial table and the figures."""
    num_failed = sum(r["status"] == "failed" for r in records)
    lines = [
        "# Sweep results",
        "",
        f"{len(records)} trials under `{root}`: {len(records) - num_failed} done, {num_failed} failed. "
        "Score: D4RL normalised return (x100) of each seed's final policy, mean ± std over seeds.",
        "",
        "| dataset | algo | variant | normalised score | seeds | failed | behaviour policy | updates "
        "| published (D4RL) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        score = f"{r['score_mean']:.1f} ± {r['score_std']:.1f}" if r["score_mean"] is not None else "–"
        lines.append(
            f"| {r['dataset']} | {r['algo']} | {r['variant']} | {score} | {r['num_seeds']} | {r['num_failed']} "
            f"| {_fmt(r['behavior_score'])} | {r['num_updates']} | {r['published']} |"
        )
    lines += ["", "Published figures:", ""] + [f"- {k}: {v}." for k, v in PUBLISHED_SOURCES.items()]
    lines += ["", PUBLISHED_NOTE, "", "## Trials", ""]
    lines += ["| algo | dataset | seed | variant | status | score | updates | wall s | error |"]
    lines += ["|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        error = str(r["error"] or "").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['algo']} | {r['dataset']} | {r['seed']} | {r['variant']} | {r['status']} "
            f"| {_fmt(r['normalized_score'])} | {r['num_updates'] or ''} | {_fmt(r['wall_s'], 0)} | {error} |"
        )
    if figures:
        lines += ["", "## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(root).as_posix()})" for p in figures]
    return "\n".join(lines) + "\n"


def write_plots(root: Path, records: list[dict], benchmark_json: str | None = None) -> list[Path]:
    """Learning curves per dataset (one line per algorithm and variant: mean over seeds, min-max band) and the
    throughput chart; PNG files under ``root/plots``. Returns the files written.

    Raises:
        FileNotFoundError: a given ``benchmark_json`` that does not exist.
    """
    out_dir = root / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    done = [r for r in records if r["status"] == "done"]
    for dataset in dict.fromkeys(r["dataset"] for r in done):
        rows = [r for r in done if r["dataset"] == dataset]
        lines = []
        for (algo, variant), group in itertools.groupby(rows, key=lambda r: (r["algo"], r["variant"])):
            group = list(group)
            label = f"{algo}{' ' + variant if variant else ''} ({len(group)} seed{'s' if len(group) > 1 else ''})"
            lines.append((label, [eval_curve(Path(r["run_dir"]) / "metrics.csv") for r in group]))
        behavior = [r["behavior_normalized_score"] for r in rows if r["behavior_normalized_score"] is not None]
        path = out_dir / f"curves_{dataset.replace('/', '_')}.png"
        written.append(plot_curves(path, dataset, lines, sum(behavior) / len(behavior) if behavior else None))
    bench = throughput_plot(out_dir, benchmark_json)
    if bench is not None:
        written.append(bench)
    return written
