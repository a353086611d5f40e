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

import sys
from dataclasses import dataclass, replace

import torch

from engine.batch import Batch
from engine.cli import run_cli
from engine.data import DATASETS, DEFAULT_DATASET, check_id, load
from engine.dynamics import data_hash
from engine.evaluate import evaluate
from engine.harness import RunHarness
from engine.nets import TanhGaussianActor
from engine.policy_io import save_policy
from engine.sac import temperature_loss

ALGO = "bc"


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
    objective: str = "likelihood"
    """``likelihood`` (log-likelihood with an entropy floor; fits the std too) or ``mse`` (mean action only)."""
    eval_episodes: int = 10
    """Episodes of the final evaluation (intermediate ones use half, at least 1)."""
    eval_interval: int = 10_000
    """Gradient steps between evaluations on the true environment."""
    log_interval: int = 1_000
    """Gradient steps between metric rows."""
    checkpoint_interval: int = 10_000
    """Gradient steps between checkpoints (resumable with --resume; a larger --num-updates extends the run)."""
    out: str | None = None
    """Run directory; default runs/bc/<dataset>/<time>/."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        bad = [
            f"{k}={getattr(self, k)!r}"
            for k in (
                "num_updates",
                "batch_size",
                "eval_episodes",
                "eval_interval",
                "log_interval",
                "checkpoint_interval",
                "num_threads",
            )
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


class BCLearner:
    """The BC policy, its optimiser and (likelihood objective) its entropy temperature: ``step`` is one
    gradient step; ``state_dict`` / ``load_state_dict`` carry all of it (a resumable run).

    Args:
        obs_dim, act_dim: D and A.
        objective: ``"likelihood"`` or ``"mse"`` (module docstring).
    Raises:
        ValueError: an unknown objective.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_dims=(256, 256), lr: float = 1e-3, objective="likelihood", device="cpu"
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown BC objective {objective!r}; valid: {OBJECTIVES}")
        self.objective = objective
        self.actor = TanhGaussianActor(obs_dim, act_dim, hidden_dims).to(device)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=lr)
        # The likelihood objective's temperature: starts at 1, tuned towards the entropy target -A.
        self.log_alpha = torch.zeros((), device=device, requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=lr)
        self.target_entropy = -float(act_dim)

    def step(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        """One step on ``batch`` (obs ``[B, D]``, act ``[B, A]`` in [-1, 1]); returns the loss (0-d, detached)."""
        if self.objective == "mse":
            loss = bc_loss(self.actor, batch)
        else:
            loss, log_pi = bc_likelihood_loss(self.actor, batch, self.log_alpha.exp(), generator)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.objective == "likelihood":
            alpha_loss = temperature_loss(self.log_alpha, log_pi, self.target_entropy)
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
        return loss.detach()

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "opt": self.opt.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "alpha_opt": self.alpha_opt.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.opt.load_state_dict(state["opt"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])


def fit_bc(
    data: Batch,
    num_updates: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden_dims: tuple[int, ...] = (256, 256),
    generator: torch.Generator | None = None,
    objective: str = "likelihood",
) -> TanhGaussianActor:
    """Train a BC actor on ``data`` (obs ``[N, D]``, act ``[N, A]`` in [-1, 1]) with ``objective``
    (module docstring) for ``num_updates`` steps on minibatches drawn from ``generator``.

    Raises ValueError for an unknown objective.
    """
    dev = data.obs.device
    learner = BCLearner(data.obs.shape[-1], data.act.shape[-1], hidden_dims, lr, objective, dev)
    for _ in range(num_updates):
        idx = torch.randint(len(data), (batch_size,), generator=generator, device=data.obs.device)
        learner.step(data.index(idx), generator)
    return learner.actor.eval()


RUN_CONTROL_FIELDS = ("num_updates", "num_threads", "progress", "checkpoint_interval", "device")
"""Fields a resumed BC run may change (as ``engine.model_based_config.RUN_CONTROL_FIELDS``)."""


def train(cfg: Config | None, resume: str | None = None) -> dict:
    """Run BC; returns the summary (also ``<out>/summary.json``, with ``objective`` and ``policy_entropy``) and
    writes ``policy.pt`` (``engine.policy_io.load_policy`` reads it; ``algos.armor --reference`` takes it). The
    run directory, resume (``resume``: a run directory), checkpoints every ``checkpoint_interval`` steps, logging
    and the summary are the run harness's (``engine.harness.RunHarness``).

    Raises ValueError for an unknown dataset id, bad config values or a bad resume, FileExistsError when
    ``cfg.out`` already holds a run, FileNotFoundError when ``resume`` holds no checkpoint, FloatingPointError
    when the loss or the policy becomes NaN or +-inf (the last checkpoint is kept).
    """
    with RunHarness(ALGO, Config, cfg, resume, RUN_CONTROL_FIELDS, validate=lambda c: check_id(c.dataset)) as run:
        cfg = run.cfg
        data = load(cfg.dataset, device=cfg.device)
        if data.env_name is None:
            raise ValueError(f"dataset {cfg.dataset!r} is not from a supported environment; cannot evaluate it")
        run.bind_data(data_hash(data.as_batch()))
        torch.manual_seed(cfg.seed)  # the policy's initialisation
        learner = BCLearner(data.obs_dim, data.act_dim, cfg.hidden_dims, cfg.lr, cfg.objective, cfg.device)
        gen = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        if run.ckpt is not None:
            learner.load_state_dict(run.ckpt["agent"])
            gen.set_state(run.ckpt["gen"])
        real = data.as_batch()

        def evaluate_now(num_episodes: int) -> dict:
            policy = lambda o: learner.actor.act(o, deterministic=True)  # noqa: E731
            result = evaluate(policy, data.env_name, num_episodes, seed=cfg.seed + 10_000)
            run.logger.log_episodes(run.step, result)
            return result.metrics()

        def save_checkpoint() -> None:
            run.checkpoint({"agent": learner.state_dict(), "gen": gen.get_state()})

        loss_sum = torch.zeros(())
        bar = run.progress("bc")
        while run.step < cfg.num_updates:
            idx = torch.randint(len(real), (cfg.batch_size,), generator=gen, device=cfg.device)
            loss_sum = loss_sum + learner.step(real.index(idx), gen)
            run.step += 1
            bar.update(1)
            if run.step % cfg.log_interval == 0:
                row = {"train/bc_loss": loss_sum / cfg.log_interval}
                if run.step % cfg.eval_interval == 0 and run.step != cfg.num_updates:
                    row.update(evaluate_now(max(1, cfg.eval_episodes // 2)))
                run.log(row)
                loss_sum = torch.zeros(())
            if run.step % cfg.checkpoint_interval == 0 and run.step != cfg.num_updates:
                save_checkpoint()
        bar.close()
        actor = learner.actor.eval()
        with torch.no_grad():  # one-sample entropy estimate on (up to) 10,000 dataset states
            entropy = float(-actor(real.obs[:10_000], gen)[1].mean())
        final = evaluate_now(cfg.eval_episodes)
        save_checkpoint()
        save_policy(
            actor, run.dir / "policy.pt", data.env_name, dataset=cfg.dataset, algo=ALGO, objective=cfg.objective
        )
        extra = {"objective": cfg.objective, "policy_entropy": entropy}
        return run.summary(final, data.env_name, data.behavior_normalized_score, extra)


PRESETS: dict[str, Config] = {key: Config(dataset=key) for key in DATASETS}
"""Per-dataset configs (``--dataset ID``); BC's hyperparameters are the same on every dataset."""
BUDGETS = {"fast": lambda cfg: replace(cfg, num_updates=5_000, eval_episodes=5)}
"""``--fast``: 5,000 updates."""


def main(argv: list[str] | None = None) -> dict:
    return run_cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
