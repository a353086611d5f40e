"""Behaviour cloning: regress the dataset's actions from its states (Pomerleau 1991; the D4RL
baseline "BC", Fu et al. 2020, Table 2). ARMOR's default reference policy and the warm start of
its actor, and a baseline in its own right.

The policy is a TanhGaussianActor. Two objectives (``--objective``):

- ``likelihood`` (default): maximum likelihood of the dataset actions with an entropy floor, as
  ATAC's behaviour pretraining trains the policy ARMOR and ATAC start from (Cheng et al. 2022,
  lightATAC ``BehaviorPretraining``): minimise ``-E_D[log pi(a|s)] - alpha H(pi(.|s))`` with the
  temperature alpha tuned, as in SAC (Haarnoja et al. 2018, Eq. 18), so that the entropy stays at
  least ``-|A|``. Dataset actions are clipped to ``+-(1 - 1e-6)`` before ``atanh``. This fits the
  log-std as well as the mean, so a policy warm-started from it starts with its entropy near
  the target of the entropy-regularised learner that takes it over.
- ``mse``: the mean squared error of the deterministic action ``tanh(mu(s))`` (the BC term of
  TD3+BC, Fujimoto & Gu 2021, Eq. 3). The log-std is left untrained: fine for a deterministic
  baseline, wrong for a warm start (ARMOR's temperature then climbs; see algos/armor.py).

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
from engine.sac import temperature_loss

ALGO = "bc"


@dataclass(frozen=True)
class Config:
    """BC run configuration (every field is a CLI flag)."""

    dataset: str = datasets.DEFAULT_DATASET
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
    objective: str = "likelihood"
    """``likelihood`` (log-likelihood with an entropy floor; fits the std too) or ``mse`` (mean action only)."""
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
        if self.objective not in OBJECTIVES:
            bad.append(f"objective={self.objective!r}")
        if bad:
            raise ValueError(
                f"bad config value(s): {', '.join(bad)} (counts must be >= 1, lr > 0, objective one of {OBJECTIVES})"
            )


OBJECTIVES = ("likelihood", "mse")


def bc_loss(actor: TanhGaussianActor, batch: Batch) -> torch.Tensor:
    """The ``mse`` objective: ``mean_i ||tanh(mu(s_i)) - a_i||^2`` over the batch (sum over action dims)."""
    mu, _ = actor.dist_params(batch.obs)
    return (torch.tanh(mu) - batch.act).pow(2).sum(-1).mean()


def bc_likelihood_loss(
    actor: TanhGaussianActor, batch: Batch, alpha: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``likelihood`` objective: ``(loss, log_pi_sample)`` with
    ``loss = -mean_i log pi(a_i|s_i) + alpha * mean_i log pi(a~_i|s_i)``, ``a~_i ~ pi(.|s_i)``
    reparameterised (the second term is ``-alpha`` times a one-sample entropy estimate).
    ``log_pi_sample: [B]`` (for the temperature's loss); ``alpha``: 0-d, treated as a constant."""
    nll = -actor.log_prob(batch.obs, batch.act).mean()
    _, log_pi = actor(batch.obs, generator)
    return nll + alpha.detach() * log_pi.mean(), log_pi


def fit_bc(
    data: Batch,
    num_updates: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden_dims: tuple[int, ...] = (256, 256),
    generator: torch.Generator | None = None,
    callback=None,
    objective: str = "likelihood",
) -> TanhGaussianActor:
    """Train a BC actor on ``data`` (obs ``[N, D]``, act ``[N, A]`` in [-1, 1]) with ``objective``
    (module docstring); ``callback(step, loss)`` after each step. The likelihood objective's
    temperature starts at 1 and is tuned with Adam at ``lr`` towards the entropy target ``-A``.

    Raises ValueError for an unknown objective.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown BC objective {objective!r}; valid: {OBJECTIVES}")
    dev = data.obs.device
    actor = TanhGaussianActor(data.obs.shape[-1], data.act.shape[-1], hidden_dims).to(dev)
    opt = torch.optim.Adam(actor.parameters(), lr=lr)
    if objective == "likelihood":  # the temperature of the entropy floor
        log_alpha = torch.zeros((), device=dev, requires_grad=True)
        alpha_opt = torch.optim.Adam([log_alpha], lr=lr)
        target_entropy = -float(data.act.shape[-1])
    for step in range(1, num_updates + 1):
        idx = torch.randint(len(data), (batch_size,), generator=generator, device=dev)
        batch = data.index(idx)
        if objective == "mse":
            loss = bc_loss(actor, batch)
        else:
            loss, log_pi = bc_likelihood_loss(actor, batch, log_alpha.exp(), generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if objective == "likelihood":
            alpha_loss = temperature_loss(log_alpha, log_pi, target_entropy)
            alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            alpha_opt.step()
        if callback is not None:
            callback(step, loss.detach())
    return actor.eval()


def train(cfg: Config, resume: str | None = None) -> dict:
    """Run BC; returns the summary (also ``<out>/summary.json``) and writes ``policy.pt``
    (``engine.behavior.load_policy`` reads it; ``algos.armor --reference`` takes it).

    Raises ValueError for an unknown dataset id, bad config values, or ``resume`` (BC runs take
    minutes and keep no checkpoints: rerun instead), FileExistsError when ``cfg.out`` already holds a
    run's ``metrics.csv``.
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
    logger.write_json("config.json", {"algo": ALGO, "command": " ".join(sys.argv), **dataclasses.asdict(cfg)})
    gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
    bar = tqdm(total=cfg.num_updates, desc="bc updates", unit="upd", disable=not cfg.progress)
    state = {"loss": 0.0, "actor": None}

    def on_step(step: int, loss: torch.Tensor) -> None:
        state["loss"] = state["loss"] + loss
        bar.update(1)
        if step % cfg.log_interval == 0:
            logger.log(step, {"train/bc_loss": state["loss"] / cfg.log_interval})
            state["loss"] = 0.0

    actor = fit_bc(
        data.as_batch(), cfg.num_updates, cfg.batch_size, cfg.lr, cfg.hidden_dims, gen, on_step, cfg.objective
    )
    bar.close()
    with torch.no_grad():  # one-sample entropy estimate on (up to) 10,000 dataset states
        states = data.as_batch().obs[:10_000]
        entropy = float(-actor(states, gen)[1].mean())
    final = evaluate(
        lambda o: actor.act(o, deterministic=True), data.env_name, cfg.eval_episodes, seed=cfg.seed + 10_000
    )
    logger.log(cfg.num_updates, final.metrics())
    save_policy(actor, run_dir / "policy.pt", data.env_name, dataset=cfg.dataset, algo="bc", objective=cfg.objective)
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
        "objective": cfg.objective,
        "policy_entropy": entropy,
        "num_updates": cfg.num_updates,
        "wall_s": time.perf_counter() - t0,
        "run_dir": str(run_dir),
    }
    logger.write_json("summary.json", summary)
    logger.close()
    return summary


PRESETS: dict[str, Config] = {key: Config(dataset=key) for key in datasets.DATASETS}
"""Per-dataset configs (``--dataset ID``); BC's hyperparameters are the same on every dataset."""
BUDGETS = {"fast": lambda cfg: replace(cfg, num_updates=5_000, eval_episodes=5)}
"""``--fast``: 5,000 updates."""


def main(argv: list[str] | None = None) -> dict:
    return run_cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
