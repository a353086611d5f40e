"""kernels.rollout_step: the reference against a per-member, per-row hand computation, and the
dispatch/validation behaviour."""

import math

import pytest
import torch
from torch.nn import functional as F

from kernels import EnsembleParams, rollout_step
from kernels.rollout_step import BACKENDS


def hand_step(p: EnsembleParams, obs, act, noise, member, lam, low, high, kind):
    """The math of the module docstring written with explicit Python loops over members and rows."""
    n, d = obs.shape
    outs = []
    for e in range(p.num_members):
        h = (torch.cat([obs, act], -1) - p.in_mean) / p.in_std
        for i, (w, b) in enumerate(zip(p.weights, p.biases)):
            h = h @ w[e] + b[e]
            if i < len(p.weights) - 1:
                h = h * torch.sigmoid(h)
        mean, raw = h[:, : d + 1], h[:, d + 1 :]
        lv = p.max_logvar - F.softplus(p.max_logvar - raw)
        lv = p.min_logvar + F.softplus(lv - p.min_logvar)
        outs.append((mean, torch.exp(0.5 * lv)))
    means = torch.stack([m for m, _ in outs])
    stds = torch.stack([s for _, s in outs])
    next_obs, rew, unc, term = [], [], [], []
    for r in range(n):
        if kind == "aleatoric":
            u = max(float(torch.linalg.norm(stds[e, r])) for e in range(p.num_members))
        else:
            mbar = means[:, r].mean(0)
            u = max(float(torch.linalg.norm(means[e, r] - mbar)) for e in range(p.num_members))
        m = int(member[r])
        y = means[m, r] + stds[m, r] * noise[r]
        nxt = obs[r] + y[:d]
        next_obs.append(nxt)
        rew.append(float(y[d]) - lam * u)
        unc.append(u)
        healthy = bool(((nxt > low) & (nxt < high)).all())
        term.append(not healthy)
    return torch.stack(next_obs), torch.tensor(rew), torch.tensor(unc), torch.tensor(term)


@pytest.mark.parametrize("n,e,d,a,k", [(1, 1, 11, 3, 64), (7, 5, 17, 6, 200), (33, 7, 11, 3, 64)])
@pytest.mark.parametrize("kind", ["aleatoric", "disagreement"])
def test_reference_matches_hand_computation(n, e, d, a, k, kind):
    g = torch.Generator().manual_seed(n * 100 + e)
    p = EnsembleParams.random(e, d, a, k, num_layers=3, seed=n + e, num_elites=max(1, e - 2))
    # Wider log-variance bounds than the init so the soft clamp is exercised on both sides.
    p = EnsembleParams(
        p.weights,
        p.biases,
        p.in_mean,
        p.in_std,
        torch.randn(d + 1, generator=g),
        torch.randn(d + 1, generator=g) - 4.0,
        p.elites,
    )
    obs = torch.randn(n, d, generator=g)
    act = torch.rand(n, a, generator=g) * 2 - 1
    noise = torch.randn(n, d + 1, generator=g)
    member = torch.randint(e, (n,), generator=g)
    low = torch.full((d,), -2.5)
    high = torch.full((d,), 2.5)
    out = rollout_step(p, obs, act, noise, member, 0.7, low, high, kind, backend="reference")
    ref = hand_step(p, obs, act, noise, member, 0.7, low, high, kind)
    # float32 with a different summation order (batched matmul vs row loops): ~1e-6 relative.
    torch.testing.assert_close(out.next_obs, ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.reward, ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.uncertainty, ref[2], rtol=1e-5, atol=1e-5)
    assert torch.equal(out.terminal, ref[3])


def test_penalty_is_linear_in_lambda():
    p = EnsembleParams.random(5, 11, 3, 64, num_layers=2, seed=3)
    g = torch.Generator().manual_seed(1)
    args = (
        torch.randn(13, 11, generator=g),
        torch.rand(13, 3, generator=g),
        torch.randn(13, 12, generator=g),
        torch.randint(5, (13,), generator=g),
    )
    r0 = rollout_step(p, *args, penalty_coef=0.0)
    r2 = rollout_step(p, *args, penalty_coef=2.0)
    torch.testing.assert_close(r0.reward - r2.reward, 2.0 * r0.uncertainty, rtol=1e-5, atol=1e-5)
    assert not r0.terminal.any()  # unbounded healthy box: only non-finite rows terminate


def test_nonfinite_rows_are_terminal_and_safe():
    p = EnsembleParams.random(3, 11, 3, 64, num_layers=2, seed=4)
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(7, 11, generator=g)
    obs[2, 5] = math.nan
    obs[4, 0] = math.inf
    out = rollout_step(
        p,
        obs,
        torch.rand(7, 3, generator=g),
        torch.randn(7, 12, generator=g),
        torch.randint(3, (7,), generator=g),
        penalty_coef=1.0,
    )
    bad = torch.zeros(7, dtype=torch.bool)
    bad[[2, 4]] = True
    assert torch.equal(out.terminal, bad)
    assert torch.isfinite(out.next_obs).all() and torch.isfinite(out.reward).all()
    assert torch.isinf(out.uncertainty[bad]).all() and torch.isfinite(out.uncertainty[~bad]).all()


def test_bad_inputs_raise_clear_errors():
    p = EnsembleParams.random(3, 11, 3, 64, num_layers=2, seed=5)
    obs, act, noise, member = torch.randn(5, 11), torch.rand(5, 3), torch.randn(5, 12), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"act has shape \(5, 4\), expected \[5, 3\]"):
        rollout_step(p, obs, torch.rand(5, 4), noise, member)
    with pytest.raises(ValueError, match="noise has shape"):
        rollout_step(p, obs, act, torch.randn(5, 11), member)
    with pytest.raises(ValueError, match="member must be int"):
        rollout_step(p, obs, act, noise, member.float())
    with pytest.raises(ValueError, match="unknown backend 'cuda-magic'"):
        rollout_step(p, obs, act, noise, member, backend="cuda-magic")
    with pytest.raises(ValueError, match="unknown uncertainty"):
        rollout_step(p, obs, act, noise, member, uncertainty="epistemic-ish")
    with pytest.raises(ValueError, match="obs_low has shape"):
        rollout_step(p, obs, act, noise, member, obs_low=torch.zeros(3))


def test_params_validate_and_backends_listed():
    p = EnsembleParams.random(4, 17, 6, 200, seed=6)
    p.validate()
    assert (p.num_members, p.obs_dim, p.act_dim) == (4, 17, 6)
    broken = EnsembleParams(p.weights[:-1], p.biases[:-1], p.in_mean, p.in_std, p.max_logvar, p.min_logvar, p.elites)
    with pytest.raises(ValueError, match="last layer outputs 200"):
        broken.validate()
    assert "reference" in BACKENDS
