"""SAC: the critic target against a hand computation, and learning on a tiny bandit."""

import math

import pytest
import torch

from engine.batch import Batch
from engine.nets import EnsembleCritic, TanhGaussianActor, adam_step, make_adam
from engine.sac import SAC, SACConfig, temperature_loss


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


def _reference_update(agent: SAC, opts, batch: Batch, g: torch.Generator) -> None:
    """SAC's update written plainly: baddbmm for every critic layer, default Adam (``opts``: actor,
    critic, alpha)."""
    actor_opt, critic_opt, alpha_opt = opts

    def q(critic, obs, act):
        layers = [*critic.net.hidden, critic.net.out]
        x = torch.cat([obs, act], -1).expand(len(layers[0].weight), -1, -1)
        for i, layer in enumerate(layers):
            x = torch.baddbmm(layer.bias, x, layer.weight)
            x = torch.relu(x) if i < len(layers) - 1 else x
        return x.squeeze(-1)

    with torch.no_grad():
        next_act, next_logp = agent.actor(batch.next_obs, g)
        v = q(agent.critic_target, batch.next_obs, next_act).min(0).values - agent.log_alpha.exp() * next_logp
        target = batch.rew + agent.cfg.gamma * (1 - batch.terminal) * v
    critic_loss = (q(agent.critic, batch.obs, batch.act) - target).pow(2).mean(1).sum()
    critic_opt.zero_grad()
    critic_loss.backward()
    critic_opt.step()
    act, logp = agent.actor(batch.obs, g)
    actor_loss = (agent.log_alpha.exp().detach() * logp - q(agent.critic, batch.obs, act).min(0).values).mean()
    actor_opt.zero_grad()
    actor_loss.backward()
    actor_opt.step()
    alpha_loss = -(agent.log_alpha * (logp.detach() + agent.target_entropy)).mean()
    alpha_opt.zero_grad()
    alpha_loss.backward()
    alpha_opt.step()
    with torch.no_grad():
        for t, s in zip(agent.critic_target.parameters(), agent.critic.parameters()):
            t.mul_(1 - agent.cfg.tau).add_(agent.cfg.tau * s)


def test_update_matches_plain_reference():
    """The fast update (fused Adam through ``adam_step``, multiply-and-sum Q head) takes the same
    steps as the plain reference, on odd sizes."""
    torch.manual_seed(5)
    cfg = SACConfig(hidden_dims=(33, 7), init_alpha=0.5)
    fast = SAC(5, 3, cfg)
    ref = SAC(5, 3, cfg)
    ref.load_state_dict(fast.state_dict())
    opts = [torch.optim.Adam(p, lr=3e-4) for p in (ref.actor.parameters(), ref.critic.parameters(), [ref.log_alpha])]
    g_fast, g_ref, g_data = (torch.Generator().manual_seed(s) for s in (6, 6, 7))
    for _ in range(10):
        b = Batch(
            torch.randn(37, 5, generator=g_data),
            torch.rand(37, 3, generator=g_data) * 2 - 1,
            torch.randn(37, generator=g_data),
            torch.randn(37, 5, generator=g_data),
            (torch.rand(37, generator=g_data) < 0.2).float(),
        )
        fast.update(b, g_fast)
        _reference_update(ref, opts, b, g_ref)
    for net in ("actor", "critic", "critic_target"):
        for (name, a), b in zip(getattr(fast, net).named_parameters(), getattr(ref, net).parameters()):
            # Sums in another order (Q head, fused Adam): float32 rounding through 10 Adam steps of
            # lr 3e-4 stays below 1e-6, far under one step.
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"{net}.{name}")
    torch.testing.assert_close(fast.log_alpha, ref.log_alpha, rtol=0, atol=1e-7)


def test_adam_step_is_opt_step():
    """The lean fused step gives bit-identical parameters and state to ``opt.step()``, with param
    groups, weight decay, a 0-d parameter and a parameter left without gradient."""
    torch.manual_seed(8)
    a = [torch.nn.Parameter(torch.randn(s)) for s in ((3, 7, 5), (3, 1, 5), (5,), ())]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_a = make_adam([{"params": a[:2], "weight_decay": 0.1}, {"params": a[2:]}], 1e-2)
    opt_b = make_adam([{"params": b[:2], "weight_decay": 0.1}, {"params": b[2:]}], 1e-2)
    for step in range(4):
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        if step == 2:
            a[2].grad = b[2].grad = None
        opt_a.step()
        adam_step(opt_b)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        assert all(torch.equal(opt_a.state[p][k], opt_b.state[q][k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_adam_step_falls_back_to_opt_step_without_the_private_kernel(monkeypatch):
    """``torch._fused_adam_`` is private: on a torch without it, ``adam_step`` takes ``opt.step()``."""
    from engine import nets

    class TorchWithoutFusedAdam:
        def __getattr__(self, name):
            if name == "_fused_adam_":
                raise AttributeError(name)
            return getattr(torch, name)

    monkeypatch.setattr(nets, "torch", TorchWithoutFusedAdam())
    torch.manual_seed(9)
    a = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_a, opt_b = make_adam(a, 1e-2), make_adam(b, 1e-2)
    calls = []
    step = opt_b.step
    opt_b.step = lambda: (calls.append(1), step())[1]
    for _ in range(3):
        for p, q in zip(a, b):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        opt_a.step()
        adam_step(opt_b)
    assert len(calls) == 3  # every step went through opt.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


def test_temperature_loss_hand_computation_and_direction():
    log_alpha = torch.tensor(0.3, requires_grad=True)
    log_prob = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    loss = temperature_loss(log_alpha, log_prob, target_entropy=-2.0)
    assert loss.item() == pytest.approx(-0.3 * ((1.0 - 2.0) + (2.0 - 2.0) + (4.0 - 2.0)) / 3)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(-(1.0 / 3))
    assert log_prob.grad is None  # the policy gets nothing from the temperature's loss
    # Entropy -mean(log_prob) = -7/3 is below the target -2: a gradient step raises alpha.
    assert log_alpha.grad.item() < 0


def test_critic_members_slice_is_those_critics_alone():
    torch.manual_seed(0)
    critic = EnsembleCritic(5, 2, (16, 16), num_critics=3)
    obs, act = torch.randn(7, 5), torch.rand(7, 2) * 2 - 1
    full = critic(obs, act)  # [3, 7]
    torch.testing.assert_close(critic(obs, act, members=slice(0, 1)), full[:1])
    torch.testing.assert_close(critic(obs, act, members=slice(1, 3)), full[1:])
    # Only the chosen critic's weights get a gradient.
    critic(obs, act, members=slice(0, 1)).sum().backward()
    w = critic.net.hidden[0].weight.grad
    assert w[0].abs().sum() > 0 and torch.all(w[1:] == 0)


def test_ensemble_mlp_in_place_relu_matches_out_of_place():
    """EnsembleMLP's ReLU runs in place on each layer's fresh output; its values and the gradients in the input
    and in every weight equal those of the out-of-place ``nn.ReLU`` composition, bit for bit."""
    from engine.nets import EnsembleMLP

    torch.manual_seed(0)
    net = EnsembleMLP(2, 5, 1, (16, 16))
    x = torch.randn(2, 9, 5, requires_grad=True)

    def out_of_place(x):
        h = x
        for layer in net.hidden:
            h = torch.nn.functional.relu(layer(h))
        return net.out(h)

    grads = []
    for fn in (net, out_of_place):
        y = fn(x)
        g = torch.autograd.grad(y.pow(2).sum(), [x, *net.parameters()])
        grads.append((y.detach(), g))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Some units are off (so the in-place mask matters) and some gradient reaches the input.
    assert (net.hidden[0](x) < 0).any() and grads[0][1][0].abs().sum() > 0


def test_cosine_actor_schedule_is_cosine_annealing_stepped_once_per_block():
    """``SAC.schedule_lr`` gives, for any update in block k, the rate torch's CosineAnnealingLR (T_max = the blocks
    of the run) has after k steps: OfflineRL-Kit's per-epoch schedule. ``constant`` never changes the rate."""
    cfg = SACConfig(hidden_dims=(8,), actor_lr=1e-4, actor_lr_schedule="cosine")
    sac = SAC(3, 2, cfg)
    reference = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-4)
    annealing = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=200)
    for k in range(200):
        for step in (k * 1000, k * 1000 + 999):
            sac.schedule_lr(step, 200_000, 1000)
            assert sac.actor_opt.param_groups[0]["lr"] == pytest.approx(reference.param_groups[0]["lr"], abs=1e-15)
        reference.step()  # no gradient: a no-op step, in the order torch expects before the scheduler's
        annealing.step()
    assert sac.critic_opt.param_groups[0]["lr"] == cfg.critic_lr and sac.alpha_opt.param_groups[0]["lr"] == cfg.alpha_lr
    constant = SAC(3, 2, SACConfig(hidden_dims=(8,)))
    constant.schedule_lr(150_000, 200_000, 1000)
    assert constant.actor_opt.param_groups[0]["lr"] == 3e-4
