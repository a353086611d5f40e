"""ARMOR and BC: losses against hand computations, gradient paths of the adversarial model, smoke
runs, reference loading and bad config."""

import copy
import csv
import json
import math
from dataclasses import replace

import pytest
import torch

from algos import armor, bc
from bench.plain_armor import PlainARMORAgent
from engine.batch import Batch
from engine.data import DATASETS
from engine.dynamics import DynamicsConfig, EnsembleDynamics
from engine.nets import TanhGaussianActor
from engine.policy_io import save_policy
from tests.conftest import TINY_RUN, tiny_rollout


def test_relative_pessimism_and_bellman_error_hand_computation():
    f_pi = torch.tensor([[1.0, 3.0], [0.0, -2.0]])
    f_ref = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    assert armor.relative_pessimism(f_pi, f_ref).tolist() == [0.5, -2.0]
    q = torch.tensor([[1.0, 2.0]])
    rew = torch.tensor([0.5, -1.0])
    term = torch.tensor([0.0, 1.0])
    q_next_t = torch.tensor([[2.0, 7.0]])
    q_next = torch.tensor([[1.0, 9.0]])
    got = armor.bellman_error(q, rew, term, q_next_t, q_next, gamma=0.9, residual_weight=0.25)
    td = ((1.0 - (0.5 + 0.9 * 2.0)) ** 2 + (2.0 - (-1.0)) ** 2) / 2  # terminal row: no bootstrap
    res = ((1.0 - (0.5 + 0.9 * 1.0)) ** 2 + (2.0 - (-1.0)) ** 2) / 2
    assert got.item() == pytest.approx(0.75 * td + 0.25 * res, rel=1e-6)


def test_model_fit_error_hand_computation():
    mean = torch.tensor([[0.0, 1.0, 2.0]])  # D=2 delta dims, then reward
    logvar = torch.tensor([[0.0, 2.0, 5.0]])  # the reward's log-variance is not used
    target = torch.tensor([[1.0, 1.0, 0.0]])
    got = armor.model_fit_error(mean, logvar, target, v_max=4.0)
    nll = 0.5 * ((1.0 * 1.0 + 0.0) + (0.0 + 2.0)) / 2
    assert got.item() == pytest.approx(nll + (2.0 - 0.0) ** 2 / 16.0, rel=1e-6)


def _agent(model_fit_coef=1.0, bellman_coef=3.0):
    """A small agent with Algorithm 1's single lambda on the whole fit error (``state_fit_coef=None``), which the
    hand computations below write; tests of ``state_fit_coef`` set it."""
    torch.manual_seed(0)
    cfg = armor.Config(
        hidden_dims=(16,),
        model_fit_coef=model_fit_coef,
        state_fit_coef=None,
        bellman_coef=bellman_coef,
        dynamics=DynamicsConfig(num_members=1, num_elites=1, hidden_dim=16, num_layers=1, weight_decays=(1e-5, 1e-5)),
    )
    dyn = EnsembleDynamics(4, 2, cfg.dynamics)
    ref = TanhGaussianActor(4, 2, (16,))
    return armor.ARMORAgent(
        ref, dyn, cfg, v_max=10.0, obs_low=torch.full((4,), -torch.inf), obs_high=torch.full((4,), torch.inf)
    )


def _batch(n, seed):
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(n, 4, generator=g),
        torch.rand(n, 2, generator=g) * 2 - 1,
        torch.randn(n, generator=g),
        torch.randn(n, 4, generator=g),
        torch.zeros(n),
    )


def test_shared_passes_give_each_player_its_own_gradient():
    """The restricted backward over shared passes gives the critics and the model exactly the gradients
    of the plain formulation (one set of passes per loss, the other player detached or frozen)."""
    real, model = _batch(6, 1), _batch(6, 2)
    agent = _agent(model_fit_coef=0.7)
    plain = PlainARMORAgent(
        agent.reference, copy.deepcopy(agent.dyn), agent.cfg, agent.v_max, agent.obs_low, agent.obs_high
    )
    plain.critic.load_state_dict(agent.critic.state_dict())
    plain.critic_target.load_state_dict(agent.critic_target.state_dict())
    losses = {}
    grads = {}
    for name, a in (("plain", plain), ("shared", agent)):
        critic_loss, model_loss, _ = a.losses(real, model, torch.Generator().manual_seed(3))
        a.backward(critic_loss, model_loss)
        losses[name] = (critic_loss.detach(), model_loss.detach())
        grads[name] = [p.grad for p in [*a.critic.parameters(), *a.dyn.model.parameters()]]
    torch.testing.assert_close(losses["shared"], losses["plain"])
    assert len(grads["shared"]) == len(grads["plain"])
    for g, w in zip(grads["shared"], grads["plain"]):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
    # Nothing leaks to the actor, the target critics or the reference.
    for net in (agent.actor, agent.critic_target, agent.reference):
        assert all(p.grad is None for p in net.parameters())


def test_model_gradient_comes_from_both_terms():
    real, model = _batch(6, 1), _batch(6, 2)

    def model_grads(model_fit_coef):
        agent = _agent(model_fit_coef=model_fit_coef, bellman_coef=1.0)  # same seed: same weights
        critic_loss, model_loss, _ = agent.losses(real, model, torch.Generator().manual_seed(3))
        agent.backward(critic_loss, model_loss)
        assert all(p.grad is not None for p in agent.critic.parameters())
        return torch.cat([p.grad.flatten() for p in agent.dyn.model.layers.parameters()])

    bellman_only, with_fit = model_grads(0.0), model_grads(1.0)
    assert bellman_only.abs().sum() > 0  # the Bellman term alone moves the model
    # The fit term adds its own gradient: its share is the difference, nonzero.
    assert (with_fit - bellman_only).abs().sum() > 1e-3 * with_fit.abs().sum()


def test_update_moves_critic_model_and_actor():
    agent = _agent()
    before = {
        k: [p.clone() for p in m.parameters()]
        for k, m in (("critic", agent.critic), ("model", agent.dyn.model), ("actor", agent.actor))
    }
    metrics = agent.update(_batch(8, 4), _batch(8, 5), torch.Generator().manual_seed(6))
    for k, m in (("critic", agent.critic), ("model", agent.dyn.model), ("actor", agent.actor)):
        assert any(not torch.equal(a, b) for a, b in zip(before[k], m.parameters())), k
    for key in ("train/relative_pessimism", "train/bellman_error", "train/model_fit_error", "train/actor_loss"):
        assert torch.isfinite(metrics[key]), key
    # The reward RMSE is the model's (before this step) on the real minibatch, by hand.
    agent2, real = _agent(), _batch(8, 4)
    m = agent2.dyn.model
    with torch.no_grad():
        r_model = m(m.normalize(real.obs, real.act))[0][0, :, -1]
    expected = ((r_model - real.rew) ** 2).mean().sqrt()
    metrics2 = agent2.update(real, _batch(8, 5), torch.Generator().manual_seed(6))
    torch.testing.assert_close(metrics2["train/model_reward_rmse"], expected)
    assert torch.isfinite(metrics2["train/entropy"])
    # The reference policy never changes.
    assert all(not p.requires_grad for p in agent.reference.parameters())


def test_actor_log_prob_hand_computation():
    """log pi(a|s) = sum_j [log N(atanh a_j; mu_j, sigma_j) - log(1 - a_j^2)], with a_j = +-1 clipped."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(3, 2, (8,))
    obs = torch.randn(4, 3)
    act = torch.tensor([[0.5, -0.2], [0.9, 0.0], [-0.99, 0.3], [1.0, -1.0]])
    mu, log_std = actor.dist_params(obs)
    a = act.clamp(-1 + 1e-6, 1 - 1e-6).double()
    u = 0.5 * torch.log((1 + a) / (1 - a))
    std = log_std.double().exp()
    gauss = -0.5 * ((u - mu.double()) / std) ** 2 - torch.log(std) - 0.5 * torch.log(torch.tensor(2 * torch.pi))
    expected = (gauss - torch.log(1 - a**2)).sum(-1)
    got = actor.log_prob(obs, act)
    assert torch.isfinite(got).all()
    # float32 atanh near 1 - 1e-6 loses digits: compare the rows away from the clip tightly, the clipped one loosely.
    torch.testing.assert_close(got[:3].double(), expected[:3], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got[3].double(), expected[3], rtol=2e-2, atol=0.5)
    # It agrees with the density forward() reports for its own samples.
    gen = torch.Generator().manual_seed(1)
    sample, logp = actor(obs, gen)
    torch.testing.assert_close(actor.log_prob(obs, sample), logp, rtol=1e-4, atol=1e-3)


def test_likelihood_bc_fits_the_std_as_well_as_the_mean():
    """Actions a = tanh(W s + sigma eps): likelihood BC recovers sigma (its entropy floor -|A| is below
    the data's entropy here, so it does not bind). MSE BC fits the same mean."""
    torch.manual_seed(0)
    n, sigma = 20_000, 0.3
    obs = torch.randn(n, 3)
    w = torch.tensor([[0.5, -0.3], [0.2, 0.4], [-0.1, 0.1]])
    act = torch.tanh(obs @ w + sigma * torch.randn(n, 2))
    data = Batch(obs=obs, act=act, rew=torch.zeros(n), next_obs=obs, terminal=torch.zeros(n))
    gen = torch.Generator().manual_seed(0)
    fitted = bc.fit_bc(data, 3_000, hidden_dims=(64,), generator=gen, objective="likelihood")
    with torch.no_grad():
        mu, log_std = fitted.dist_params(obs[:2_000])
    assert abs(float(log_std.exp().mean()) - sigma) < 0.05
    assert (mu - obs[:2_000] @ w).abs().mean() < 0.05
    mse = bc.fit_bc(data, 3_000, hidden_dims=(64,), generator=gen, objective="mse")
    with torch.no_grad():
        assert (torch.tanh(mse.dist_params(obs[:2_000])[0]) - torch.tanh(obs[:2_000] @ w)).abs().mean() < 0.05
    with pytest.raises(ValueError, match="unknown BC objective 'l1'"):
        bc.fit_bc(data, 1, objective="l1")


def test_likelihood_bc_entropy_floor_binds_on_near_deterministic_data():
    """Nearly deterministic actions (sigma 0.01: entropy about -7.6 for 2 dims) sit below the floor -|A| = -2:
    the temperature keeps the fitted policy's entropy near the floor instead of collapsing onto the data."""
    torch.manual_seed(0)
    n = 20_000
    obs = torch.randn(n, 3)
    act = torch.tanh(obs[:, :2] * 0.5 + 0.01 * torch.randn(n, 2))
    data = Batch(obs=obs, act=act, rew=torch.zeros(n), next_obs=obs, terminal=torch.zeros(n))
    gen = torch.Generator().manual_seed(0)
    fitted = bc.fit_bc(data, 3_000, hidden_dims=(64,), generator=gen, objective="likelihood")
    with torch.no_grad():
        entropy = float(-fitted(obs[:5_000], gen)[1].mean())
    assert -3.0 < entropy < -1.0


def test_bc_and_armor_smoke_runs_with_a_saved_reference(tiny_dataset, tmp_path):
    bc_cfg = bc.Config(
        dataset=tiny_dataset,
        num_updates=50,
        eval_episodes=1,
        log_interval=10,
        progress=False,
        hidden_dims=(32,),
        out=str(tmp_path / "bc"),
    )
    bc_summary = bc.train(bc_cfg)
    assert bc_summary["algo"] == "bc" and (tmp_path / "bc" / "policy.pt").is_file()
    cfg = armor.Config(
        dataset=tiny_dataset,
        out=str(tmp_path / "armor"),
        rollout=tiny_rollout(),
        hidden_dims=(32,),
        reference=str(tmp_path / "bc" / "policy.pt"),
        critic_pretrain_updates=20,
        **{**TINY_RUN, "dynamics": replace(TINY_RUN["dynamics"], num_members=1, num_elites=1)},
    )
    armor.train(cfg)
    summary = json.loads((tmp_path / "armor" / "summary.json").read_text())
    assert summary["algo"] == "armor" and summary["num_updates"] == 40
    with open(tmp_path / "armor" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert "train/relative_pessimism" in rows[0] and "pretrain/bellman_error" in rows[0]
    # The pretraining ran before the loop: its own row at step 0 (with its duration), none in the updates' rows.
    pretrain_rows = [r for r in rows if r["pretrain/bellman_error"]]
    assert [r["step"] for r in pretrain_rows] == ["0"] and float(pretrain_rows[0]["perf/prepare_s"]) > 0
    assert not pretrain_rows[0]["perf/updates_per_s"]


def test_bad_config_and_reference(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="num_members must be 1"):
        armor.Config(dynamics=DynamicsConfig())
    with pytest.raises(ValueError, match="residual_weight=1.5"):
        armor.Config(residual_weight=1.5)
    with pytest.raises(ValueError, match="lr=0"):
        bc.Config(lr=0.0)
    with pytest.raises(ValueError, match="objective='l2'.*'likelihood', 'mse'"):
        bc.Config(objective="l2")
    with pytest.raises(FileNotFoundError, match="nothing to resume: no checkpoint.pt in somewhere"):
        bc.train(bc.Config(dataset=tiny_dataset), resume="somewhere")
    wrong = TanhGaussianActor(11, 3, (8,))
    save_policy(wrong, tmp_path / "hopper_policy.pt", "hopper", algo="bc")  # an older, mean-only BC checkpoint
    cfg = armor.Config(
        dataset=tiny_dataset,
        out=str(tmp_path / "a"),
        rollout=tiny_rollout(),
        hidden_dims=(32,),
        reference=str(tmp_path / "hopper_policy.pt"),
        **{**TINY_RUN, "dynamics": replace(TINY_RUN["dynamics"], num_members=1, num_elites=1)},
    )
    with pytest.raises(ValueError, match="reference .* has dims"), pytest.warns(UserWarning, match="objective 'mse'"):
        armor.train(cfg)
    assert set(DATASETS) <= set(armor.PRESETS) and set(DATASETS) <= set(bc.PRESETS)


def test_critic_pretraining_fits_the_reference_value_and_runs_once():
    """With gamma = 0 the reference's value is the reward itself: after pretraining both critics predict
    r(s, a) on the data. The first update pretrains, the actor is untouched by it, and the flag survives a
    checkpoint round trip so a resumed run does not pretrain again."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = 2_000
    obs, act = torch.randn(n, 4, generator=g), torch.rand(n, 2, generator=g) * 2 - 1
    rew = obs[:, 0] - 0.5 * act[:, 1]
    real = Batch(obs, act, rew, torch.randn(n, 4, generator=g), torch.zeros(n))
    cfg = armor.Config(
        hidden_dims=(32, 32),
        gamma=0.0,
        batch_size=64,
        critic_pretrain_updates=1_500,
        progress=False,
        dynamics=DynamicsConfig(num_members=1, num_elites=1, hidden_dim=16, num_layers=1, weight_decays=(1e-5, 1e-5)),
    )
    bounds = (torch.full((4,), -torch.inf), torch.full((4,), torch.inf))
    ref = TanhGaussianActor(4, 2, (32, 32))
    agent = armor.ARMORAgent(ref, EnsembleDynamics(4, 2, cfg.dynamics), cfg, 10.0, *bounds, real=real)
    with torch.no_grad():
        before = ((agent.critic(obs, act) - rew) ** 2).mean().sqrt()
    actor_before = [p.clone() for p in agent.actor.parameters()]
    metrics = agent.pretrain_critics(torch.Generator().manual_seed(1))
    with torch.no_grad():
        after = ((agent.critic(obs, act) - rew) ** 2).mean(-1).sqrt()  # per critic
    assert (after < 0.15 * rew.std()).all(), (before, after)
    assert metrics["pretrain/bellman_error"] < 0.05 * rew.var()
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))

    fresh = armor.ARMORAgent(ref, EnsembleDynamics(4, 2, cfg.dynamics), cfg, 10.0, *bounds, real=real)
    assert not fresh.critics_pretrained
    out = fresh.update(_batch(8, 4), _batch(8, 5), torch.Generator().manual_seed(6))
    assert fresh.critics_pretrained and "pretrain/bellman_error" in out
    assert "pretrain/bellman_error" not in fresh.update(_batch(8, 4), _batch(8, 5), torch.Generator().manual_seed(7))
    resumed = armor.ARMORAgent(ref, EnsembleDynamics(4, 2, cfg.dynamics), cfg, 10.0, *bounds, real=real)
    resumed.load_state_dict(fresh.state_dict())
    assert resumed.critics_pretrained


# ---------------------------------------------------------------------------------------------------------------
# Wiring: one ARMOR update against an oracle written here from the formulas of algos/armor.py's module docstring,
# using only the networks' forward passes (no ARMORAgent helper, no relative_pessimism / bellman_error /
# model_fit_error, unlike bench/plain_armor.py, which reuses them and so cannot catch their bugs).
# ---------------------------------------------------------------------------------------------------------------

D3, A2 = 3, 2
V_MAX, OBS_BOUND = 2.0, 1.5


VALUE_RANGE = (-0.6, 0.4)
"""The backups' clip range of the hand-sized agent with ATAC's stabilisers: it binds on some rows, not all."""


def _armor_agent64(seed: int, critic_hidden=(8,), atac: bool = False) -> armor.ARMORAgent:
    """A hand-sized ARMOR agent in float64 with non-default coefficients (a dropped or swapped factor shows),
    finite observation bounds (some model next states terminate) and a non-trivial input normaliser and alpha.
    ``atac``: with ATAC's stabilisers (twin-min target, backups clipped to ``VALUE_RANGE``, Proj_F), else
    without them (the paper's Algorithm 1). Initialised from ``seed`` without touching the global RNG."""
    cfg = armor.Config(
        twin_min_target=atac,
        clip_value_targets=atac,
        critic_norm_bound=100.0 if atac else 0.0,
        hidden_dims=critic_hidden,
        bellman_coef=2.5,
        residual_weight=0.3,
        model_fit_coef=0.7,
        # the defaults (ATAC's stabilisers) weigh the state NLL apart; Algorithm 1 has the one lambda on both parts
        state_fit_coef=1.3 if atac else None,
        # 7/8 is exact in float32: model_step returns the terminal flag as float32, so gamma * (1 - d) is formed in
        # float32 even in this float64 agent (harmless in training, which is all float32); 0.9 would differ by 2e-8.
        gamma=0.875,
        slow_lr=1e-3,
        progress=False,
        dynamics=DynamicsConfig(
            num_members=1, num_elites=1, hidden_dim=8, num_layers=1, weight_decays=(1e-5, 1e-5), seed=seed
        ),
    )
    bound = torch.full((D3,), OBS_BOUND, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ref = TanhGaussianActor(D3, A2, (8,))
        dyn = EnsembleDynamics(D3, A2, cfg.dynamics)
        # real=None: no critic pretraining
        agent = armor.ARMORAgent(ref, dyn, cfg, V_MAX, -bound, bound, value_range=VALUE_RANGE)
    for net in (agent.actor, agent.reference, agent.critic, agent.critic_target, agent.dyn.model):
        net.double()  # in place (param.data swapped): the optimisers keep pointing at the same parameters
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        agent.log_alpha.data = torch.tensor(-0.4, dtype=torch.float64)  # alpha = 0.67, not 1: a dropped alpha shows
        agent.dyn.model.in_mean.copy_(0.3 * torch.randn(D3 + A2, generator=g, dtype=torch.float64))
        agent.dyn.model.in_std.copy_(torch.rand(D3 + A2, generator=g, dtype=torch.float64) + 0.5)
    return agent


def _batch64(n: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        torch.randn(n, D3, generator=g, dtype=torch.float64),
        torch.rand(n, A2, generator=g, dtype=torch.float64) * 2 - 1,
        torch.randn(n, generator=g, dtype=torch.float64),
        torch.randn(n, D3, generator=g, dtype=torch.float64),
        torch.zeros(n, dtype=torch.float64),
    )


def _capture_armor_draws(agent: armor.ARMORAgent, monkeypatch) -> tuple[list, list]:
    """Record the random draws one ``agent.update`` makes, through the agent's own calls: every actor call
    (its input states, the generator state before it, its actions, whether it is differentiable) and the noise of
    every model sample (``model_step``'s arguments). The oracle then uses the same sampled actions and noise
    without replaying the generator, so it does not depend on the order of the draws."""
    actor_calls, model_calls = [], []
    actor_forward, model_step = agent.actor.forward, agent.model_step

    def forward(obs, generator=None):
        state = generator.get_state() if generator is not None else None
        act, logp = actor_forward(obs, generator)
        actor_calls.append(
            {"obs": obs.detach().clone(), "gen_state": state, "act": act.detach().clone(), "grad": act.requires_grad}
        )
        return act, logp

    def step(obs, act, noise):
        model_calls.append({"obs": obs.detach().clone(), "act": act.detach().clone(), "noise": noise.detach().clone()})
        return model_step(obs, act, noise)

    monkeypatch.setattr(agent.actor, "forward", forward)
    monkeypatch.setattr(agent, "model_step", step)
    return actor_calls, model_calls


def _oracle_actor_grad(actor0, critic_after, alpha: torch.Tensor, call: dict) -> list[torch.Tensor]:
    """d/dtheta mean(alpha log pi(a|s) - f1(s, a)), a = the reparameterised sample of the actor step (the same noise,
    restored from the generator state the agent's call started from), f1 the first critic after the critic step."""
    gen = torch.Generator()
    gen.set_state(call["gen_state"])
    act, logp = actor0(call["obs"], gen)
    assert torch.equal(act.detach(), call["act"])  # the same sample as the agent's step
    f1 = critic_after(call["obs"], act)[0]
    return list(torch.autograd.grad((alpha * logp - f1).mean(), list(actor0.parameters())))


def _assert_grads_close(got, expected, what: str):
    assert len(got) == len(expected), what
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a is not None, f"{what}[{i}] got no gradient"
        # float64 throughout and the same terms summed in another order (~1e-15 relative); 1e-10 leaves room for
        # that and nothing else: a wrong term, factor or detach moves a gradient by O(1e-2..1) relative.
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, i=i: f"{what}[{i}]: {m}")


@pytest.mark.parametrize("atac", [False, True], ids=["algorithm-1", "atac-stabilisers"])
def test_armor_update_gradients_match_paper_formula_oracle(atac, monkeypatch):
    """One ``ARMORAgent.update``: the gradients it applies to the critics, to the model and to the actor equal
    those of the losses written from the module docstring:

        critics: sum_i L(f_i) + beta E^w(f_i),  L(f) = mean_{D_M}[f(s, a~pi(s)) - f(s, pi_ref(s))] (pi_ref: its mean),
                 E^w(f) = (1-w) mean[(f(s,a) - r_M - g (1-d) f_target(s'_M, a'))^2] + w mean[(... f(s'_M, a'))^2],
                 with (s'_M, r_M) the model's reparameterised sample held fixed (the other player's);
        model:   beta (sum_i E^w(f_i, M) + lambda E_D(M)) with the critics held fixed, E_D(M) on the real rows:
                 0.5 mean_dims[(mu - (s' - s))^2 / var + log var] + (mu_r - r)^2 / V_max^2, the first term
                 weighed by state_fit_coef instead of lambda when that is set (in the stabilised case)
                 (model_fit_error's stated convention: Gaussian NLL without constants, averaged over the D dims);
        actor:   mean(alpha log pi(a|s) - f1(s, a)) over D_M's states, with the critics just updated,

    where a' ~ pi(s'_M) is a sampled action (no gradient: the policy is not a player of the adversary's game) and
    d = 1 where s'_M leaves the observation bounds. With ATAC's stabilisers (the defaults) f_target is
    min(f1_target, f2_target) for both critics and each backup r + g (1-d) f(.) is clipped to [V_min, V_max]."""
    real, model = _batch64(5, 1), _batch64(5, 2)
    agent = _armor_agent64(0, atac=atac)
    cfg = agent.cfg
    beta, w, gamma, lam = cfg.bellman_coef, cfg.residual_weight, cfg.gamma, cfg.model_fit_coef
    actor0, critic0, target0, model0 = (
        copy.deepcopy(m) for m in (agent.actor, agent.critic, agent.critic_target, agent.dyn.model)
    )
    alpha = agent.log_alpha.detach().exp().clone()
    actor_calls, model_calls = _capture_armor_draws(agent, monkeypatch)

    agent.update(real, model, torch.Generator().manual_seed(3))
    got_critic = [p.grad for p in agent.critic.parameters()]
    got_model = [p.grad for p in agent.dyn.model.parameters()]
    got_actor = [p.grad for p in agent.actor.parameters()]

    s = torch.cat([real.obs, model.obs])  # D_M: the real rows, then the model rows
    a = torch.cat([real.act, model.act])
    [draw] = model_calls
    assert torch.equal(draw["obs"], s) and torch.equal(draw["act"], a)  # M is queried at D_M's (s, a)
    mean, logvar = (x[0] for x in model0(model0.normalize(s, a)))
    y = mean + torch.exp(0.5 * logvar) * draw["noise"]
    s_next, r_m = s + y[:, :D3], y[:, D3]
    done = ((s_next <= -OBS_BOUND) | (s_next >= OBS_BOUND)).any(-1).double()
    assert 0 < done.sum() < len(done)  # both kinds of rows: the (1 - d) factor is exercised
    no_grad_calls = [c for c in actor_calls if not c["grad"]]
    [a_pi] = [c["act"] for c in no_grad_calls if c["obs"].shape == s.shape and torch.equal(c["obs"], s)]
    at_next = [c for c in no_grad_calls if c["obs"].shape == s.shape and torch.allclose(c["obs"], s_next, 0, 1e-12)]
    assert len(at_next) == 1, "a' must be drawn from pi at the model's next states s'_M"
    a_next = at_next[0]["act"]
    a_ref = torch.tanh(agent.reference.dist_params(s)[0]).detach()

    cont = gamma * (1.0 - done)

    lo, hi = VALUE_RANGE if atac else (-math.inf, math.inf)

    def e_w(q, r, nxt):
        f_target = target0(nxt, a_next)
        if atac:
            f_target = torch.minimum(f_target[0], f_target[1]).expand(2, -1)
        td = (q - (r + cont * f_target).clamp(lo, hi)).pow(2).mean(-1)
        residual = (q - (r + cont * critic0(nxt, a_next)).clamp(lo, hi)).pow(2).mean(-1)
        return (1 - w) * td + w * residual  # [2]: per critic

    if atac:  # not vacuous: the clip binds on some backups and not on others, and the twin minimum is a choice
        backups = r_m + cont * critic0(s_next, a_next)
        assert ((backups < lo) | (backups > hi)).any() and ((backups > lo) & (backups < hi)).any()
        assert (target0(s_next, a_next)[0] != target0(s_next, a_next)[1]).all()

    q = critic0(s, a)
    rel = (critic0(s, a_pi) - critic0(s, a_ref)).mean(-1)
    critic_obj = (rel + beta * e_w(q, r_m.detach(), s_next.detach())).sum()
    expected_critic = torch.autograd.grad(critic_obj, list(critic0.parameters()))

    n_real = len(real)
    mu, lv, delta = mean[:n_real], logvar[:n_real], real.next_obs - real.obs
    nll = 0.5 * ((mu[:, :D3] - delta).pow(2) * torch.exp(-lv[:, :D3]) + lv[:, :D3]).mean(-1)
    lam_s = lam if cfg.state_fit_coef is None else cfg.state_fit_coef  # lambda on the state NLL, written out
    fit = (lam_s / lam * nll + (mu[:, D3] - real.rew).pow(2) / V_MAX**2).mean()  # lam * fit: the weighted E_D(M)
    bell_model = e_w(q.detach(), r_m, s_next).sum()
    model_params = list(model0.parameters())
    expected_model = torch.autograd.grad(beta * (bell_model + lam * fit), model_params, retain_graph=True)

    [step_call] = [c for c in actor_calls if c["grad"]]
    assert torch.equal(step_call["obs"], s)  # the actor steps on D_M's states
    expected_actor = _oracle_actor_grad(actor0, agent.critic, alpha, step_call)

    _assert_grads_close(got_critic, expected_critic, "critic")
    _assert_grads_close(got_model, expected_model, "model")
    _assert_grads_close(got_actor, expected_actor, "actor")
    # Not vacuous: the model's gradient has a share from each of its two terms, each far above the tolerance.
    flat = torch.cat([g.flatten() for g in expected_model])
    g_fit = torch.cat([g.flatten() for g in torch.autograd.grad(beta * lam * fit, model_params, retain_graph=True)])
    g_bell = torch.cat([g.flatten() for g in torch.autograd.grad(beta * bell_model, model_params)])
    assert g_fit.norm() > 0.05 * flat.norm() and g_bell.norm() > 0.05 * flat.norm()


def test_armor_actor_step_moves_the_mean_action_towards_higher_f1(monkeypatch):
    """Linear critics with known action slopes: f1 rises with a_0 and falls with a_1 (slope 8), f2 the opposite,
    so a step that followed f2 or min(f1, f2) would go another way. The actor's gradient equals the oracle's, and
    both a small step along it and the update's own Adam step move the policy's mean action tanh(mu(s)) up in
    a_0, down in a_1, and raise f1 at the mean action."""
    real, model = _batch64(7, 11), _batch64(7, 12)
    agent = _armor_agent64(5, critic_hidden=())
    obs_w = torch.randn(2, D3, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    slopes = torch.tensor([[8.0, -8.0], [-8.0, 8.0]], dtype=torch.float64)  # f1: +a_0 - a_1; f2: -a_0 + a_1
    with torch.no_grad():
        agent.critic.net.out.weight.copy_(torch.cat([obs_w, slopes], 1).unsqueeze(-1))
        agent.critic_target.load_state_dict(agent.critic.state_dict())
    actor0 = copy.deepcopy(agent.actor)
    alpha = agent.log_alpha.detach().exp().clone()
    actor_calls, _ = _capture_armor_draws(agent, monkeypatch)
    s = torch.cat([real.obs, model.obs])

    def mean_action(actor):
        with torch.no_grad():
            return torch.tanh(actor.dist_params(s)[0])

    def f1_at_mean(actor):
        with torch.no_grad():
            return agent.critic(s, mean_action(actor))[0].mean()

    agent.update(real, model, torch.Generator().manual_seed(4))
    got = [p.grad for p in agent.actor.parameters()]
    [step_call] = [c for c in actor_calls if c["grad"]]
    _assert_grads_close(got, _oracle_actor_grad(actor0, agent.critic, alpha, step_call), "actor")
    # The critic step moved the slopes by ~fast_lr = 5e-4 only: f1 still rises with a_0 and falls with a_1.
    w1 = agent.critic.net.out.weight[0, D3:, 0]
    assert w1[0] > 7.9 and w1[1] < -7.9

    stepped = copy.deepcopy(actor0)
    with torch.no_grad():
        norm = torch.cat([g.flatten() for g in got]).norm()
        for p, g in zip(stepped.parameters(), got):
            p -= 1e-3 / norm * g  # a small gradient-descent step on the actor loss
    for moved in (stepped, agent.actor):  # the gradient step, and the update's own Adam step (lr 1e-3)
        shift = (mean_action(moved) - mean_action(actor0)).mean(0)
        assert shift[0] > 0 and shift[1] < 0, shift
        assert f1_at_mean(moved) > f1_at_mean(actor0)


# ---------------------------------------------------------------------------------------------------------------
# The adversary's reach (issue 33): next states, termination, the critic stabilisers, the pretraining cache.


def _agent_with(obs_low=None, obs_high=None, real=None, **fields):
    torch.manual_seed(0)
    cfg = replace(_agent().cfg, **fields)
    low = torch.full((4,), -torch.inf) if obs_low is None else obs_low
    high = torch.full((4,), torch.inf) if obs_high is None else obs_high
    return armor.ARMORAgent(
        TanhGaussianActor(4, 2, (16,)), EnsembleDynamics(4, 2, cfg.dynamics), cfg, 10.0, low, high, real, (-2.0, 2.0)
    )


def _state_mean_grad(agent, real, model):
    """Gradient of the model's loss in the output-layer weights of the next-state means (columns 0..D-1)."""
    _, model_loss, _ = agent.losses(real, model, torch.Generator().manual_seed(3))
    model_loss.backward()
    return agent.dyn.model.layers[-1].weight.grad[..., :4]


def test_adversary_gradient_reaches_the_predicted_next_states(monkeypatch):
    """With the fit term off, the model's next-state means are moved by the Bellman term alone: s'_M is a
    reparameterised sample, not a detached or pinned state. Detaching it makes that gradient vanish."""
    real, model = _batch(6, 1), _batch(6, 2)
    grad = _state_mean_grad(_agent_with(model_fit_coef=0.0), real, model)
    assert grad.abs().sum() > 0

    step = armor.ARMORAgent.model_step

    def pinned(self, obs, act, noise):
        next_obs, *rest = step(self, obs, act, noise)
        return (next_obs.detach(), *rest)

    monkeypatch.setattr(armor.ARMORAgent, "model_step", pinned)
    assert _state_mean_grad(_agent_with(model_fit_coef=0.0), real, model).abs().sum() == 0


def test_state_fit_coef_weighs_the_state_nll_alone():
    """``state_fit_coef`` replaces lambda on the state NLL only: the model's fit loss is
    state_fit_coef * nll + lambda * rew_err, and None keeps Algorithm 1's single lambda on both."""
    mean, logvar = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[0.0, 2.0, 5.0]])
    target = torch.tensor([[1.0, 1.0, 0.0]])
    nll, rew = armor.model_fit_terms(mean, logvar, target, v_max=4.0)
    assert nll.item() == pytest.approx(0.5 * ((1.0 + 0.0) + (0.0 + 2.0)) / 2, rel=1e-6)
    assert rew.item() == pytest.approx((2.0 - 0.0) ** 2 / 16.0, rel=1e-6)
    real, model = _batch(6, 1), _batch(6, 2)
    # With lambda = 0 the state weight still applies: the fit term then moves the model on its own.
    weighted = _state_mean_grad(_agent_with(model_fit_coef=0.0, state_fit_coef=5.0), real, model)
    assert not torch.allclose(weighted, _state_mean_grad(_agent_with(model_fit_coef=0.0), real, model))
    same = [_agent_with(model_fit_coef=2.0, state_fit_coef=s) for s in (None, 2.0)]
    losses = [a.losses(real, model, torch.Generator().manual_seed(3))[1] for a in same]
    torch.testing.assert_close(losses[0], losses[1])
    weak = _agent_with(model_fit_coef=2.0, state_fit_coef=1e-3).losses(real, model, torch.Generator().manual_seed(3))
    assert not torch.allclose(weak[1], losses[0])


def test_termination_cuts_the_bootstrap_in_the_adversary_loss():
    """The chosen design: termination is the healthy box at s'_M, not differentiated; a terminal row has no
    bootstrap. A box that every s'_M leaves therefore changes the adversary's loss to the no-bootstrap form, and
    the next-state means then get no Bellman gradient at all (nothing depends on s'_M any more)."""
    real, model = _batch(6, 1), _batch(6, 2)
    open_box = _agent_with(model_fit_coef=0.0)
    shut = _agent_with(model_fit_coef=0.0, obs_low=torch.full((4,), 1e6), obs_high=torch.full((4,), 2e6))
    _, loss_open, _ = open_box.losses(real, model, torch.Generator().manual_seed(3))
    _, loss_shut, _ = shut.losses(real, model, torch.Generator().manual_seed(3))
    assert not torch.allclose(loss_open, loss_shut)
    # By hand for the shut box: beta * sum_i mean_B (f_i(s, a) - r_M)^2 with r_M the model's sampled reward.
    batch = armor.cat_batches(real, model)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        shut.actor(batch.obs, g)
        noise = torch.randn(12, 5, generator=g)
        _, rew, term, _, _ = shut.model_step(batch.obs, batch.act, noise)
        q = shut.critic(batch.obs, batch.act)
    assert term.eq(1).all()
    torch.testing.assert_close(loss_shut, shut.cfg.bellman_coef * (q - rew).pow(2).mean(-1).sum())
    assert _state_mean_grad(shut, real, model).abs().sum() == 0
    assert _state_mean_grad(open_box, real, model).abs().sum() > 0


def test_soft_terminal_by_hand():
    """The smooth box: 1 - prod of sigmoids over the bounded sides; unbounded sides count 1; it tends to the box."""
    low, high = torch.tensor([0.0, -torch.inf]), torch.tensor([2.0, 1.0])
    obs = torch.tensor([[1.0, 0.0], [3.0, 0.5]])
    scale = torch.tensor([0.5, 0.25])
    s = torch.sigmoid
    want = 1 - torch.stack(
        [
            s(torch.tensor(2.0)) * s(torch.tensor(2.0)) * s(torch.tensor(4.0)),
            s(torch.tensor(6.0)) * s(torch.tensor(-2.0)) * s(torch.tensor(2.0)),
        ]
    )
    torch.testing.assert_close(armor.soft_terminal(obs, low, high, scale), want)
    sharp = armor.soft_terminal(obs, low, high, torch.full((2,), 1e-4))
    torch.testing.assert_close(sharp, torch.tensor([0.0, 1.0]))


def test_termination_grad_width_gives_the_adversary_the_box_gradient():
    """With ``termination_grad_width`` the Bellman error keeps the box's 0/1 terminal (the loss's value is
    unchanged) while the next-state means get the smooth box's gradient: at a box edge through the model's
    next states the model's gradient changes; a box far from every s'_M (its smooth gradient ~0) leaves it as is.
    Without the data the width has no scale: ValueError."""
    real, model = _batch(6, 1), _batch(6, 2)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    edge = torch.full((4,), -torch.inf)
    edge[0] = 0.0  # the box's lower side in dimension 0 runs through the data (its mean is ~0)
    hard = _agent_with(model_fit_coef=0.0, obs_low=edge, real=real)
    soft = _agent_with(model_fit_coef=0.0, obs_low=edge, real=real, termination_grad_width=0.5)
    torch.testing.assert_close(hard.losses(real, model, g())[1], soft.losses(real, model, g())[1])
    assert not torch.allclose(_state_mean_grad(hard, real, model), _state_mean_grad(soft, real, model))
    far = torch.full((4,), -1e3)
    hard_far = _agent_with(model_fit_coef=0.0, obs_low=far, real=real)
    soft_far = _agent_with(model_fit_coef=0.0, obs_low=far, real=real, termination_grad_width=0.5)
    torch.testing.assert_close(_state_mean_grad(hard_far, real, model), _state_mean_grad(soft_far, real, model))
    with pytest.raises(ValueError, match="termination_grad_width needs the real data"):
        _agent_with(termination_grad_width=0.5)
    with pytest.raises(ValueError, match="termination_grad_width"):
        replace(_agent().cfg, termination_grad_width=0.0)


def test_weight_norm_projection_holds_after_an_update():
    """Proj_F: after an update every critic layer of every member has Frobenius norm <= the bound (which binds:
    without it the norms exceed it), and the bound leaves biases and the model untouched."""
    bound = 0.5
    free = _agent_with(critic_norm_bound=0.0)
    free.update(_batch(8, 4), _batch(8, 5), torch.Generator().manual_seed(6))
    projected = _agent_with(critic_norm_bound=bound)
    projected.update(_batch(8, 4), _batch(8, 5), torch.Generator().manual_seed(6))
    layers = [*projected.critic.net.hidden, projected.critic.net.out]
    free_layers = [*free.critic.net.hidden, free.critic.net.out]
    for layer, free_layer in zip(layers, free_layers):
        norms = layer.weight.detach().norm(dim=(1, 2))
        assert norms.shape == (2,) and (norms <= bound * (1 + 1e-6)).all()
        assert (free_layer.weight.detach().norm(dim=(1, 2)) > bound).any()
    torch.testing.assert_close(projected.dyn.model.layers[0].weight, free.dyn.model.layers[0].weight)


def test_twin_min_target_and_value_clipping_reach_the_bellman_error():
    """Twin-min: both critics regress on min(f1', f2') (by hand); clipping bounds each backup to [v_min, v_max]."""
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    rew, term = torch.tensor([0.5, -1.0]), torch.tensor([0.0, 0.0])
    q_next = torch.tensor([[3.0, 1.0], [2.0, 4.0]])
    got = armor.bellman_error(q, rew, term, q_next, q_next, gamma=0.5, residual_weight=0.0, v_min=-1.0, v_max=1.5)
    backup = (rew + 0.5 * q_next).clamp(-1.0, 1.5)  # [[1.5, -0.5], [1.5, 1.0]]
    torch.testing.assert_close(got, (q - backup).pow(2).mean(-1))
    real, model = _batch(6, 1), _batch(6, 2)
    plain = _agent_with(twin_min_target=False, clip_value_targets=False)
    twin = _agent_with(twin_min_target=True, clip_value_targets=False)
    _, _, m_plain = plain.losses(real, model, torch.Generator().manual_seed(3))
    _, _, m_twin = twin.losses(real, model, torch.Generator().manual_seed(3))
    assert m_plain["train/bellman_error"] != m_twin["train/bellman_error"]
    clipped = _agent_with(clip_value_targets=True)
    assert clipped.value_range == (-2.0, 2.0) and plain.value_range == (-float("inf"), float("inf"))


def test_sampled_reference_action_changes_the_pessimism_term():
    real, model = _batch(6, 1), _batch(6, 2)
    means = _agent_with().losses(real, model, torch.Generator().manual_seed(3))[2]["train/relative_pessimism"]
    sampled = _agent_with(reference_action="sample").losses(real, model, torch.Generator().manual_seed(3))[2]
    assert means != sampled["train/relative_pessimism"]


def test_pretrained_critics_are_cached_and_continue_exactly(tmp_path):
    """``prepare`` writes the pretrained critics and the generator state to the cache; a second agent built the
    same way loads them instead of pretraining, ending with the same critics and generator state."""
    g = torch.Generator().manual_seed(0)
    n = 500
    real = Batch(
        torch.randn(n, 4, generator=g),
        torch.rand(n, 2, generator=g) * 2 - 1,
        torch.randn(n, generator=g),
        torch.randn(n, 4, generator=g),
        torch.zeros(n),
    )
    cfg = replace(_agent().cfg, batch_size=32, critic_pretrain_updates=50, critic_pretrain_cache=str(tmp_path / "c"))
    bounds = (torch.full((4,), -torch.inf), torch.full((4,), torch.inf))
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        ref = TanhGaussianActor(4, 2, (16,))
        agent = armor.ARMORAgent(ref, EnsembleDynamics(4, 2, cfg.dynamics), cfg, 10.0, *bounds, real=real)
        gen = torch.Generator().manual_seed(5)
        metrics = agent.prepare(gen)
        assert agent.critics_pretrained and "pretrain/bellman_error" in metrics
        states.append((agent.critic.state_dict(), agent.critic_target.state_dict(), gen.get_state()))
        assert agent.prepare(gen) == {}
    assert len(list((tmp_path / "c").glob("*.pt"))) == 1
    for a, b in zip(states[0][:2], states[1][:2]):
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert torch.equal(states[0][2], states[1][2])
