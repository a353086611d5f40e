"""ARMOR: Adversarial Model for Offline Reinforcement Learning (Bhardwaj et al., NeurIPS 2023,
arXiv:2302.11048), built on ATAC's relative pessimism (Cheng et al., ICML 2022).

ARMOR optimises the worst case, over models consistent with the data, of the policy's
performance relative to a reference policy: max_pi min_{M in M_alpha} J_M(pi) - J_M(pi_ref).
The practical algorithm (Algorithm 1) keeps ONE dynamics model M (pre-trained by maximum
likelihood, then updated adversarially), two critics f1, f2 with target networks, and an actor:

    L(f)   = E_{D_M}[f(s, pi(s)) - f(s, pi_ref(s))]                        (relative pessimism)
    E^w(f) = (1 - w) E[(f(s,a) - r_M - g f_target(s'_M, pi(s'_M)))^2]       (TD form)
             +    w  E[(f(s,a) - r_M - g f(s'_M, pi(s'_M)))^2]               (residual form)
    E_D(M) = E_D[-log P_M(s' | s, a) + (r_M(s, a) - r)^2 / V_max^2]          (model fit, real data)

    critics: min_f  L(f) + beta E^w(f)                      (fast learning rate)
    model:   min_M  L(f) + beta (E^w(f, M) + lambda E_D(M))  (L does not depend on M here: the
                                                             states come from the buffer)
    actor:   max_pi L(f1) - alpha log pi                    (slow learning rate; entropy as ATAC)

(s'_M, r_M) are drawn from M with the reparameterisation trick, so the model's gradient comes
from both the Bellman term and its fitting term. D_M mixes real and model-rollout states
(``real_ratio``); model rollouts of both pi and pi_ref start from real states and reset every H
steps. The actor starts as a copy of the reference policy, and before the game the critics are fitted to the
reference's value on the real data (``critic_pretrain_updates``): together these are ATAC's behaviour
pretraining, which fits the BC policy and its twin Q before the adversarial phase (lightATAC
``BehaviorPretraining``). With the slow learning rate this is what makes robust policy improvement
over pi_ref practical; an actor warm-started next to untrained critics follows their noise.
The reference must be fitted by likelihood (``algos.bc``'s default objective, as ATAC's behaviour
pretraining), so that its log-std, and with it the entropy, is trained: with a mean-only (MSE)
BC reference the entropy starts far below the target -|A|, the temperature alpha (fast rate)
grows without bound while the actor (slow rate) cannot follow, and alpha * log pi ends up
dominating the actor's objective (docs/results.md, "ARMOR attempts"). A reference saved with another objective is
used, with a warning.

Defaults from ATAC (fast lr 5e-4, slow lr 5e-7, beta 3.0, w 0.5, 3x256 networks). Departures,
each marked where it happens: the model's learning rate (the fast one), lambda = 1e6 (``Config.model_fit_coef``),
H = 5 and a 1:1 real/model mix are our choices where we could not check the paper's appendix values.

    python -m algos.armor --fast
    python -m algos.armor --reference runs/bc/<dataset>/<time>/policy.pt
"""

from __future__ import annotations

import copy
import hashlib
import io
import math
import sys
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm

from algos.bc import fit_bc
from engine.agent import Agent
from engine.batch import Batch, cat_batches
from engine.budgets import RECORDED_DYNAMICS, fast_budget
from engine.cli import run_cli
from engine.data import DATASETS
from engine.dynamics import DynamicsConfig, EnsembleDynamics, data_hash, targets_of
from engine.model_based_config import ModelBasedConfig
from engine.nets import EnsembleCritic, EnsembleLinear, TanhGaussianActor, adam_step, clear_grads, make_adam
from engine.policy_io import load_policy
from engine.rollout import RolloutConfig
from engine.sac import temperature_loss
from engine.termination import termination_params
from engine.trainer import train_model_based

ALGO = "armor"


@dataclass(frozen=True)
class Config(ModelBasedConfig):
    """ARMOR run configuration (every field is a CLI flag: ``--bellman-coef``, ``--reference``)."""

    real_ratio: float = 0.5
    """Fraction of each D_M minibatch from the dataset; the rest from model rollouts."""
    rollout: RolloutConfig = RolloutConfig(horizon=5, penalty_coef=0.0)
    """Rollout horizon H (model rollouts of pi and pi_ref reset every H steps); no penalty."""
    dynamics: DynamicsConfig = DynamicsConfig(num_members=1, num_elites=1)
    """The single model M (ARMOR uses one model, not an ensemble), pre-trained by MLE."""
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the actor, the critics and the BC reference."""
    fast_lr: float = 5e-4
    """Critic (and temperature) learning rate (ATAC's eta_fast)."""
    slow_lr: float = 5e-7
    """Actor learning rate (ATAC's eta_slow)."""
    model_lr: float = 5e-4
    """Learning rate of the adversarial model updates (our choice: the fast rate)."""
    bellman_coef: float = 3.0
    """beta: weight of the Bellman error against the relative-pessimism term."""
    residual_weight: float = 0.5
    """w: weight of the residual form of the Bellman error (1 - w on the TD form)."""
    model_fit_coef: float = 1e6
    """lambda: weight of the model's own fitting error on real data. Its reward part is (r_M - r)^2 / V_max^2, so
    lambda ~ V_max^2 (~1e6 on HalfCheetah, V_max ~ 1,000) weighs a unit of reward error like a unit of Bellman
    error; smaller values let the adversarial model drift from the data's reward (docs/results.md, "ARMOR attempts")."""
    state_fit_coef: float | None = 100.0
    """Weight of the next-state NLL part of E_D(M) alone; None: ``model_fit_coef`` (Algorithm 1's one lambda on
    the whole fit error). A smaller weight lets the Bellman term move s'_M away from the maximum-likelihood
    prediction, while ``model_fit_coef`` keeps anchoring the reward (issue 33's hypothesis 1). Default 100: our
    choice, see bench/RESULTS.md (with it walker2d-medium holds above its reference where the single lambda
    collapsed; +4 points on hopper-medium at 50k)."""
    critic_norm_bound: float = 100.0
    """Proj_F: after every critic step each critic layer's weight matrix is scaled down to Frobenius norm at most
    this (ATAC, Cheng et al. 2022, Sec. 4.2; lightATAC ``atac.py`` ``l2_projection``, ``norm_constraint=100``);
    0: off. Default on, with the two fields below, as ATAC runs them (bench/RESULTS.md, the ablations)."""
    twin_min_target: bool = True
    """The TD form of the Bellman error regresses both critics on min(f1_target, f2_target) at (s'_M, pi(s'_M))
    (lightATAC ``TwinQ.forward``, which ATAC's target uses) instead of each critic's own target."""
    clip_value_targets: bool = True
    """Clip the Bellman backups r + g f(s', a') to [V_min, V_max] with V_max = max(0, r_max / (1 - g)) and
    V_min = min(0, r_min / (1 - g), V_max - 1 / (1 - g)) from the data's rewards (lightATAC ``main.py --clip_v``)."""
    termination_grad_width: float | None = None
    """None: the healthy box marks s'_M terminal with no gradient (the adversary cannot learn to predict a fall).
    A width w > 0 keeps the box's 0/1 value in the Bellman error but gives it the gradient of the smooth box
    1 - prod_d sigmoid((s'_d - low_d) / (w std_d)) sigmoid((high_d - s'_d) / (w std_d)) over the bounded
    dimensions, std_d the data's standard deviation (a straight-through estimator, Bengio et al. 2013), so the
    model loss can move s'_M toward a fall where the critics' values say one is due (issue 33's hypothesis 1;
    our choice, see bench/RESULTS.md)."""
    reference_action: Literal["mean", "sample"] = "mean"
    """pi_ref's action in the relative-pessimism term: its deterministic mean (our choice) or a sample from it
    (Algorithm 1 writes an expectation over pi_ref(s))."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    reference: str | None = None
    """Reference policy checkpoint (``engine.policy_io.save_policy`` format, e.g. a BC run's policy.pt);
    None trains BC on the dataset first."""
    reference_updates: int = 100_000
    """BC gradient steps when the reference is trained here."""
    critic_pretrain_cache: str | None = "runs/critics"
    """Folder caching pretrained critics by (data, reference, seed, pretraining settings), as ``runs/dynamics``
    caches fitted ensembles: a run with the same inputs loads them, and the generator state after pretraining,
    so it continues exactly as if it had pretrained. None: no cache."""
    critic_pretrain_updates: int = 100_000
    """Gradient steps that fit the critics to the reference policy's value on the real data before the game
    starts (ATAC's behaviour pretraining: lightATAC ``BehaviorPretraining`` fits the twin Q to the BC policy
    with TD and residual errors, weights 0.5 / 0.5, at the fast rate, for its 100k warm-start steps). Without
    it the warm-started actor follows freshly initialised critics. 0 skips it."""

    @property
    def state_fit_weight(self) -> float:
        """The weight on E_D(M)'s next-state NLL: ``state_fit_coef``, or lambda (``model_fit_coef``) when None."""
        return self.model_fit_coef if self.state_fit_coef is None else self.state_fit_coef

    def __post_init__(self):
        super().__post_init__()
        bad = {
            "fast_lr": self.fast_lr > 0,
            "slow_lr": self.slow_lr > 0,
            "model_lr": self.model_lr > 0,
            "bellman_coef": self.bellman_coef >= 0,
            "residual_weight": 0 <= self.residual_weight <= 1,
            "model_fit_coef": self.model_fit_coef >= 0,
            "state_fit_coef": self.state_fit_coef is None or self.state_fit_coef >= 0,
            "critic_norm_bound": self.critic_norm_bound >= 0,
            "termination_grad_width": self.termination_grad_width is None or self.termination_grad_width > 0,
            "gamma": 0 <= self.gamma < 1,
            "reference_updates": self.reference_updates >= 1,
            "critic_pretrain_updates": self.critic_pretrain_updates >= 0,
        }
        wrong = [f"{k}={getattr(self, k)!r}" for k, ok in bad.items() if not ok]
        if wrong:
            raise ValueError(
                f"bad config value(s): {', '.join(wrong)} (learning rates > 0, coefficients >= 0, "
                "residual_weight in [0, 1], gamma in [0, 1), reference_updates >= 1, critic_pretrain_updates >= 0)"
            )
        if self.dynamics.num_members != 1:
            raise ValueError(f"ARMOR uses one model: dynamics.num_members must be 1, got {self.dynamics.num_members}")


PRESETS: dict[str, Config] = {
    key: Config(dataset=key, dynamics=replace(RECORDED_DYNAMICS, num_members=1, num_elites=1)) for key in DATASETS
}
"""Per-dataset configs (``--dataset ID``); ARMOR's hyperparameters are the same on every dataset."""
BUDGETS = {"fast": fast_budget(num_updates=3_000, reference_updates=3_000, critic_pretrain_updates=1_000)}
"""``--fast``: the whole job in minutes (BC reference, model, critic pretraining, 3,000 ARMOR updates)."""
BUDGET_NOTES = {
    "fast": (
        "--fast is a pipeline check of ARMOR (a BC reference, a model and critics each trained for minutes, 3,000 "
        "ARMOR updates), not a score. The recorded budget is 200,000 updates with a full BC reference: "
        "`python -m algos.bc --dataset simloop/hopper/medium-v0 --hidden-dims 256 256 256 "
        "--out runs/bc-hopper-medium-ref`, then `python -m algos.armor --dataset simloop/hopper/medium-v0 "
        "--reference runs/bc-hopper-medium-ref/policy.pt --num-updates 200000` scored 61.9 over its last 5 "
        "evaluations against its BC reference's 31.5 (behaviour policy 41.7) at 1 thread on an Intel Xeon in 27 min "
        "of BC, 29 min of critic pretraining and 2.7 h of updates "
        "(bench/results/armor/simloop_hopper_medium-v0/seed0, its pretraining timed in seed0-ablation-none, whose "
        "cached critics it loaded). The same defaults keep ARMOR at or above its reference on walker2d-medium "
        "(69.6 against 60.1) and halfcheetah-medium (40.1 against 38.2); one seed each."
    )
}
"""What ``python -m algos.armor`` prints beside the result of a budget preset (``engine.cli.run_cli``); the
figures are the named records' (tests/test_budget_notes.py checks them against them)."""


def relative_pessimism(f_pi: torch.Tensor, f_ref: torch.Tensor) -> torch.Tensor:
    """L(f, pi, pi_ref) per critic: ``f_pi, f_ref: [E, B]`` -> ``[E]`` = mean_B(f_pi - f_ref)."""
    return (f_pi - f_ref).mean(-1)


def bellman_error(
    q: torch.Tensor,
    rew: torch.Tensor,
    terminal: torch.Tensor,
    q_next_target: torch.Tensor,
    q_next: torch.Tensor,
    gamma: float,
    residual_weight: float,
    v_min: float = -math.inf,
    v_max: float = math.inf,
) -> torch.Tensor:
    """ATAC's mixed Bellman error per critic (Cheng et al. 2022, Sec. 4.2): ``[E]``.

    ``q, q_next_target, q_next: [E, B]`` (Q at (s, a), target critic and live critic at (s', pi(s'))),
    ``rew, terminal: [B]``. The TD form regresses on the target critic; the residual form lets the
    gradient flow through the live critic's next-state value too. Both backups ``r + g (1 - done) f(s', a')``
    are clipped to ``[v_min, v_max]`` (lightATAC ``compute_bellman_backup``; unbounded by default).
    """
    cont = gamma * (1.0 - terminal)
    td = (q - (rew + cont * q_next_target).clamp(v_min, v_max)).pow(2).mean(-1)
    residual = (q - (rew + cont * q_next).clamp(v_min, v_max)).pow(2).mean(-1)
    return (1.0 - residual_weight) * td + residual_weight * residual


def model_fit_terms(
    mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor, v_max: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of E_D(M), each a 0-d mean over rows: the Gaussian NLL of the next-state delta (constants
    dropped, mean over dims) and the squared reward error scaled by V_max^2. ``mean, logvar, target: [B, D+1]``
    ([delta obs, reward])."""
    d = mean.shape[-1] - 1
    nll = 0.5 * ((mean[:, :d] - target[:, :d]).pow(2) * torch.exp(-logvar[:, :d]) + logvar[:, :d]).mean(-1)
    rew_err = (mean[:, d] - target[:, d]).pow(2) / v_max**2
    return nll.mean(), rew_err.mean()


def model_fit_error(mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor, v_max: float) -> torch.Tensor:
    """E_D(M) = NLL + reward error (``model_fit_terms``), a 0-d tensor; ``mean, logvar, target: [B, D+1]``."""
    nll, rew_err = model_fit_terms(mean, logvar, target, v_max)
    return nll + rew_err


def project_weight_norms(module: torch.nn.Module, bound: float) -> None:
    """Proj_F (ATAC): scale every ``EnsembleLinear`` weight ``[E, in, out]`` of ``module`` so that each member's
    matrix has Frobenius norm at most ``bound``, in place (lightATAC ``l2_projection``: ``w *= min(1, C/|w|)``;
    biases untouched). ``bound <= 0`` does nothing."""
    if bound <= 0:
        return
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, EnsembleLinear):
                norm = m.weight.norm(dim=(1, 2), keepdim=True)
                m.weight.mul_((bound / norm).clamp(max=1.0))


def soft_terminal(obs: torch.Tensor, low: torch.Tensor, high: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Smooth healthy-box termination: ``obs [B, D]``, bounds and ``scale [D]`` -> ``[B]`` in (0, 1),
    1 - prod_d sigmoid((obs_d - low_d) / scale_d) sigmoid((high_d - obs_d) / scale_d); unbounded sides (+-inf)
    contribute 1. It tends to the box's 0/1 as ``scale`` -> 0 (``Config.termination_grad_width``)."""
    lo_ok, hi_ok = torch.isfinite(low), torch.isfinite(high)
    lo = torch.where(lo_ok, torch.sigmoid((obs - torch.where(lo_ok, low, 0.0)) / scale), 1.0)
    hi = torch.where(hi_ok, torch.sigmoid((torch.where(hi_ok, high, 0.0) - obs) / scale), 1.0)
    return 1.0 - (lo * hi).prod(-1)


class ARMORAgent(Agent):
    """Actor, reference policy, critics f1, f2 (one batched ensemble) with targets, temperature, and
    the adversarial model (the trained ``EnsembleDynamics`` with one member, updated in place so the
    rollouts follow it)."""

    def __init__(
        self,
        reference: TanhGaussianActor,
        dyn: EnsembleDynamics,
        cfg: Config,
        v_max: float,
        obs_low,
        obs_high,
        real: Batch | None = None,
        value_range: tuple[float, float] = (-math.inf, math.inf),
    ):
        dev = next(reference.parameters()).device
        self.cfg, self.v_max, self.dyn, self.real = cfg, v_max, dyn, real
        # The Bellman backups' clip (``cfg.clip_value_targets``): [V_min, V_max] from the data's rewards.
        self.value_range = value_range if cfg.clip_value_targets else (-math.inf, math.inf)
        # Done (or not needed) once the critics evaluate the reference; part of the checkpoint, so a resumed
        # run does not pretrain again.
        self.critics_pretrained = cfg.critic_pretrain_updates == 0 or real is None
        self.obs_low, self.obs_high = obs_low, obs_high
        # The smooth box's scale per dimension (``cfg.termination_grad_width``), from the data's spread.
        self.term_scale = None
        if cfg.termination_grad_width is not None:
            if real is None:
                raise ValueError("termination_grad_width needs the real data (its per-dimension std); got real=None")
            self.term_scale = (cfg.termination_grad_width * real.obs.std(0)).clamp_min(1e-6)
        self.reference = reference.requires_grad_(False)
        self.actor = copy.deepcopy(reference).requires_grad_(True).train()
        self.critic = EnsembleCritic(reference.obs_dim, reference.act_dim, cfg.hidden_dims, 2).to(dev)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.zeros((), device=dev, requires_grad=True)
        self.target_entropy = -float(reference.act_dim)
        self._actor_params = list(self.actor.parameters())
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._model_params = list(dyn.model.parameters())
        self.actor_opt = make_adam(self._actor_params, cfg.slow_lr)
        self.critic_opt = make_adam(self._critic_params, cfg.fast_lr)
        self.alpha_opt = make_adam([self.log_alpha], cfg.fast_lr)
        self.model_opt = make_adam(self._model_params, cfg.model_lr)

    def rollout_policies(self, generator):
        """pi (stochastic) and pi_ref (deterministic BC mean) share the rollout batch."""
        return [lambda o: self.actor(o, generator)[0], lambda o: self.reference.act(o, deterministic=True)]

    def model_step(self, obs: torch.Tensor, act: torch.Tensor, noise: torch.Tensor):
        """Reparameterised sample of M at ``(obs [B, D], act [B, A])`` with ``noise [B, D+1]``:
        ``(next_obs [B, D], rew [B], terminal [B] float, mean, logvar)``; differentiable in M."""
        m = self.dyn.model
        mean, logvar = m(m.normalize(obs, act))
        mean, logvar = mean[0], logvar[0]  # the single member: [B, D+1]
        y = mean + torch.exp(0.5 * logvar) * noise
        d = obs.shape[-1]
        next_obs = obs + y[:, :d]
        with torch.no_grad():
            healthy = (next_obs > self.obs_low).all(-1) & (next_obs < self.obs_high).all(-1)
        terminal = (~healthy).to(next_obs.dtype)
        if self.term_scale is not None:  # the box's value, the smooth box's gradient (straight-through)
            soft = soft_terminal(next_obs, self.obs_low, self.obs_high, self.term_scale)
            terminal = terminal + (soft - soft.detach())
        return next_obs, y[:, d], terminal, mean, logvar

    def pretrain_critics(self, generator, progress: bool = False) -> dict:
        """Fit the critics to the reference policy's value on the real data, ``cfg.critic_pretrain_updates``
        steps on minibatches of ``cfg.batch_size`` rows: ATAC's mixed Bellman error (``bellman_error``,
        weight ``cfg.residual_weight`` on the residual form) with ``a' ~ pi_ref(s')``, its own Adam at the
        fast rate, Polyak-averaged targets. This is the critic half of ATAC's behaviour pretraining (Cheng
        et al. 2022; lightATAC ``BehaviorPretraining``); the policy half is the BC reference. Returns
        ``{"pretrain/bellman_error": mean over the last 1,000 steps}`` and marks the critics pretrained."""
        cfg, real = self.cfg, self.real
        opt = make_adam(self._critic_params, cfg.fast_lr)
        recent = []
        for step in tqdm(range(cfg.critic_pretrain_updates), desc="ARMOR critic pretraining", disable=not progress):
            b = real.index(torch.randint(len(real), (cfg.batch_size,), generator=generator, device=real.obs.device))
            with torch.no_grad():
                a_next, _ = self.reference(b.next_obs, generator)
                q_next_target = self.critic_target(b.next_obs, a_next)
            q, q_next = self.critic(b.obs, b.act), self.critic(b.next_obs, a_next)
            err = bellman_error(q, b.rew, b.terminal, q_next_target, q_next, cfg.gamma, cfg.residual_weight)
            clear_grads(opt)
            err.sum().backward()
            adam_step(opt)
            with torch.no_grad():
                torch._foreach_lerp_(self._target_params, self._critic_params, cfg.tau)
            if step >= cfg.critic_pretrain_updates - 1_000:
                recent.append(err.detach().mean())
        self.critics_pretrained = True
        return {"pretrain/bellman_error": torch.stack(recent).mean()} if recent else {}

    def losses(self, real: Batch, model: Batch, generator) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The adversary's losses on D_M = real + model rows: ``(critic_loss, model_loss, metrics)``.

        critic_loss = sum_i L(f_i) + beta E^w(f_i), to be differentiated in the critics' weights only;
        model_loss = beta (sum_i E^w(f_i) + lambda E_D(M)), in the model's weights only (``backward``).
        Each critic pass is computed once: at s with the actions of pi, pi_ref and the data, and the live
        and target critics at s'_M. Both losses share these passes; ``backward`` routes each loss's
        gradient to its own parameters. Written as separate, partly detached passes per loss
        (bench/plain_armor.py), the losses cost 8 critic passes instead of 5 (bench/RESULTS.md, "ARMOR update",
        compares the two).
        """
        cfg = self.cfg
        batch = cat_batches(real, model)
        n = batch.obs.shape[0]
        with torch.no_grad():
            a_pi, _ = self.actor(batch.obs, generator)
            if cfg.reference_action == "sample":
                a_ref, _ = self.reference(batch.obs, generator)
            else:
                a_ref = self.reference.act(batch.obs, deterministic=True)
        noise = torch.randn(n, batch.obs.shape[1] + 1, generator=generator, device=batch.obs.device)
        next_obs, rew, term, mean, logvar = self.model_step(batch.obs, batch.act, noise)
        with torch.no_grad():
            a_next, _ = self.actor(next_obs, generator)

        f_pi, f_ref, q = (self.critic(batch.obs, a) for a in (a_pi, a_ref, batch.act))
        q_next = self.critic(next_obs, a_next)  # critic loss: weights (residual form); model loss: s'_M
        q_next_target = self.critic_target(next_obs, a_next)  # no weights to train; the model loss: s'_M
        if cfg.twin_min_target:  # [E, B] -> [1, B], broadcast to both critics
            q_next_target = q_next_target.min(0, keepdim=True).values
        rel = relative_pessimism(f_pi, f_ref)
        w, (v_lo, v_hi) = cfg.residual_weight, self.value_range
        bell_critic = bellman_error(q, rew.detach(), term, q_next_target.detach(), q_next, cfg.gamma, w, v_lo, v_hi)
        critic_loss = (rel + cfg.bellman_coef * bell_critic).sum()

        bell_model = bellman_error(q.detach(), rew, term, q_next_target, q_next, cfg.gamma, w, v_lo, v_hi)
        # E_D(M) on the real rows, which lead D_M's batch: the model's outputs there are already computed.
        fit_mean, fit_logvar = mean[: real.obs.shape[0]], logvar[: real.obs.shape[0]]
        nll, rew_err = model_fit_terms(fit_mean, fit_logvar, targets_of(real), self.v_max)
        model_loss = cfg.bellman_coef * (bell_model.sum() + cfg.state_fit_weight * nll + cfg.model_fit_coef * rew_err)
        fit = nll + rew_err
        metrics = {
            "train/relative_pessimism": rel.detach().mean(),
            "train/bellman_error": bell_critic.detach().mean(),
            "train/model_fit_error": fit.detach(),
            # How far the adversarial model's reward has moved from the data's (the fit term anchors it only
            # through (r_M - r)^2 / V_max^2): RMSE on this real minibatch, in reward units.
            "train/model_reward_rmse": (fit_mean[:, -1].detach() - real.rew).pow(2).mean().sqrt(),
            "train/critic_loss": critic_loss.detach(),
        }
        return critic_loss, model_loss, metrics

    def backward(self, critic_loss: torch.Tensor, model_loss: torch.Tensor) -> None:
        """Accumulate d critic_loss / d critics into the critics' ``.grad`` and d model_loss / d model into
        the model's: each loss is differentiated in its own player's weights only (the other player is held
        fixed, as in the game's alternating best responses), through the passes the two losses share."""
        torch.autograd.backward(critic_loss, inputs=self._critic_params, retain_graph=True)
        torch.autograd.backward(model_loss, inputs=self._model_params)

    def pretrain_cache_path(self, generator) -> Path:
        """Where ``prepare`` caches the pretrained critics: ``<cfg.critic_pretrain_cache>/<key>.pt``, the key a
        SHA-256 of everything pretraining depends on: the data's content, the reference's weights, the critics'
        initial weights, the generator's state and the pretraining settings."""
        cfg, h = self.cfg, hashlib.sha256()
        h.update(data_hash(self.real).encode())
        for module in (self.reference, self.critic):
            for v in module.state_dict().values():
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
        h.update(generator.get_state().numpy().tobytes())
        fields = ("batch_size", "fast_lr", "gamma", "tau", "residual_weight", "critic_pretrain_updates", "hidden_dims")
        values = asdict(cfg)
        h.update(repr({k: values[k] for k in fields}).encode())
        return Path(cfg.critic_pretrain_cache) / f"{h.hexdigest()[:16]}.pt"

    def prepare(self, generator, progress: bool = False) -> dict:
        """The trainer's step before the loop (``engine.agent.Agent.prepare``): pretrain the critics unless that
        is done or disabled; returns ``pretrain_critics``'s metrics, or ``{}`` when there was nothing to do.

        With ``cfg.critic_pretrain_cache`` the result (critics, targets, the generator's state after pretraining
        and the metrics) is read from the cache when present (``pretrain_cache_path``) and written to it
        otherwise, so that runs differing only after pretraining (ablations, seeds of the game) pretrain once."""
        if self.critics_pretrained:
            return {}
        if self.cfg.critic_pretrain_cache is None:
            return self.pretrain_critics(generator, progress)
        path = self.pretrain_cache_path(generator)
        if path.is_file():
            saved = torch.load(path, map_location=self.real.obs.device, weights_only=True)
            self.critic.load_state_dict(saved["critic"])
            self.critic_target.load_state_dict(saved["critic_target"])
            generator.set_state(saved["generator"])
            self.critics_pretrained = True
            return saved["metrics"]
        metrics = self.pretrain_critics(generator, progress)
        state = {
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "generator": generator.get_state(),
            "metrics": metrics,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        return metrics

    def update(self, real: Batch, model: Batch, generator) -> dict:
        """One ARMOR iteration: critics and model step on their losses, then actor and temperature. The
        first call first pretrains the critics (``pretrain_critics``, no cache) unless that is done or disabled
        (the trainer does it before its loop, ``prepare``; this covers an agent driven by hand)."""
        pretrain = {} if self.critics_pretrained else self.pretrain_critics(generator, self.cfg.progress)
        critic_loss, model_loss, metrics = self.losses(real, model, generator)
        metrics.update(pretrain)
        clear_grads(self.critic_opt)
        clear_grads(self.model_opt)
        self.backward(critic_loss, model_loss)
        adam_step(self.critic_opt)
        project_weight_norms(self.critic, self.cfg.critic_norm_bound)
        adam_step(self.model_opt)

        obs = torch.cat([real.obs, model.obs], 0)
        act, logp = self.actor(obs, generator)
        alpha = self.log_alpha.exp().detach()
        # The actor maximises f1 (ATAC) with the critics just updated; f1(s, pi_ref(s)) has no pi-gradient.
        f1 = self.critic(obs, act, members=slice(0, 1))[0]
        actor_loss = (alpha * logp - f1).mean()
        clear_grads(self.actor_opt)
        torch.autograd.backward(actor_loss, inputs=self._actor_params)
        adam_step(self.actor_opt)
        alpha_loss = temperature_loss(self.log_alpha, logp, self.target_entropy)
        clear_grads(self.alpha_opt)
        alpha_loss.backward()
        adam_step(self.alpha_opt)
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._critic_params, self.cfg.tau)
        metrics.update(
            {"train/actor_loss": actor_loss.detach(), "train/alpha": alpha, "train/entropy": -logp.detach().mean()}
        )
        return metrics

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "reference": self.reference.state_dict(),
            "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "model": self.dyn.model.state_dict(),
            "opts": [o.state_dict() for o in (self.actor_opt, self.critic_opt, self.alpha_opt, self.model_opt)],
            "critics_pretrained": self.critics_pretrained,
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.reference.load_state_dict(state["reference"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.dyn.model.load_state_dict(state["model"])
        for opt, s in zip((self.actor_opt, self.critic_opt, self.alpha_opt, self.model_opt), state["opts"]):
            opt.load_state_dict(s)
        # Checkpoints from before critic pretraining existed continue without it.
        self.critics_pretrained = state.get("critics_pretrained", True)


def make_agent(data, cfg: Config, dev, dyn: EnsembleDynamics, saved: dict | None = None) -> ARMORAgent:
    """The reference (loaded from ``cfg.reference``, or BC trained on the data), V_max = max|r| / (1 - gamma),
    the agent (``engine.agent.MakeAgent``). With ``saved`` (a checkpoint's agent state, which the caller loads
    next) the reference is rebuilt from it: a resumed run neither refits BC nor needs the ``--reference`` file.

    Raises:
        FileNotFoundError, ValueError: ``cfg.reference`` is missing or unreadable, or its dims differ from the data's.
    """
    if saved is not None:
        reference = TanhGaussianActor.from_state_dict(saved["reference"]).to(dev).eval()
    elif cfg.reference is not None:
        reference, info = load_policy(cfg.reference, dev)
        meta = info.get("meta", {})
        # BC checkpoints saved before the objective was recorded were fitted by MSE.
        objective = meta.get("objective", "mse" if meta.get("algo") == "bc" else "likelihood")
        if objective != "likelihood":
            warnings.warn(
                f"reference {cfg.reference} was trained with BC objective {objective!r}: its log-std "
                "is untrained, so the warm-started actor's entropy starts off the target and the temperature alpha "
                "climbs (train/alpha). Train the reference with `python -m algos.bc --objective likelihood`.",
                stacklevel=2,
            )
        if (reference.obs_dim, reference.act_dim) != (data.obs_dim, data.act_dim):
            raise ValueError(
                f"reference {cfg.reference} has dims (obs {reference.obs_dim}, act {reference.act_dim}); "
                f"the dataset has (obs {data.obs_dim}, act {data.act_dim})"
            )
    else:
        gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
        reference = fit_bc(data.as_batch(), cfg.reference_updates, hidden_dims=cfg.hidden_dims, generator=gen)
    horizon = 1.0 / (1.0 - cfg.gamma)
    v_max = float(data.rew.abs().max()) * horizon
    # lightATAC main.py (--clip_v): the value range the backups are clipped to.
    clip_hi = max(0.0, float(data.rew.max()) * horizon)
    clip_lo = min(0.0, float(data.rew.min()) * horizon, clip_hi - horizon)
    term = termination_params(data.env_name).to(dev)
    return ARMORAgent(
        reference, dyn, cfg, max(v_max, 1e-6), term.obs_low, term.obs_high, data.as_batch(), (clip_lo, clip_hi)
    )


def train(cfg: Config | None, resume: str | None = None) -> dict:
    """Run ARMOR; returns the summary (also ``<out>/summary.json``); ``resume`` as ``algos.mopo.train``. Raises
    ValueError on bad input, FileExistsError when ``cfg.out`` already holds a run and ``resume`` is not given,
    FloatingPointError when training diverges.

    The dynamics cache holds the MLE pre-trained model; the adversarially updated model is part of
    the run's checkpoint, never written back to the cache.
    """
    return train_model_based(ALGO, Config, cfg, make_agent, resume)


def main(argv: list[str] | None = None) -> dict:
    return run_cli(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
