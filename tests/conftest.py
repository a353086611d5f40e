"""Shared fixtures: a tiny real dataset in a private Minari root, and tiny run budgets."""

import pytest
import torch

from engine import data
from engine.dynamics import DynamicsConfig
from engine.rollout import RolloutConfig

TINY_DYN = DynamicsConfig(
    num_members=3, num_elites=2, hidden_dim=32, num_layers=2, weight_decays=(1e-5, 1e-5, 1e-5), max_epochs=2
)
"""A 3-member ensemble trained for 2 epochs: enough to exercise every path in seconds."""

TINY_RUN = dict(
    num_updates=40,
    batch_size=32,
    rollout_batch_size=64,
    rollout_interval=20,
    eval_interval=20,
    eval_episodes=1,
    log_interval=10,
    checkpoint_interval=20,
    dynamics=TINY_DYN,
    progress=False,
    num_threads=1,
)
"""Budget fields shared by every algorithm's Config for smoke runs."""


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test leaves torch's thread count as it found it (runs and benchmarks set their own)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def tiny_dataset(tmp_path, monkeypatch):
    """simloop/halfcheetah/random-v0 at 3 episodes of 200 steps, in a private Minari root; the
    working directory is tmp_path so run and dynamics caches stay there."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.chdir(tmp_path)
    data.make_dataset("simloop/halfcheetah/random-v0", num_episodes=3, max_episode_steps=200, progress=False)
    return "simloop/halfcheetah/random-v0"


def tiny_rollout(horizon: int = 2, penalty_coef: float = 0.0) -> RolloutConfig:
    return RolloutConfig(horizon=horizon, penalty_coef=penalty_coef)
