"""SAC: the critic target against a hand computation, and learning on a tiny bandit."""

import math

import torch

from engine.buffer import Batch
from engine.nets import TanhGaussianActor
from engine.sac import SAC, SACConfig


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(0)
    actor = TanhGaussianActor(5, 3, (16,))
    obs = torch.randn(9, 5)
    g = torch.Generator().manual_seed(1)
    act, logp = actor(obs, g)
    mu, log_std = actor.dist_params(obs)
    u = torch.atanh(act.clamp(-1 + 1e-6, 1 - 1e-6))
    base = torch.distributions.Normal(mu, log_std.exp()).log_prob(u).sum(-1)
    expected = base - torch.log(1 - act.pow(2)).sum(-1)
    # atanh of float32 actions near +-1 loses digits: 1e-3 absolute on log-densities of order 1-10.
    torch.testing.assert_close(logp, expected, rtol=1e-3, atol=1e-3)


def test_critic_target_is_the_soft_bellman_backup():
    torch.manual_seed(1)
    agent = SAC(4, 2, SACConfig(hidden_dims=(8,), gamma=0.9, init_alpha=0.3))
    b = Batch(
        torch.randn(6, 4),
        torch.rand(6, 2) * 2 - 1,
        torch.randn(6),
        torch.randn(6, 4),
        torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]),
    )
    target = agent.critic_target_value(b, torch.Generator().manual_seed(3))
    act, logp = agent.actor(b.next_obs, torch.Generator().manual_seed(3))
    q = agent.critic_target(b.next_obs, act)  # [2, B]
    expected = b.rew + 0.9 * (1 - b.terminal) * (torch.minimum(q[0], q[1]) - 0.3 * logp)
    torch.testing.assert_close(target, expected.detach(), rtol=1e-6, atol=1e-6)


def test_learns_a_contextual_bandit():
    """One-step episodes with reward -||a - a*(s)||^2: the greedy action must approach a*(s)."""
    torch.manual_seed(2)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    w = torch.randn(3, 2, generator=g)
    best = lambda o: 0.8 * torch.tanh(o @ w)  # noqa: E731
    agent = SAC(3, 2, SACConfig(hidden_dims=(64, 64), actor_lr=1e-3, critic_lr=1e-3, init_alpha=0.05))
    for _ in range(1500):
        obs = torch.randn(128, 3, generator=g)
        act = torch.rand(128, 2, generator=g) * 2 - 1
        rew = -(act - best(obs)).pow(2).sum(-1)
        agent.update(Batch(obs, act, rew, obs, torch.ones(128)), g)
    test = torch.randn(200, 3, generator=g)
    err = (agent.actor.act(test) - best(test)).pow(2).sum(-1).mean()
    # A uniform-random action has error ~1.1 here; the entropy bonus keeps the mean a bit off.
    assert err < 0.05, f"mean squared action error {err:.3f}"
    assert math.isfinite(agent.log_alpha.item())
