"""Command line for the datasets::

    python -m engine.data list                               # every id: present?, size, return, score
    python -m engine.data list --markdown                    # the same as a GitHub Markdown table (docs/datasets.md)
    python -m engine.data make simloop/halfcheetah/medium-v0 # generate one (progress bar, seeded)

Any other Minari id present locally is listed too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from engine import policy_io
from engine.data import generate
from engine.data.generate import make_dataset
from engine.data.loader import load
from engine.data.minari_io import _datasets_root, local_dataset_ids
from engine.data.registry import D4RL_DATASETS, D4RL_SOURCES, DATASETS
from engine.data.score import normalized_score


@dataclass(frozen=True)
class List:
    """Show every simloop dataset id and every local Minari dataset."""

    scores: bool = True
    """Read present datasets to report their episode returns and behaviour policy's normalised score
    (a few seconds each)."""
    markdown: bool = False
    """Print a GitHub Markdown table (id, transitions, episodes, return mean ± std, normalised score,
    D4RL's figure for the dataset of the same name) instead of the plain table."""


@dataclass(frozen=True)
class Make:
    """Generate a simloop dataset from its recipe."""

    dataset_id: tyro.conf.Positional[str]
    """A simloop id (``python -m engine.data list`` shows them)."""
    overwrite: bool = False
    """Replace an existing local copy (only once the new one is complete)."""
    seed: int | None = None
    """Seed instead of the recipe's."""


def _rel(path: Path) -> str:
    """``path`` relative to the repository root where it lies inside it."""
    try:
        return str(path.relative_to(generate.REPO_ROOT))
    except ValueError:
        return str(path)


def missing_inputs(dataset_id: str, root: Path | None = None) -> list[str]:
    """Files that generating a simloop dataset needs and that are not on disk (empty for other ids).

    random: none; medium/expert: the behaviour checkpoint ``engine/policies/<recipe.policy>``;
    medium-replay: that checkpoint and the training run's ``artifacts/behavior/<env>/checkpoint.pt``;
    medium-expert: what its components need, for those not generated yet.
    """
    recipe = DATASETS.get(dataset_id)
    if recipe is None:
        return []
    root = _datasets_root() if root is None else root
    if recipe.level == "medium-expert":
        out = []
        for cid in recipe.components:
            if not (root / cid / "data").exists():
                out += [p for p in missing_inputs(cid, root) if p not in out]
        return out
    needed = []
    if recipe.policy is not None:
        needed.append(policy_io.POLICY_DIR / recipe.policy)
    if recipe.level == "medium-replay":
        needed.append(generate.BEHAVIOR_RUN_DIR / recipe.env / "checkpoint.pt")
    return [_rel(p) for p in needed if not p.is_file()]


def rows(scores: bool = True) -> list[dict]:
    """One dict per dataset id: ``id``, ``present``, ``transitions``, ``episodes``, ``return_mean``,
    ``return_std`` (over episodes, population std), ``behavior_score`` (D4RL-normalised mean return;
    None without reference scores) and ``missing`` (inputs generation needs that are absent, for
    simloop ids not present). Returns and score are read only with ``scores``."""
    import minari

    root = _datasets_root()
    ids = list(DATASETS) + [i for i in local_dataset_ids(root) if i not in DATASETS]
    out = []
    for dataset_id in ids:
        row = {
            "id": dataset_id,
            "present": (root / dataset_id / "data").exists(),
            "transitions": None,
            "episodes": None,
            "return_mean": None,
            "return_std": None,
            "behavior_score": None,
            "missing": [],
        }
        if not row["present"]:
            row["missing"] = missing_inputs(dataset_id, root)
        else:
            try:
                ds = minari.load_dataset(dataset_id)
                row["transitions"], row["episodes"] = ds.total_steps, ds.total_episodes
                if scores:
                    td = load(dataset_id, generate_missing=False)
                    row["return_mean"] = float(np.mean(td.episode_returns))
                    row["return_std"] = float(np.std(td.episode_returns))
                    if td.ref_min_score is not None and td.ref_max_score is not None:
                        row["behavior_score"] = td.behavior_normalized_score
            except Exception as e:  # noqa: BLE001 - a broken dataset is listed with its error, not fatal
                row["error"] = str(e).splitlines()[0]
        out.append(row)
    return out


def d4rl_figure(dataset_id: str) -> str:
    """The D4RL dataset of the same name as a simloop id (``D4RL_DATASETS``), as
    ``"40.7 (4770.3 ± 355.8) [label]"``: its mean return's normalised score, then mean ± std return;
    "-" for ids that are not simloop recipes or have no figure."""
    recipe = DATASETS.get(dataset_id)
    entry = D4RL_DATASETS.get((recipe.env, recipe.level)) if recipe is not None else None
    if entry is None:
        return "-"
    mean, std, label = entry
    score = normalized_score(dataset_id, mean)
    return f"{score:.1f} ({mean:.1f} ± {std:.1f}) [{label}]"


def _fmt(x: float | int | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def markdown_table(table: list[dict]) -> str:
    """``rows()`` as a GitHub Markdown table, followed by the D4RL figures' sources (if any)."""
    lines = [
        "| dataset id | transitions | episodes | return (mean ± std) | normalised score | "
        "D4RL -v2 dataset of the same name: score (return) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        if not r["present"]:
            note = "not generated"
            if r["missing"]:
                note += " (missing " + ", ".join(f"`{p}`" for p in r["missing"]) + ")"
            size, eps, ret = note, "-", "-"
        else:
            size, eps = _fmt(r["transitions"], ","), _fmt(r["episodes"], ",")
            ret = "-" if r["return_mean"] is None else f"{r['return_mean']:.1f} ± {r['return_std']:.1f}"
            if "error" in r:
                ret = f"error: {r['error']}".replace("|", "\\|")
        score = _fmt(r["behavior_score"], ".1f")
        lines.append(f"| `{r['id']}` | {size} | {eps} | {ret} | {score} | {d4rl_figure(r['id'])} |")
    used = sorted({entry[-1] for entry in D4RL_DATASETS.values()})
    if used:
        lines += ["", "D4RL figures' sources:", ""]
        lines += [f"- [{label}] {D4RL_SOURCES[label]}" for label in used]
    return "\n".join(lines)


def main() -> None:
    cmd = tyro.extras.subcommand_cli_from_dict({"list": List, "make": Make}, prog="python -m engine.data")
    if isinstance(cmd, Make):
        try:
            make_dataset(cmd.dataset_id, seed=cmd.seed, overwrite=cmd.overwrite, progress=True)
        except (ValueError, FileNotFoundError) as e:  # bad id, already present, missing policy: one clear line
            sys.exit(f"python -m engine.data make: error: {e}")
        return
    table = rows(cmd.scores)
    if cmd.markdown:
        print(markdown_table(table))
        return
    print(
        f"{'dataset id':<42} {'local':<6} {'transitions':>12} {'episodes':>9} "
        f"{'return mean ± std':>21} {'behaviour score':>16}"
    )
    for r in table:
        ret = "-" if r["return_mean"] is None else f"{r['return_mean']:.1f} ± {r['return_std']:.1f}"
        note = f"  ({r['error']})" if "error" in r else ""
        if r["missing"]:
            note += f"  (missing {', '.join(r['missing'])})"
        print(
            f"{r['id']:<42} {'yes' if r['present'] else 'no':<6} {_fmt(r['transitions'], ','):>12} "
            f"{_fmt(r['episodes'], ','):>9} {ret:>21} {_fmt(r['behavior_score'], '.1f'):>16}{note}"
        )


if __name__ == "__main__":
    main()
