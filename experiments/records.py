"""Run records and the README's results table.

A finished run's record is kept in the repository, under ``bench/results/<algo>/<dataset>/seed<k>[-<tag>]/``
(the dataset id with ``/`` as ``_``): its ``config.json``, ``metrics.csv``, ``summary.json``, ``episodes.csv``
(every evaluation, episode by episode) and ``record.json`` (tag, note, when it was added); no weights. The
README's results table and the learning curves in ``bench/figures/`` are generated from these files alone::

    python -m experiments.records add runs/mopo/hopper-medium --note "..."   # copy a finished run's record
    python -m experiments.records table                                      # regenerate README table + curves
    python -m experiments.records table --check                              # exit 1 if README's table is stale

Runs recorded before records were kept, whose run directories are gone, are listed in
``bench/results/unrecorded.json`` with the figures the README reported at the time; the table shows them as
such. CI runs ``table --check`` through the test suite (``tests/test_experiments_records.py``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from experiments.curves import Curve, eval_curve, plot_curves

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
FIGURES_DIR = REPO_ROOT / "bench" / "figures"
README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"
RECORD_FILES = ("config.json", "metrics.csv", "summary.json", "episodes.csv")
"""The files of a run directory that make its record."""
OPTIONAL_FILES = ("peer_run.json", "diagnosis_step*.json")
"""Copied too where present: a peer run's settings and timings (``peers/``), ``experiments.diagnose`` output."""
LAST_EVALS = 5
"""The table's steadier figure: the mean of a run's last this-many evaluations (hopper and walker2d curves swing
between evaluations, so the final one alone can mislead)."""
ALGO_NAMES = {"mopo": "MOPO", "combo": "COMBO", "armor": "ARMOR", "bc": "BC"}
DATASET_ORDER = ("halfcheetah", "hopper", "walker2d")


def record_dir(summary: dict, tag: str | None = None, root: Path = RESULTS_DIR) -> Path:
    """``root/<algo>/<dataset with / as _>/seed<k>[-<tag>]`` for a run's summary."""
    name = f"seed{summary['seed']}" + (f"-{tag}" if tag else "")
    return root / summary["algo"] / summary["dataset"].replace("/", "_") / name


def add(run_dir: str | Path, tag: str | None = None, note: str = "", root: Path = RESULTS_DIR) -> Path:
    """Copy a finished run's record into ``root`` and return where it went.

    Raises:
        FileNotFoundError: ``run_dir`` lacks one of ``RECORD_FILES`` (an unfinished run has no summary.json).
        FileExistsError: a record of the same algo, dataset, seed and tag exists (give another ``tag``).
    """
    run_dir = Path(run_dir)
    missing = [n for n in RECORD_FILES if not (run_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a finished run: no {', '.join(missing)}")
    summary = json.loads((run_dir / "summary.json").read_text())
    dest = record_dir(summary, tag, root)
    if dest.exists():
        raise FileExistsError(f"{dest} already holds a record; keep both with --tag")
    dest.mkdir(parents=True)
    for pattern in RECORD_FILES + OPTIONAL_FILES:
        for path in sorted(run_dir.glob(pattern)):
            shutil.copy2(path, dest / path.name)
    meta = {"tag": tag, "note": note, "added": time.strftime("%Y-%m-%d", time.gmtime()), "source": str(run_dir)}
    (dest / "record.json").write_text(json.dumps(meta, indent=2) + "\n")
    return dest


def load_records(root: Path = RESULTS_DIR) -> list[dict]:
    """Every record under ``root``: its summary, with ``record`` (record.json), ``dir`` and ``best`` filled in."""
    out = []
    for summary_path in sorted(root.glob("*/*/*/summary.json")):
        d = summary_path.parent
        rec = json.loads(summary_path.read_text())
        rec["record"] = json.loads((d / "record.json").read_text()) if (d / "record.json").is_file() else {}
        rec["dir"] = d
        out.append(rec)
    return out


def _algo_label(rec: dict) -> str:
    code = rec.get("code")
    if code:  # a peer's run: its library and commit or version
        name = rec["algo"].split("-", 1)[-1].upper().replace("TD3PLUSBC", "TD3+BC")
        pin = code.get("commit", code.get("version", ""))
        return f"{name} ({code['library']} {pin[:7] if 'commit' in code else pin})"
    return f"{ALGO_NAMES.get(rec['algo'], rec['algo'])} (simloop)"


def _sort_key(rec: dict) -> tuple:
    env = rec["dataset"].split("/")[1] if rec["dataset"].count("/") >= 2 else rec["dataset"]
    env_rank = DATASET_ORDER.index(env) if env in DATASET_ORDER else len(DATASET_ORDER)
    return (
        env_rank,
        rec["dataset"],
        "code" in rec,
        rec["algo"],
        rec.get("seed", 0),
        rec.get("record", {}).get("tag") or "",
    )


def _machine(rec: dict) -> str:
    m = rec.get("machine") or {}
    if not m:
        return "—"
    where = m.get("gpu") or m.get("cpu", "?")
    return f"{where}, {m.get('torch_threads', '?')} thr"


def _hours(wall_s) -> str:
    return "—" if wall_s is None else f"{wall_s / 3600:.1f} h" if wall_s >= 3600 else f"{wall_s / 60:.0f} min"


def last_evals_mean(curve: Curve, k: int = LAST_EVALS) -> tuple[float, int, int] | None:
    """``(mean score, first step, last step)`` of the last ``k`` evaluations of ``curve`` (``eval_curve``'s
    ``(step, normalised score)`` pairs, in step order; all of them when there are fewer); None when empty.

    Raises:
        ValueError: ``k`` < 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    tail = curve[-k:]
    if not tail:
        return None
    return sum(score for _, score in tail) / len(tail), tail[0][0], tail[-1][0]


def _steps(step: int) -> str:
    return f"{step // 1000}k" if step % 1000 == 0 and step else f"{step:,}"


def _last_evals_cell(curve: Curve) -> str:
    """The table cell of ``last_evals_mean``: ``"52.4 (160k-200k)"``, ``"45.1 (35k)"`` or ``"—"``."""
    tail = last_evals_mean(curve)
    if tail is None:
        return "—"
    mean, first, last = tail
    return f"{mean:.1f} ({_steps(last) if first == last else f'{_steps(first)}-{_steps(last)}'})"


def _record_row(rec: dict) -> str:
    curve = eval_curve(rec["dir"] / "metrics.csv")
    best_step, best = max(curve, key=lambda e: e[1]) if curve else (None, None)
    tag = rec["record"].get("tag")
    seed = f"{rec['seed']}" + (f" ({tag})" if tag else "")
    link = (rec["dir"].relative_to(REPO_ROOT) if rec["dir"].is_relative_to(REPO_ROOT) else rec["dir"]).as_posix()
    return (
        f"| `{rec['dataset']}` | [{_algo_label(rec)}]({link}) | {seed} "
        f"| **{rec['normalized_score']:.1f}** ± {rec['normalized_score_std']:.1f} "
        f"| {'—' if best is None else f'{best:.1f} ({best_step:,})'} | {_last_evals_cell(curve)} "
        f"| {rec['behavior_normalized_score']:.1f} | {rec['num_updates']:,} | {_hours(rec.get('wall_s'))} "
        f"| {_machine(rec)} | {(rec.get('machine') or {}).get('date', '—')} | {rec['record'].get('note', '')} |"
    )


def _lost_row(rec: dict) -> str:
    """A row of ``unrecorded.json``: a run whose directory is gone, with the figures reported at the time."""
    return (
        f"| `{rec['dataset']}` | {_algo_label(rec)} | {rec['seed']} "
        f"| {rec['normalized_score']:.1f} ± {rec['normalized_score_std']:.1f} | — | — "
        f"| {rec['behavior_normalized_score']:.1f} | {rec['num_updates']:,} | {_hours(rec.get('wall_s'))} "
        f"| {rec.get('machine', '—')} | {rec['date']} | no record: {rec['note']} |"
    )


def table_markdown(root: Path = RESULTS_DIR) -> str:
    """The results table (GitHub Markdown), from the records under ``root`` and ``root/unrecorded.json``."""
    rows = [
        "| dataset | algorithm (code) | seed | normalised score, final (10 episodes) | best evaluation (updates) "
        f"| mean of the last {LAST_EVALS} evaluations (updates) | behaviour policy | updates | wall time | machine "
        "| date | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    unrecorded = root / "unrecorded.json"
    lost = (
        [{**r, "record": {}, "lost": True} for r in json.loads(unrecorded.read_text())] if unrecorded.is_file() else []
    )
    for rec in sorted(load_records(root) + lost, key=_sort_key):
        rows.append(_lost_row(rec) if rec.get("lost") else _record_row(rec))
    return "\n".join(rows)


def write_curves(root: Path = RESULTS_DIR, out_dir: Path = FIGURES_DIR) -> list[Path]:
    """One PNG of learning curves per dataset, ``out_dir/results_<dataset>.png`` (every record's evaluations, one
    line each; the behaviour policy dashed). Returns the files written."""
    records = sorted(load_records(root), key=_sort_key)
    written = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        group = [r for r in records if r["dataset"] == dataset]
        lines = []
        for rec in group:
            tag = rec["record"].get("tag")
            label = f"{_algo_label(rec)} seed {rec['seed']}" + (f" ({tag})" if tag else "")
            lines.append((label, [eval_curve(rec["dir"] / "metrics.csv")]))
        path = out_dir / f"results_{dataset.replace('/', '_')}.png"
        written.append(plot_curves(path, dataset, lines, group[0]["behavior_normalized_score"]))
    return written


def readme_table(readme: Path = README) -> str:
    """The table currently between the markers in README.

    Raises:
        ValueError: the markers are missing.
    """
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


@dataclass(frozen=True)
class Add:
    """Copy a finished run's record (config, metrics, summary, episodes) into bench/results/."""

    run_dir: tyro.conf.Positional[str]
    """The run directory (``--out`` of the run)."""
    tag: str | None = None
    """Distinguishes a second record of the same algo, dataset and seed (``lambda1``, ``first-try``)."""
    note: str = ""
    """One line for the table's note column (what the run showed, how it differs)."""


@dataclass(frozen=True)
class Table:
    """Regenerate README's results table and the learning curves from bench/results/."""

    check: bool = False
    """Only compare README's table with the records; exit 1 when it is stale."""
    curves: bool = True
    """Also write the learning-curve PNGs to bench/figures/."""


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.records add|table [flags]``. Returns the exit status: 1 when ``table --check``
    finds README's table stale, or on an error (an unfinished run, a record that exists, README without the
    table's markers), else 0."""
    cmd = tyro.extras.subcommand_cli_from_dict(
        {"add": Add, "table": Table}, args=argv, prog="python -m experiments.records"
    )
    try:
        if isinstance(cmd, Add):
            print(add(cmd.run_dir, cmd.tag, cmd.note))
            return 0
        table = table_markdown()
        if cmd.check:
            if readme_table() != table:
                print("README's results table is stale: run `python -m experiments.records table`", file=sys.stderr)
                return 1
            return 0
        text = README.read_text()
        if BEGIN not in text:
            raise ValueError(f"{README} has no {BEGIN} ... {END} block")
        head, rest = text.split(BEGIN, 1)
        README.write_text(head + BEGIN + "\n" + table + "\n" + END + rest.split(END, 1)[1])
        if cmd.curves:
            for path in write_curves():
                print(path.relative_to(REPO_ROOT))
        return 0
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"python -m experiments.records: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
