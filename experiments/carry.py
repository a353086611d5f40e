"""Carry an unfinished long run to another machine through the repository.

A run longer than a machine is kept (a working session here: 3 hours, and ``runs/`` may be gone after it) is
packed into ``checkpoints/<run name>/`` and committed; on the next machine it is unpacked into ``runs/`` and
continued with ``--resume``. What is packed:

- ``checkpoint.pt``: the run's checkpoint without its model buffer (``engine.checkpoint.slim``; ~2-10 MB);
  the resumed run refills the buffer with one fresh rollout phase, everything else continues exactly;
- ``config.json``, ``metrics.csv``, ``episodes.csv`` and ``tb/``: the run's records so far;
- the fitted ensemble the run started from (its ``runs/dynamics`` cache entry), unless the package ships it
  (``engine.dynamics.shipped_ensemble``): without it a resumed run would fit it again first;
- ``carry.json``: algo, step, budget, when and where it was packed, the content hash of the data it trains on,
  and the command that continues it. It continues only where the local dataset has that hash (the same CPU kind:
  datasets are generated on each machine); ``unpack`` refuses it elsewhere.

::

    python -m experiments.carry pack runs/combo-halfcheetah-medium-seed0       # -> checkpoints/combo-halfcheetah-...
    git add checkpoints/combo-halfcheetah-medium-seed0 && git commit ...
    # on the next machine (the resumed run generates a missing simloop dataset first):
    python -m experiments.carry unpack checkpoints/combo-halfcheetah-medium-seed0   # prints the resume command
    python -m algos.combo --resume runs/combo-halfcheetah-medium-seed0

Packing again overwrites the carried copy (a later step of the same run). Once the run is finished and its
record added (``python -m experiments.records add``), delete ``checkpoints/<run name>/`` from the tree.
Peers' runs (``peers/``) carry their own way (``peers/README.md``).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from engine import checkpoint
from engine.config import from_dict
from engine.dynamics import DynamicsConfig, config_hash, shipped_ensemble
from engine.logger import machine_info

RECORD_FILES = ("config.json", "metrics.csv", "episodes.csv")
"""The run's records copied along with its checkpoint (``tb/`` too, when present)."""


def _dynamics_entries(config: dict, cache_dir: Path, digest: str | None = None) -> list[Path]:
    """The ``cache_dir`` entries of the ensemble a run with ``config`` uses (its dataset and dynamics config, and
    its data hash ``digest``, any when None); none when the run names its own ``dynamics_path``, has no ensemble
    (BC) or the package ships it."""
    if "dynamics" not in config or config.get("dynamics_path"):
        return []
    cfg = from_dict(DynamicsConfig, config["dynamics"], "config.dynamics").seeded(config.get("seed", 0))
    if shipped_ensemble(config["dataset"], cfg) is not None:
        return []
    pattern = f"{config['dataset'].replace('/', '_')}-{digest or '*'}-{config_hash(cfg)}.pt"
    entries = sorted(cache_dir.glob(pattern))
    if not entries:
        raise FileNotFoundError(
            f"the run's fitted ensemble ({pattern}) is not in {cache_dir}: pack from the directory whose "
            "runs/dynamics holds it (the one the run was started from), or pass its cache folder"
        )
    return entries


def pack(run_dir: str | Path, dest: str | Path = "checkpoints", cache_dir: str | Path = "runs/dynamics") -> Path:
    """Pack the run in ``run_dir`` into ``dest/<run name>/`` (replacing an earlier packing of it). Returns that
    folder.

    Raises:
        FileNotFoundError: no ``checkpoint.pt`` or ``config.json`` in ``run_dir``.
        ValueError: ``run_dir`` holds a finished run (``summary.json``): record it with ``experiments.records
            add`` instead; or its ``checkpoint.pt`` is not a training checkpoint.
        FileNotFoundError: also when the run's fitted ensemble is not in ``cache_dir``; an earlier packing is kept.
    """
    run_dir = Path(run_dir)
    for name in ("checkpoint.pt", "config.json"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} holds no {name}: not a run directory of simloop's (algos.*)")
    if (run_dir / "summary.json").is_file():
        raise ValueError(
            f"{run_dir} is finished (summary.json): record it with `python -m experiments.records add {run_dir}`"
        )
    ckpt = checkpoint.load(run_dir / "checkpoint.pt")
    config = json.loads((run_dir / "config.json").read_text())
    entries = _dynamics_entries(config, Path(cache_dir), ckpt.get("data_hash"))  # before anything is written
    out = Path(dest) / run_dir.name
    tmp = out.with_name(out.name + ".packing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    checkpoint.slim(run_dir / "checkpoint.pt", tmp / "checkpoint.pt")
    for name in RECORD_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, tmp / name)
    if (run_dir / "tb").is_dir():
        shutil.copytree(run_dir / "tb", tmp / "tb")
    if entries:
        (tmp / "dynamics").mkdir()
        for path in entries:
            shutil.copy2(path, tmp / "dynamics" / path.name)
    step, budget = int(ckpt["step"]), ckpt["config"].get("num_updates")
    info = {
        "algo": ckpt["algo"],
        "dataset": config.get("dataset"),
        "seed": config.get("seed"),
        "run": run_dir.name,
        "step": step,
        "num_updates": budget,
        "wall_s": round(float(ckpt.get("wall_s", 0.0))),
        "num_threads": config.get("num_threads"),
        "packed": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(config.get("num_threads"))["cpu"],
        "data_hash": ckpt.get("data_hash"),
        "dynamics": [p.name for p in entries],
        "resume": f"python -m algos.{ckpt['algo']} --resume runs/{run_dir.name}",
    }
    (tmp / "carry.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def _check_local_data(info: dict) -> None:
    """Refuse (ValueError, naming both hashes) a carried run whose data hash differs from the local dataset's: its
    ``--resume`` would refuse it too (``engine.harness.RunHarness.bind_data``), after the unpacking. Nothing is
    checked when ``carry.json`` names no hash (packed before checkpoints named their data) or the dataset is not
    here yet (the resumed run generates it, then checks)."""
    from engine import data
    from engine.dynamics import data_hash

    digest, dataset = info.get("data_hash"), info.get("dataset")
    if digest is None or dataset is None or not (data._datasets_root() / dataset / "data").exists():
        return
    local = data_hash(data.load(dataset, generate_missing=False).as_batch())
    if local != digest:
        raise ValueError(
            f"{info['run']} trained on {dataset} with content hash {digest} (packed on {info.get('machine')}); "
            f"here that dataset has hash {local} (another CPU kind generates other bytes): it continues only on a "
            "machine whose data has its hash. Nothing was unpacked"
        )


def unpack(carried: str | Path, runs: str | Path = "runs", cache_dir: str | Path = "runs/dynamics") -> str:
    """Put the carried run in ``carried`` (a ``pack`` folder) back as ``runs/<run name>/`` and its ensemble in the
    dynamics cache. Returns the command that continues it.

    Raises:
        FileNotFoundError: ``carried`` holds no ``carry.json`` or ``checkpoint.pt``.
        ValueError: the run trained on data with another content hash than the local dataset of its id
            (``_check_local_data``); nothing is unpacked.
        FileExistsError: ``runs/<run name>`` already holds a run (its checkpoint or metrics): nothing there is
            overwritten; continue that one, or move it away first.
    """
    carried = Path(carried)
    for name in ("carry.json", "checkpoint.pt"):
        if not (carried / name).is_file():
            raise FileNotFoundError(f"{carried} holds no {name}: not a folder written by `experiments.carry pack`")
    info = json.loads((carried / "carry.json").read_text())
    _check_local_data(info)
    target = Path(runs) / info["run"]
    held = [n for n in ("checkpoint.pt", "metrics.csv") if (target / n).exists()]
    if held:
        raise FileExistsError(
            f"{target} already holds a run ({', '.join(held)}); continue it with `{info['resume']}`, or move it "
            f"away to unpack the carried step {info['step']}"
        )
    target.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", *RECORD_FILES):
        if (carried / name).is_file():
            shutil.copy2(carried / name, target / name)
    if (carried / "tb").is_dir():
        shutil.copytree(carried / "tb", target / "tb", dirs_exist_ok=True)
    if (carried / "dynamics").is_dir():
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for path in (carried / "dynamics").iterdir():
            if not (Path(cache_dir) / path.name).exists():
                shutil.copy2(path, Path(cache_dir) / path.name)
    return info["resume"]


@dataclass(frozen=True)
class Pack:
    """Pack an unfinished run into checkpoints/<run name>/ to commit it."""

    run_dir: tyro.conf.Positional[str]
    """The run directory (``--out`` of the run)."""
    dest: str = "checkpoints"
    """Where the carried runs are kept in the repository."""


@dataclass(frozen=True)
class Unpack:
    """Put a carried run back under runs/ and print the command that continues it."""

    carried: tyro.conf.Positional[str]
    """A folder written by ``pack`` (``checkpoints/<run name>``)."""
    runs: str = "runs"
    """Where run directories live."""


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.carry pack|unpack``. Returns the exit status: 1 on an error, else 0."""
    cmd = tyro.extras.subcommand_cli_from_dict(
        {"pack": Pack, "unpack": Unpack}, args=argv, prog="python -m experiments.carry"
    )
    try:
        if isinstance(cmd, Pack):
            out = pack(cmd.run_dir, cmd.dest)
            info = json.loads((out / "carry.json").read_text())
            print(f"{out}: step {info['step']} of {info['num_updates']}; commit it, then on the next machine:")
            print(f"  python -m experiments.carry unpack {out} && {info['resume']}")
        else:
            print(unpack(cmd.carried, cmd.runs))
        return 0
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"python -m experiments.carry: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
