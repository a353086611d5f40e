"""Run directories and metric logging: ``metrics.csv`` (wide, one row per log step),
and TensorBoard events. Metrics are flat dicts with namespaced
keys (``train/critic_loss``, ``rollout/penalty_mean``, ``eval/normalized_score``)."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch


def default_run_dir(algo: str, dataset_id: str) -> Path:
    """``runs/<algo>/<dataset id with / as _>/<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / algo / dataset_id.replace("/", "_") / time.strftime("%Y%m%d-%H%M%S")


def to_jsonable(obj):
    """Dataclasses and tuples to plain JSON types."""
    if is_dataclass(obj):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


class RunLogger:
    """Writes metrics of one run to ``run_dir`` (metrics.csv and TensorBoard events).

    ``log(step, metrics)`` takes floats or 0-d tensors; tensors are read here, at log time, so
    the training loop itself never synchronises with the host.

    Args:
        run_dir: the run's directory (created if missing).
        resume_step: the step of the checkpoint a resumed run continues from. The rows of
            ``metrics.csv`` up to it are kept; later ones (logged by the interrupted run after its last
            checkpoint, and about to be logged again) are dropped, from the csv and from TensorBoard's
            view (``SummaryWriter(purge_step=...)``), so each step appears once. ``None``
            for a fresh run.
    Raises:
        FileExistsError: a fresh run (``resume_step=None``) in a directory that already holds a run
            (``metrics.csv`` or ``checkpoint.pt``): nothing saved there is overwritten.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir)
        self.csv_path = self.dir / "metrics.csv"
        if resume_step is None:
            held = [n for n in ("metrics.csv", "checkpoint.pt") if (self.dir / n).exists()]
            if held:
                raise FileExistsError(
                    f"{self.dir} already holds a run ({', '.join(held)}): continue it with --resume {self.dir}, "
                    f"or pass another --out"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        if resume_step is not None and self.csv_path.exists():
            with open(self.csv_path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        # purge_step: TensorBoard drops the interrupted run's events after the checkpoint, as the csv does
        self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, metrics: dict) -> dict[str, float]:
        values = {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        for k, v in values.items():
            self.tb.add_scalar(k, v, step)
        self.tb.flush()
        self.rows.append({"step": step, **values})
        keys = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        tmp = self.csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        tmp.replace(self.csv_path)
        return values

    def write_json(self, name: str, obj) -> None:
        tmp = self.dir / (name + ".tmp")
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2))
        tmp.replace(self.dir / name)

    def close(self) -> None:
        self.tb.close()
