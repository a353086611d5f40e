"""Command line for the embedded datasets::

    python -m engine.datasets list                               # every id: present?, size, behaviour score
    python -m engine.datasets make simloop/halfcheetah/medium-v0 # generate one (progress bar, seeded)

Any other Minari id present locally is listed too. Generation and loading live in ``engine.data``.
"""

from __future__ import annotations

from dataclasses import dataclass

import tyro

from engine import data


@dataclass(frozen=True)
class List:
    """Show every simloop dataset id and every local Minari dataset."""

    scores: bool = True
    """Read present datasets to report their behaviour policy's normalised score (a few seconds each)."""


@dataclass(frozen=True)
class Make:
    """Generate a simloop dataset from its recipe."""

    dataset_id: tyro.conf.Positional[str]
    """A simloop id (``python -m engine.datasets list`` shows them)."""
    overwrite: bool = False
    """Replace an existing local copy (only once the new one is complete)."""
    seed: int | None = None
    """Seed instead of the recipe's."""


def rows(scores: bool = True) -> list[dict]:
    """One dict per dataset id: ``id``, ``present``, ``transitions``, ``episodes``, ``behavior_score``."""
    import minari

    root = data._datasets_root()
    ids = list(data.DATASETS) + [i for i in data._local_dataset_ids(root) if i not in data.DATASETS]
    out = []
    for dataset_id in ids:
        row = {
            "id": dataset_id,
            "present": (root / dataset_id / "data").exists(),
            "transitions": None,
            "episodes": None,
            "behavior_score": None,
        }
        if row["present"]:
            try:
                ds = minari.load_dataset(dataset_id)
                row["transitions"], row["episodes"] = ds.total_steps, ds.total_episodes
                if scores:
                    row["behavior_score"] = data.load(dataset_id, generate_missing=False).behavior_normalized_score
            except Exception as e:  # noqa: BLE001 - a broken dataset is listed with its error, not fatal
                row["error"] = str(e).splitlines()[0]
        out.append(row)
    return out


def main() -> None:
    cmd = tyro.extras.subcommand_cli_from_dict({"list": List, "make": Make}, prog="python -m engine.datasets")
    if isinstance(cmd, Make):
        data.make_dataset(cmd.dataset_id, seed=cmd.seed, overwrite=cmd.overwrite, progress=True)
        return
    table = rows(cmd.scores)
    print(f"{'dataset id':<42} {'local':<6} {'transitions':>12} {'episodes':>9} {'behaviour score':>16}")
    for r in table:
        size = f"{r['transitions']:,}" if r["transitions"] is not None else "-"
        eps = f"{r['episodes']:,}" if r["episodes"] is not None else "-"
        score = f"{r['behavior_score']:.1f}" if r["behavior_score"] is not None else "-"
        note = f"  ({r['error']})" if "error" in r else ""
        print(f"{r['id']:<42} {'yes' if r['present'] else 'no':<6} {size:>12} {eps:>9} {score:>16}{note}")


if __name__ == "__main__":
    main()
