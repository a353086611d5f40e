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
    """

    def __init__(self, run_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "metrics.csv"
        self.rows: list[dict] = []
        if self.csv_path.exists():
            with open(self.csv_path) as f:
                self.rows = list(csv.DictReader(f))
        self.tb = SummaryWriter(str(self.dir / "tb"))

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
