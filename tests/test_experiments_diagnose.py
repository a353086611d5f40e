"""experiments.diagnose on a tiny real run: the learned model against the true environment along the policy's
own episodes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from algos import mopo
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
    assert diagnose.main([str(tmp_path / "run"), "--episodes", "1"]) == 0
    assert (tmp_path / "run" / "diagnosis_step40.json").is_file()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        diagnose.diagnose(tmp_path / "nowhere")
