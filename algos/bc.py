"""Behaviour cloning: regress the dataset's actions from its states (Pomerleau 1991; the D4RL
baseline "BC", Fu et al. 2020, Table 2). ARMOR's default reference policy, and a baseline in
its own right.

The policy is a TanhGaussianActor trained on the mean squared error of its deterministic action
tanh(mu(s)) to the dataset action (the BC term of TD3+BC, Fujimoto & Gu 2021, Eq. 3); its
log-std is unused. MSE rather than the tanh-Gaussian likelihood: dataset actions at +-1 make the
likelihood's atanh unbounded.

    python -m algos.bc --fast
    python -m algos.bc --dataset simloop/hopper/medium-v0
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from engine import data as datasets
from engine.behavior import save_policy
from engine.buffer import Batch
from engine.cli import run_cli
from engine.evaluate import evaluate
from engine.logger import RunLogger, default_run_dir
from engine.nets import TanhGaussianActor
from engine.trainer import DEFAULT_DATASET


@dataclass(frozen=True)
class Config:
    """BC run configuration (every field is a CLI flag)."""

    dataset: str = DEFAULT_DATASET
    """Minari dataset id (simloop ids are generated locally when missing)."""
    seed: int = 0
    """Seed of the network, minibatches and evaluation."""
    device: str = "cpu"
    """torch device."""
    num_threads: int = 1
    """torch intra-op threads (small network: 1 is fastest on this CPU)."""
    num_updates: int = 100_000
    """Gradient steps."""
    batch_size: int = 256
    """Minibatch size."""
    lr: float = 1e-3
    """Adam learning rate."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden widths of the policy."""
    eval_episodes: int = 10
    """Episodes of the final evaluation."""
    log_interval: int = 1_000
    """Gradient steps between metric rows."""
    out: str | None = None
    """Run directory; default runs/bc/<dataset>/<time>/."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        bad = [
            f"{k}={getattr(self, k)!r}"
            for k in ("num_updates", "batch_size", "eval_episodes", "log_interval", "num_threads")
            if getattr(self, k) < 1
        ]
        if self.lr <= 0:
            bad.append(f"lr={self.lr!r}")
        if bad:
            raise ValueError(f"bad config value(s): {', '.join(bad)} (counts must be >= 1, lr > 0)")


def bc_loss(actor: TanhGaussianActor, batch: Batch) -> torch.Tensor:
    """``mean_i ||tanh(mu(s_i)) - a_i||^2`` over the batch (sum over action dims)."""
    mu, _ = actor.dist_params(batch.obs)
    return (torch.tanh(mu) - batch.act).pow(2).sum(-1).mean()


def fit_bc(
    data: Batch,
    num_updates: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden_dims: tuple[int, ...] = (256, 256),
    generator: torch.Generator | None = None,
    callback=None,
) -> TanhGaussianActor:
    """Train a BC actor on ``data`` (obs ``[N, D]``, act ``[N, A]``); ``callback(step, loss)`` after each step."""
    actor = TanhGaussianActor(data.obs.shape[-1], data.act.shape[-1], hidden_dims).to(data.obs.device)
    opt = torch.optim.Adam(actor.parameters(), lr=lr)
    for step in range(1, num_updates + 1):
        idx = torch.randint(len(data), (batch_size,), generator=generator, device=data.obs.device)
        loss = bc_loss(actor, data.index(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if callback is not None:
            callback(step, loss.detach())
    return actor.eval()


def train(cfg: Config, resume: str | None = None) -> dict:
    """Run BC; returns the summary (also ``<out>/summary.json``) and writes ``policy.pt``
    (``engine.behavior.load_policy`` reads it; ``algos.armor --reference`` takes it).

    Raises ValueError for an unknown dataset id, bad config values, or ``resume`` (BC runs take
    minutes and keep no checkpoints: rerun instead).
    """
    if resume is not None:
        raise ValueError("BC runs keep no checkpoints (they take minutes); rerun without --resume")
    torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = datasets.load(cfg.dataset, device=cfg.device)
    if data.env_name is None:
        raise ValueError(f"dataset {cfg.dataset!r} is not from a supported environment; cannot evaluate it")
    run_dir = Path(cfg.out) if cfg.out else default_run_dir("bc", cfg.dataset)
    logger = RunLogger(run_dir)
    logger.write_json("config.json", {"algo": "bc", "command": " ".join(sys.argv), **dataclasses.asdict(cfg)})
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    bar = tqdm(total=cfg.num_updates, desc="bc updates", unit="upd", disable=not cfg.progress)
    state = {"loss": 0.0, "actor": None}

    def on_step(step: int, loss: torch.Tensor) -> None:
        state["loss"] = state["loss"] + loss
        bar.update(1)
        if step % cfg.log_interval == 0:
            logger.log(step, {"train/bc_loss": state["loss"] / cfg.log_interval})
            state["loss"] = 0.0

    actor = fit_bc(data.as_batch(), cfg.num_updates, cfg.batch_size, cfg.lr, cfg.hidden_dims, gen, on_step)
    bar.close()
    final = evaluate(
        lambda o: actor.act(o, deterministic=True), data.env_name, cfg.eval_episodes, seed=cfg.seed + 10_000
    )
    logger.log(cfg.num_updates, final.metrics())
    save_policy(actor, run_dir / "policy.pt", data.env_name, dataset=cfg.dataset, algo="bc")
    summary = {
        "algo": "bc",
        "dataset": cfg.dataset,
        "env": data.env_name,
        "seed": cfg.seed,
        "normalized_score": final.normalized_score,
        "normalized_score_std": final.normalized_score_std,
        "return_mean": final.return_mean,
        "return_std": final.return_std,
        "eval_episodes": cfg.eval_episodes,
        "behavior_normalized_score": data.behavior_normalized_score,
        "num_updates": cfg.num_updates,
        "wall_s": time.perf_counter() - t0,
        "run_dir": str(run_dir),
    }
    logger.write_json("summary.json", summary)
    logger.close()
    return summary


PRESETS: dict[str, Config] = {key: Config(dataset=key) for key in datasets.DATASETS}
PRESETS["fast"] = replace(Config(), num_updates=5_000, eval_episodes=5)
"""``--fast``: 5,000 updates on the default dataset."""


def main(argv: list[str] | None = None) -> dict:
    return run_cli(train, PRESETS, "python -m algos.bc", __doc__, argv)


if __name__ == "__main__":
    # Run the imported module, not __main__, so that checkpoints pickle algos.bc.Config and load
    # from any entry point (a resume, a sweep worker, a notebook).
    from algos.bc import main as _main

    _main()
