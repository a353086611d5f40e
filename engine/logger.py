"""Run directories and metric logging: ``metrics.csv`` (wide, one row per log step),
and TensorBoard events. Metrics are flat dicts with namespaced
keys (``train/critic_loss``, ``rollout/penalty_mean``, ``eval/normalized_score``)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch

from engine.config import to_dict


def default_run_dir(algo: str, dataset_id: str) -> Path:
    """``runs/<algo>/<dataset id with / as _>/<YYYYmmdd-HHMMSS>``."""
    return Path("runs") / algo / dataset_id.replace("/", "_") / time.strftime("%Y%m%d-%H%M%S")


def machine_info(num_threads: int | None = None) -> dict:
    """What a recorded figure ran on: ``{"cpu": lscpu model name, "cores": os.cpu_count(), "torch_threads",
    "gpu": CUDA device name or None, "torch": version, "date": UTC ISO date}``."""
    import os
    import platform
    import subprocess

    cpu = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), cpu)
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads() if num_threads is None else num_threads,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }


def drop_rows_after(path: str | Path, step: int) -> None:
    """Rewrite the csv at ``path`` (a ``step`` column) without its rows past ``step``: what a run interrupted after
    its checkpoint at ``step`` wrote and is about to write again. No file: nothing to do."""
    path = Path(path)
    if not path.exists():
        return
    with open(path) as f:
        reader = csv.DictReader(f)
        kept, keys = [r for r in reader if int(float(r["step"])) <= step], reader.fieldnames
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(kept)
    tmp.replace(path)


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append ``rows`` (dicts with the same keys, in order) to the csv at ``path``, writing the header first when
    the file is new."""
    path = Path(path)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


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
                    f"{self.dir} already holds a run: continue it with --resume {self.dir}, or pass another --out "
                    f"(it holds {', '.join(held)})"
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.episodes_path = self.dir / "episodes.csv"
        if resume_step is not None:  # drop the interrupted run's later episodes
            drop_rows_after(self.episodes_path, resume_step)
        if resume_step is not None and self.csv_path.exists():
            with open(self.csv_path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        # purge_step: TensorBoard drops the interrupted run's events after the checkpoint, as the csv does
        self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=None if resume_step is None else resume_step + 1)

    def log(self, step: int, metrics: dict) -> dict[str, float]:
        """Record one row of metrics at ``step``.

        Args:
            step: the run's gradient step (the row's ``step`` column and TensorBoard's x-axis).
            metrics: flat ``{namespaced key: float or 0-d tensor}``; tensors are read here (``.item()``).
        Returns:
            the row as floats (NaN and inf kept as they are: the caller decides what a non-finite value means).

        Every value goes to TensorBoard (flushed). ``metrics.csv`` is then rewritten whole: header ``step`` and the
        sorted union of every key logged so far (a key that first appears later adds a column; rows without it
        leave the cell empty), one line per row. The rewrite goes to ``metrics.tmp`` and replaces ``metrics.csv``
        in one rename, so a run killed at any moment leaves a complete, readable file; it costs one pass over the
        rows so far per call (a row per ``log_interval`` steps).
        """
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

    def log_episodes(self, step: int, result) -> None:
        """Append one row per episode of an ``engine.eval_result.EvalResult`` to ``episodes.csv``: ``step, episode,
        seed, return, length, normalized_score`` (every evaluation of the run, episode by episode)."""
        append_rows(self.episodes_path, result.episode_rows(step))

    def write_json(self, name: str, obj) -> None:
        """Write ``obj`` (plain data or dataclasses, ``engine.config.to_dict``) as indented JSON to ``run_dir/name``,
        through a temporary file and one rename (never a half-written file)."""
        tmp = self.dir / (name + ".tmp")
        tmp.write_text(json.dumps(to_dict(obj), indent=2))
        tmp.replace(self.dir / name)

    def close(self) -> None:
        """Flush and close the TensorBoard writer (the csv files are complete after every call)."""
        self.tb.close()
