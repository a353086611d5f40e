"""experiments.diagnose on a tiny real run: the learned model against the true environment along the policy's
own episodes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from algos import combo, mopo
from bench import combo_lse_forms
from experiments import diagnose
from tests.conftest import TINY_RUN


def test_diagnose_a_run(tiny_dataset, tmp_path):
    cfg = mopo.Config(dataset=tiny_dataset, out=str(tmp_path / "run"), **TINY_RUN)
    mopo.train(replace(cfg, sac=replace(cfg.sac, hidden_dims=(16, 16))))
    result = diagnose.diagnose(tmp_path / "run", num_episodes=2)
    assert result["step"] == 40 and result["algo"] == "mopo" and len(result["episodes"]) == 2
    for ep in result["episodes"]:
        # HalfCheetah never terminates: the episode runs to the 1,000-step time limit; the model (2 epochs, a
        # random-data fit) predicts no termination on the real steps, and its closed loop ends only by diverging.
        assert ep["real_length"] == 1000 and not ep["real_terminated"] and ep["model_predicts_the_fall"] is None
        assert ep["model_terminal_steps"] == 0
        assert ep["model_closed_loop_length"] == 1000 or ep["model_closed_loop_diverged"]
        for key in ("one_step_state_mse_first10", "one_step_reward_abs_err", "uncertainty_mean"):
            assert math.isfinite(ep[key]) and ep[key] >= 0, key
        for key in ("critic_q_first10", "return_to_go_first10", "critic_q_last20", "return_to_go_last20"):
            assert math.isfinite(ep[key]), key
        assert ep["critic_gap_mean"] >= 0 and ep["critic_gap_last20"] >= 0
    assert diagnose.main([str(tmp_path / "run"), "--episodes", "1"]) == 0
    assert (tmp_path / "run" / "diagnosis_step40.json").is_file()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        diagnose.diagnose(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="is a mopo run; this reads a COMBO checkpoint"):
        combo_lse_forms.main(str(tmp_path / "run"))


def test_combo_lse_forms_on_a_tiny_combo_run(tiny_dataset, tmp_path):
    """bench.combo_lse_forms reads a COMBO checkpoint through ``diagnose.load_run``: both forms' shares are
    fractions, the per-repeat form's top share at most 1/R."""
    cfg = combo.Config(dataset=tiny_dataset, out=str(tmp_path / "run"), **TINY_RUN)
    combo.train(replace(cfg, sac=replace(cfg.sac, hidden_dims=(16, 16))))
    s = combo_lse_forms.main(str(tmp_path / "run"), num_states=8)
    assert 0 < s["top1_ours"] <= s["top3_ours"] <= 1 and 0 < s["top1_peer"] <= s["top3_peer"] <= 1
    assert s["top1_peer"] <= 1 / cfg.num_repeat_actions + 1e-6
    assert s["top_uniform"] + s["top_pi_s"] + s["top_pi_next"] == pytest.approx(1.0)
    assert s["lse_ours"] >= s["lse_peer"]  # a log-sum-exp over 30 terms exceeds the mean of those over 3


def test_discounted_return_to_go_by_hand():
    rew = torch.tensor([1.0, 2.0, 3.0])
    # terminated: G_2 = 3, G_1 = 2 + 0.5 * 3, G_0 = 1 + 0.5 * 3.5
    assert diagnose.discounted_return_to_go(rew, 0.5).tolist() == [2.75, 3.5, 3.0]
    # a time-limit end: the value after the last step is discounted in
    assert diagnose.discounted_return_to_go(rew, 0.5, bootstrap=8.0).tolist() == [3.75, 5.5, 7.0]


def test_critic_gap_by_hand():
    # Q(s, a) = -(a - s)^2 summed over the action: best at a = s; twin critics, one shifted down by 1.
    def critic(obs, act):
        q = -(act - obs).pow(2).sum(-1)
        return torch.stack([q, q - 1.0])

    obs = torch.tensor([[0.5, -0.5], [0.0, 0.0]])
    best = obs.clone()  # the critic's argmax: no sampled action beats it
    assert diagnose.critic_gap(critic, obs, best, torch.Generator().manual_seed(0)).tolist() == [0.0, 0.0]
    worst = -obs.sign() - (obs == 0).float()  # a corner far from the argmax
    gap = diagnose.critic_gap(critic, obs, worst, torch.Generator().manual_seed(0))
    exact = (worst - obs).pow(2).sum(-1)  # the sampled maximum is close to 0 with 256 draws in 2-D
    assert torch.all(gap <= exact) and torch.all(gap > exact - 0.05)
