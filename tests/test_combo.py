"""COMBO: the conservative term against hand computations, a smoke run, presets and bad config."""

import copy
import json
import math
from dataclasses import replace

import pytest
import torch

from algos import combo
from engine.batch import Batch, cat_batches
from engine.cli import parse_cli
from engine.data import DATASETS
from engine.sac import SAC, SACConfig
from tests.conftest import TINY_RUN, tiny_rollout


def test_conservative_penalty_hand_computation():
    # One critic, two states, R=1, A=2: log(0.5^2) = -2 log 2, so uniform samples gain +2 log 2.
    q_rand = torch.tensor([[[1.0], [0.0]]])
    q_pi = torch.tensor([[[2.0], [-1.0]]])
    logp_pi = torch.tensor([[0.5], [-0.5]])
    q_next = torch.tensor([[[0.5], [3.0]]])
    logp_next = torch.tensor([[1.0], [2.0]])
    q_data = torch.tensor([[4.0, 2.0, 0.0]])
    got = combo.conservative_penalty(q_rand, q_pi, logp_pi, q_next, logp_next, q_data, act_dim=2)
    s1 = math.log(math.exp(1.0 + 2 * math.log(2)) + math.exp(2.0 - 0.5) + math.exp(0.5 - 1.0))
    s2 = math.log(math.exp(0.0 + 2 * math.log(2)) + math.exp(-1.0 + 0.5) + math.exp(3.0 - 2.0))
    expected = (s1 + s2) / 2 - (4.0 + 2.0 + 0.0) / 3
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Temperature T: T * logsumexp(x / T); T -> 0 tends to the max of the weighted samples.
    cold = combo.conservative_penalty(q_rand, q_pi, logp_pi, q_next, logp_next, q_data, 2, temperature=1e-3)
    hard = (max(1.0 + 2 * math.log(2), 1.5, -0.5) + max(2 * math.log(2), -0.5, 1.0)) / 2 - 2.0
    assert cold.item() == pytest.approx(hard, abs=1e-2)


def test_conservative_term_on_a_hand_built_critic():
    """Linear critics Q_e(s, a) = w_e . [s, a] + b_e, checked with explicit loops over the same actions."""
    torch.manual_seed(0)
    d, a, r, b = 3, 2, 4, 5
    agent = SAC(d, a, SACConfig(hidden_dims=()))
    w = torch.randn(2, d + a, 1)
    bias = torch.randn(2, 1, 1)
    with torch.no_grad():
        agent.critic.net.out.weight.copy_(w)
        agent.critic.net.out.bias.copy_(bias)
    obs, next_obs = torch.randn(b, d), torch.randn(b, d)
    q_rand, q_pi, logp_pi, q_next, logp_next = combo.sample_conservative_q(
        agent, obs, next_obs, r, torch.Generator().manual_seed(7)
    )
    # Redraw the same actions with the same generator seed, in the same order.
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        a_pi, lp = agent.actor(obs.repeat_interleave(r, 0), g)
        a_nx, lpn = agent.actor(next_obs.repeat_interleave(r, 0), g)
    a_rand = torch.rand(a_pi.shape, generator=g) * 2 - 1
    for e in range(2):
        for i in range(b):
            for j in range(r):
                row = i * r + j
                for acts, qs in ((a_rand, q_rand), (a_pi, q_pi), (a_nx, q_next)):
                    hand = sum(float(w[e, k, 0]) * float(x) for k, x in enumerate(torch.cat([obs[i], acts[row]])))
                    assert qs[e, i, j].item() == pytest.approx(hand + float(bias[e, 0, 0]), abs=1e-5)
    torch.testing.assert_close(logp_pi, lp.reshape(b, r))
    torch.testing.assert_close(logp_next, lpn.reshape(b, r))
    assert (a_rand.abs() <= 1).all()


def test_combo_update_trains_critic_with_conservative_term():
    torch.manual_seed(1)
    agent = SAC(3, 2, SACConfig(hidden_dims=(16,), backup_entropy=False))
    g = torch.Generator().manual_seed(1)

    def batch(n):
        return Batch(
            torch.randn(n, 3, generator=g),
            torch.rand(n, 2, generator=g) * 2 - 1,
            torch.randn(n, generator=g),
            torch.randn(n, 3, generator=g),
            torch.zeros(n),
        )

    cfg = combo.Config(conservative_coef=5.0)
    before = [p.clone() for p in agent.critic.parameters()]
    metrics = combo.combo_update(agent, batch(8), batch(8), g, cfg)
    assert "train/conservative_term" in metrics and torch.isfinite(metrics["train/conservative_term"])
    assert any(not torch.equal(p, q) for p, q in zip(before, agent.critic.parameters()))


def test_smoke_run_writes_a_valid_summary(tiny_dataset, tmp_path):
    cfg = combo.Config(dataset=tiny_dataset, out=str(tmp_path / "run"), rollout=tiny_rollout(), **TINY_RUN)
    combo.train(replace(cfg, num_repeat_actions=2))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["algo"] == "combo" and summary["num_updates"] == 40
    for key in ("normalized_score", "normalized_score_std", "behavior_normalized_score", "wall_s"):
        assert isinstance(summary[key], float), key
    assert "train/conservative_term" in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]


def test_presets_and_bad_config():
    assert set(DATASETS) <= set(combo.PRESETS)
    assert combo.PRESETS["simloop/walker2d/medium-v0"].rollout.horizon == 1
    assert combo.PRESETS["simloop/hopper/medium-v0"].conservative_coef == 5.0
    with pytest.raises(ValueError, match="conservative_coef=-1"):
        combo.Config(conservative_coef=-1.0)
    with pytest.raises(ValueError, match="no reward penalty"):
        combo.Config(rollout=tiny_rollout(penalty_coef=1.0))
    with pytest.raises(ValueError, match="real_ratio"):
        combo.Config(real_ratio=1.0)
    with pytest.raises(ValueError, match="unknown preset 'halfcheetah'; valid presets: fast"):
        parse_cli(["--preset", "halfcheetah"], combo.Config, combo.PRESETS, combo.BUDGETS, "combo")


# ---------------------------------------------------------------------------------------------------------------
# Wiring: one combo_update step against an oracle written here from COMBO's formulas (not from conservative_penalty /
# sample_conservative_q), and the beta = 0 reduction to a plain SAC critic step.
# ---------------------------------------------------------------------------------------------------------------

D_OBS, D_ACT = 3, 2


def _sac(seed: int, dtype=torch.float64) -> SAC:
    """A small SAC agent (deterministic backup, as COMBO) initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agent = SAC(D_OBS, D_ACT, SACConfig(hidden_dims=(16, 16), backup_entropy=False))
    for net in (agent.actor, agent.critic, agent.critic_target):
        net.to(dtype)  # in place (param.data swapped): the optimisers keep pointing at the same parameters
    return agent


def _rand_batch(n: int, g: torch.Generator, dtype=torch.float64) -> Batch:
    """Fresh random transitions with some terminal rows (so the (1 - d) of the target is exercised)."""
    return Batch(
        torch.randn(n, D_OBS, generator=g, dtype=dtype),
        torch.rand(n, D_ACT, generator=g, dtype=dtype) * 2 - 1,
        torch.randn(n, generator=g, dtype=dtype),
        torch.randn(n, D_OBS, generator=g, dtype=dtype),
        (torch.rand(n, generator=g) < 0.3).to(dtype),
    )


def _record_calls(module: torch.nn.Module, calls: list) -> None:
    """Record every call of ``module`` as ``(inputs, outputs, weights_trainable)``, detached copies."""

    def hook(mod, args, kwargs, out):
        inputs = [*args, *kwargs.values()]
        outs = out if isinstance(out, tuple) else (out,)
        calls.append(
            (
                [x.detach().clone() for x in inputs if isinstance(x, torch.Tensor)],
                [y.detach().clone() for y in outs],
                next(mod.parameters()).requires_grad,
            )
        )

    module.register_forward_hook(hook, with_kwargs=True)


def _rows_equal(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x: [N, K], y: [M, K] -> [N, M]`` bool, True where row n of x equals row m of y exactly (values are copied,
    never recomputed, between the draw and the critic call, so exact equality is the right match)."""
    return (x[:, None, :] == y[None, :, :]).all(-1)


def _conservative_samples(actor_calls, critic_calls, batch: Batch, rho: Batch, r: int):
    """Per rho state, the 3R actions the critic was evaluated on in the conservative term, with the log-density
    they are weighted by, captured from the agent's own actor and critic calls during one combo_update.

    Approach: every (state, action) pair the live critic saw while its weights were trainable, except the dataset
    pairs of the Bellman term, is a conservative sample. Its action is matched exactly against every action the
    actor returned (with the state it was drawn at and its log-prob); actions the actor never returned are the
    uniform ones. This does not depend on the order or layout of the draws, only on what was evaluated.
    Returns ``acts [|rho|, 3R, A]`` and ``log_w [|rho|, 3R]`` (the log-density each sample is divided by), and
    asserts the wiring: all samples at the rho states (s, not s'), R uniform + R pi(s) + R pi(s') per state.
    """
    obs = torch.cat([c[0][0] for c in critic_calls if c[2]])
    act = torch.cat([c[0][1] for c in critic_calls if c[2]])
    data_pair = (_rows_equal(obs, batch.obs) & _rows_equal(act, batch.act)).any(1)
    obs, act = obs[~data_pair], act[~data_pair]
    assert len(obs) == 3 * r * len(rho), "the conservative term must evaluate 3R actions per rho state"
    at_rho = _rows_equal(obs, rho.obs)  # [N, |rho|]
    assert (at_rho.sum(1) == 1).all(), "every conservative sample must be evaluated at a rho state s"
    a_in = torch.cat([c[0][0] for c in actor_calls])  # states the actor drew at
    a_out = torch.cat([c[1][0] for c in actor_calls])
    a_logp = torch.cat([c[1][1] for c in actor_calls])
    from_actor = _rows_equal(act, a_out)  # [N, M]
    assert (from_actor.sum(1) <= 1).all()
    log_uniform = D_ACT * math.log(0.5)  # uniform density 0.5^A on [-1, 1]^A
    acts, log_w = [], []
    for i in range(len(rho)):
        rows = at_rho[:, i]
        kinds = {"uniform": [], "pi(s)": [], "pi(s')": []}
        for n in rows.nonzero().flatten().tolist():
            src = from_actor[n].nonzero().flatten()
            if len(src) == 0:
                assert (act[n].abs() <= 1).all()
                kinds["uniform"].append((act[n], log_uniform))
            elif torch.equal(a_in[src[0]], rho.obs[i]):
                kinds["pi(s)"].append((act[n], float(a_logp[src[0]])))
            else:
                assert torch.equal(a_in[src[0]], rho.next_obs[i]), "policy action drawn at neither s nor s' of its row"
                kinds["pi(s')"].append((act[n], float(a_logp[src[0]])))
        assert {k: len(v) for k, v in kinds.items()} == {"uniform": r, "pi(s)": r, "pi(s')": r}, i
        samples = [x for v in kinds.values() for x in v]
        acts.append(torch.stack([a for a, _ in samples]))
        log_w.append(torch.tensor([lw for _, lw in samples], dtype=act.dtype))
    return torch.stack(acts), torch.stack(log_w)


@pytest.mark.parametrize("rho_states", ["model", "mix"])
def test_combo_critic_gradient_is_bellman_plus_beta_conservative_oracle(rho_states):
    """The gradient one combo_update applies to the critics equals d/dtheta [Bellman loss on d_f (SAC's critic loss
    on real + model rows, target r + gamma (1 - d) min_i Q'_i(s', a'))] + beta d/dtheta [sum over critics of
    T * mean_{s in rho} log sum_{3R samples} exp((Q(s, a) - log density(a)) / T) - mean_{(s, a) in real rows} Q(s, a)],
    everything written here from the formulas in algos/combo.py's docstring, in float64."""
    g = torch.Generator().manual_seed(101)
    real, model = _rand_batch(5, g), _rand_batch(7, g)  # different, odd sizes: a swapped slice shows
    batch = cat_batches(real, model)
    rho = model if rho_states == "model" else batch
    r, beta, temp, gamma = 3, 1.7, 0.6, 0.99  # non-default beta and T: a dropped factor shows
    cfg = combo.Config(conservative_coef=beta, num_repeat_actions=r, temperature=temp, rho_states=rho_states)
    agent = _sac(3)
    assert agent.cfg.gamma == gamma and not agent.cfg.backup_entropy
    critic0, target0 = copy.deepcopy(agent.critic), copy.deepcopy(agent.critic_target)  # weights before the step
    actor_calls, critic_calls, target_calls = [], [], []
    _record_calls(agent.actor, actor_calls)
    _record_calls(agent.critic, critic_calls)
    _record_calls(agent.critic_target, target_calls)

    combo.combo_update(agent, real, model, torch.Generator().manual_seed(5), cfg)
    got = [p.grad.clone() for p in agent.critic.parameters()]

    # The Bellman target: the target critics' (s', a') pairs, a' drawn by the actor at s' (captured, not redrawn).
    [(t_in, _, _)] = target_calls
    torch.testing.assert_close(t_in[0], batch.next_obs, rtol=0, atol=0)
    a_next = t_in[1]
    assert _rows_equal(a_next, torch.cat([c[1][0] for c in actor_calls])).any(1).all()
    with torch.no_grad():
        y = batch.rew + gamma * (1 - batch.terminal) * target0(batch.next_obs, a_next).min(0).values
    acts, log_w = _conservative_samples(actor_calls, critic_calls, batch, rho, r)

    params = list(critic0.parameters())
    q = critic0(batch.obs, batch.act)  # [2, B]
    bellman = (q - y).pow(2).mean(1).sum()
    n_rho = len(rho)
    q_samples = critic0(rho.obs.repeat_interleave(3 * r, 0), acts.reshape(n_rho * 3 * r, D_ACT)).reshape(2, n_rho, -1)
    lse = temp * torch.logsumexp((q_samples - log_w) / temp, dim=-1)  # [2, |rho|]
    push_down = lse.mean(-1)

    def conservative(push_up_rows):
        return (push_down - q[:, push_up_rows].mean(-1)).sum()

    num_real = len(real)
    g_bell = torch.autograd.grad(bellman, params, retain_graph=True)
    g_cons = torch.autograd.grad(conservative(slice(0, num_real)), params, retain_graph=True)
    expected = [gb + beta * gc for gb, gc in zip(g_bell, g_cons)]
    # float64 throughout, the same terms summed in another order: ~1e-15 relative; 1e-10 leaves room for that and
    # nothing else (a wrong row slice, a missing beta or T moves the gradient by O(1) relative, checked below).
    for e, w in zip(got, expected):
        torch.testing.assert_close(e, w, rtol=1e-10, atol=1e-12)

    def flat(grads):
        return torch.cat([x.flatten() for x in grads])

    # Not vacuous: the conservative term is a large part of the gradient, and pushing up other rows than the real
    # ones (all of d_f, or the model rows) would give a gradient far outside the tolerance.
    assert (beta * flat(g_cons)).norm() > 0.1 * flat(g_bell).norm()
    for wrong_rows in (slice(None), slice(num_real, None)):
        g_wrong = torch.autograd.grad(conservative(wrong_rows), params, retain_graph=True)
        wrong = flat([gb + beta * gc for gb, gc in zip(g_bell, g_wrong)])
        assert (wrong - flat(got)).norm() > 1e-3 * flat(got).norm()


def test_combo_update_with_zero_beta_is_a_plain_sac_critic_step():
    """beta = 0: the conservative term is still computed but enters as 0 * term, whose gradient is exactly zero, and
    it draws from the generator only after the Bellman target's draw. So the critic weights after one combo_update
    equal, bit for bit, those after one SAC.update_critic on the concatenated batch from the same generator state
    (same ops in the same order on the same numbers; adding exact zeros to a gradient changes no bit). float32 as in
    training."""
    g = torch.Generator().manual_seed(202)
    real, model = _rand_batch(9, g, torch.float32), _rand_batch(7, g, torch.float32)
    combo_agent, plain, beta_agent = (_sac(4, torch.float32) for _ in range(3))
    before = [p.clone() for p in plain.critic.parameters()]
    cfg = combo.Config(conservative_coef=0.0, num_repeat_actions=3)
    combo.combo_update(combo_agent, real, model, torch.Generator().manual_seed(9), cfg)
    plain.update_critic(cat_batches(real, model), generator=torch.Generator().manual_seed(9))
    for a, b, p0 in zip(combo_agent.critic.parameters(), plain.critic.parameters(), before):
        assert torch.equal(a, b)
        assert not torch.equal(a, p0)  # the step moved the weights
    # The same step with beta > 0 moves the critics elsewhere: the comparison above can tell the two apart.
    combo.combo_update(beta_agent, real, model, torch.Generator().manual_seed(9), replace(cfg, conservative_coef=1.0))
    assert any(not torch.equal(a, b) for a, b in zip(beta_agent.critic.parameters(), plain.critic.parameters()))


def test_the_two_log_sum_exp_forms_by_hand():
    """bench.combo_lse_forms: with one repeat the two forms coincide; with a sample far above the rest ours puts
    nearly all the push-down on it and the per-repeat form at most 1/R."""
    from bench.combo_lse_forms import push_down_shares

    one = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # E=1, B=1, R=1
    s = push_down_shares(one)
    assert s["lse_ours"] == pytest.approx(s["lse_peer"]) == pytest.approx(math.log(math.e + math.e**2 + math.e**3))
    assert s["top1_ours"] == pytest.approx(s["top1_peer"]) and s["top3_ours"] == pytest.approx(1.0)
    w = torch.zeros(2, 3, 5, 3)
    w[..., 2, 1] = 50.0  # one pi(s) sample per state dominates
    s = push_down_shares(w)
    assert s["top1_ours"] == pytest.approx(1.0, abs=1e-6) and s["top1_peer"] == pytest.approx(1 / 5, abs=1e-6)
    assert s["top_pi_s"] == 1.0 and s["top_uniform"] == s["top_pi_next"] == 0.0
    assert s["lse_ours"] == pytest.approx(50.0, abs=1e-6)
    assert s["lse_peer"] == pytest.approx((50.0 + 4 * math.log(3)) / 5, abs=1e-5)
