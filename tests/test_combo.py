"""COMBO: the conservative term against hand computations, a smoke run, presets and bad config."""

import json
import math
from dataclasses import replace

import pytest
import torch

from algos import combo
from engine import data as datasets
from engine.buffer import Batch
from engine.cli import parse_cli
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
    assert set(datasets.DATASETS) <= set(combo.PRESETS)
    assert combo.PRESETS["simloop/walker2d/medium-v0"].rollout.horizon == 1
    assert combo.PRESETS["simloop/hopper/medium-v0"].conservative_coef == 5.0
    with pytest.raises(ValueError, match="conservative_coef=-1"):
        combo.Config(conservative_coef=-1.0)
    with pytest.raises(ValueError, match="no reward penalty"):
        combo.Config(rollout=tiny_rollout(penalty_coef=1.0))
    with pytest.raises(ValueError, match="real_ratio"):
        combo.Config(real_ratio=1.0)
    with pytest.raises(ValueError, match="unknown preset"):
        parse_cli(["--preset", "halfcheetah"], combo.PRESETS, "combo")
