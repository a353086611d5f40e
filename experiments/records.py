"""Run records, and the results table, records page and figures generated from them.

A finished run's record is kept in the repository, under ``bench/results/<algo>/<dataset>/seed<k>[-<tag>]/``
(the dataset id with ``/`` as ``_``): its ``config.json``, ``metrics.csv``, ``summary.json``, ``episodes.csv``
(every evaluation, episode by episode) and ``record.json`` (tag, note, when it was added); no weights. These files
alone generate README's results block (the headline per algorithm and dataset, ``experiments.scores``), the
records page ``bench/results/README.md`` (every run), the learning curves ``bench/figures/results_*.png`` and the
aggregate figure ``bench/figures/profile_improvement.png``::

    python -m experiments.records add runs/mopo/hopper-medium --note "..."   # copy a finished run's record
    python -m experiments.records table            # regenerate README's block, the records page and the figures
    python -m experiments.records table --check    # exit 1 if README's block or the records page is stale

A headline seed is a record in a plain ``seed<k>`` directory (no tag); ``experiments.scores`` says why and how its
figures are computed. Runs recorded before records were kept, whose run directories are gone, are listed in
``bench/results/unrecorded.json``; they stay out of every table and appear on the records page as an unverifiable
history. CI runs the ``--check`` comparison through the test suite (``tests/test_experiments_records.py``); it
compares text only, never the PNGs' bytes, which depend on matplotlib's and FreeType's versions.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from experiments import scores, tables
from experiments.curves import eval_curve, plot_curves, plot_profiles

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
FIGURES_DIR = REPO_ROOT / "bench" / "figures"
PROFILE_FIGURE = FIGURES_DIR / "profile_improvement.png"
"""The aggregate figure across datasets (``write_profile``)."""
README = REPO_ROOT / "README.md"
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"
RECORD_FILES = ("config.json", "metrics.csv", "summary.json", "episodes.csv")
"""The files of a run directory that make its record."""
OPTIONAL_FILES = ("peer_run.json", "diagnosis_step*.json")
"""Copied too where present: a peer run's settings and timings (``peers/``), ``experiments.diagnose`` output."""


def record_dir(summary: dict, tag: str | None = None, root: Path = RESULTS_DIR) -> Path:
    """``root/<algo>/<dataset with / as _>/seed<k>[-<tag>]`` for a run's summary."""
    name = f"seed{summary['seed']}" + (f"-{tag}" if tag else "")
    return root / summary["algo"] / summary["dataset"].replace("/", "_") / name


def add(run_dir: str | Path, tag: str | None = None, note: str = "", root: Path = RESULTS_DIR) -> Path:
    """Copy a finished run's record into ``root`` and return where it went.

    Raises:
        FileNotFoundError: ``run_dir`` lacks one of ``RECORD_FILES`` (an unfinished run has no summary.json).
        FileExistsError: a record of the same algo, dataset, seed and tag exists (give another ``tag``).
        ValueError: a ``tag`` that starts with ``seed<k>-`` (the directory's name already does: ``seed0-seed0-x``).
    """
    run_dir = Path(run_dir)
    if tag and re.match(r"seed\d+-", tag):
        bare = tag.split("-", 1)[1]
        raise ValueError(f"tag {tag!r} starts with seed<k>-, which the record's name already does; give {bare!r}")
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
    """Every record under ``root``: its summary, with ``record`` (record.json) and ``dir`` filled in."""
    out = []
    for summary_path in sorted(root.glob("*/*/*/summary.json")):
        d = summary_path.parent
        rec = json.loads(summary_path.read_text())
        rec["record"] = json.loads((d / "record.json").read_text()) if (d / "record.json").is_file() else {}
        rec["dir"] = d
        out.append(rec)
    return out


def load_unrecorded(root: Path = RESULTS_DIR) -> list[dict]:
    """The runs of ``root/unrecorded.json`` (directories lost before records were kept); empty without the file."""
    path = root / "unrecorded.json"
    return [{**r, "record": {}} for r in json.loads(path.read_text())] if path.is_file() else []


def readme_block(root: Path = RESULTS_DIR) -> str:
    """README's results block (caption, headline table, per-dataset summary) from the records under ``root``;
    ``unrecorded.json``'s runs are not in it."""
    return tables.readme_block(scores.headline_cells(load_records(root)))


def records_readme(root: Path = RESULTS_DIR) -> str:
    """``root/README.md``: every record run by run, and ``unrecorded.json``'s runs as an unverifiable history."""
    return tables.results_readme(load_records(root), load_unrecorded(root), root)


def write_curves(root: Path = RESULTS_DIR, out_dir: Path = FIGURES_DIR) -> list[Path]:
    """One PNG of learning curves per dataset, ``out_dir/results_<dataset>.png`` (every record's evaluations, one
    line each; the behaviour policy dashed). Returns the files written."""
    records = sorted(load_records(root), key=scores.sort_key)
    written = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        group = [r for r in records if r["dataset"] == dataset]
        lines = []
        for rec in group:
            tag = rec["record"].get("tag")
            label = f"{scores.algo_label(rec)} seed {rec['seed']}" + (f" ({tag})" if tag else "")
            lines.append((label, [eval_curve(rec["dir"] / "metrics.csv")]))
        path = out_dir / f"results_{dataset.replace('/', '_')}.png"
        written.append(plot_curves(path, dataset, lines, group[0]["behavior_normalized_score"]))
    return written


def write_profile(root: Path = RESULTS_DIR, path: Path = PROFILE_FIGURE, reps: int = scores.PROFILE_REPS) -> Path:
    """The aggregate figure across datasets: each algorithm's performance profile of its improvement over the
    behaviour policy (``scores.improvement_profiles``, over the headline seeds), written to ``path``.

    Raises:
        ValueError: no record under ``root`` is a headline seed with evaluations.
    """
    cells = scores.headline_cells(load_records(root))
    taus, profiles, bands, counts = scores.improvement_profiles(cells, reps=reps)
    labels = {
        k: f"{k}: {n} run{'s' if n > 1 else ''}, {d} dataset{'s' if d > 1 else ''}" for k, (n, d) in counts.items()
    }
    return plot_profiles(
        path,
        "Runs above the behaviour policy by more than tau (headline seeds, datasets pooled)",
        taus,
        {labels[k]: v for k, v in profiles.items()},
        {labels[k]: v for k, v in bands.items()},
        xlabel=f"tau: last-{scores.LAST_EVALS} mean minus the behaviour policy's score (normalised points)",
        ylabel="fraction of runs above tau",
        marker=(0.0, "the behaviour policy"),
    )


def readme_table(readme: Path = README) -> str:
    """The block currently between the results markers in README.

    Raises:
        ValueError: the markers are missing.
    """
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def stale(root: Path = RESULTS_DIR, readme: Path = README, figure: Path = PROFILE_FIGURE) -> list[str]:
    """What ``table`` would change, compared as text: README's block, the records page, a missing profile figure
    (its bytes are not compared). Empty when everything is current.

    Raises:
        ValueError: README has no results markers.
    """
    out = []
    if readme_table(readme) != readme_block(root):
        out.append(f"{readme.name}'s results block")
    page = root / "README.md"
    if not page.is_file() or page.read_text() != records_readme(root):
        out.append(str(page.relative_to(REPO_ROOT) if page.is_relative_to(REPO_ROOT) else page))
    if not figure.is_file():
        out.append(f"{figure.name} (missing)")
    return out


@dataclass(frozen=True)
class Add:
    """Copy a finished run's record (config, metrics, summary, episodes) into bench/results/."""

    run_dir: tyro.conf.Positional[str]
    """The run directory (``--out`` of the run)."""
    tag: str | None = None
    """Distinguishes a second record of the same algo, dataset and seed (``lambda1``, ``first-try``); a tagged
    record is not a seed of the headline."""
    note: str = ""
    """One line for the records page's note column (what the run showed, how it differs)."""


@dataclass(frozen=True)
class Table:
    """Regenerate README's results block, bench/results/README.md and the figures from bench/results/."""

    check: bool = False
    """Only compare README's block and the records page with the records (text only); exit 1 when stale."""
    figures: bool = True
    """Also write the learning curves and the performance profile to bench/figures/."""


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.records add|table [flags]``. Returns the exit status: 1 when ``table --check``
    finds README's block or the records page stale, or on an error (an unfinished run, a record that exists,
    README without the block's markers, a cell whose seeds ran different budgets), else 0."""
    cmd = tyro.extras.subcommand_cli_from_dict(
        {"add": Add, "table": Table}, args=argv, prog="python -m experiments.records"
    )
    try:
        if isinstance(cmd, Add):
            print(add(cmd.run_dir, cmd.tag, cmd.note))
            return 0
        if cmd.check:
            found = stale()
            if found:
                print(f"stale: {'; '.join(found)}: run `python -m experiments.records table`", file=sys.stderr)
                return 1
            return 0
        block = readme_block()
        text = README.read_text()
        if BEGIN not in text or END not in text:
            raise ValueError(f"{README} has no {BEGIN} ... {END} block")
        head, rest = text.split(BEGIN, 1)
        README.write_text(head + BEGIN + "\n" + block + "\n" + END + rest.split(END, 1)[1])
        (RESULTS_DIR / "README.md").write_text(records_readme())
        if cmd.figures:
            for path in [*write_curves(), write_profile()]:
                print(path.relative_to(REPO_ROOT))
        return 0
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"python -m experiments.records: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
