"""The plain baseline of the MOPO-epoch benchmark: the data handling of a common PyTorch MOPO
(OfflineRL-Kit's ``ReplayBuffer`` and ``MBPolicyTrainer``): NumPy ring buffers on the host, each
sample drawn with ``np.random.randint`` and copied into new torch tensors, real and model batches
concatenated per update; rollouts by ``bench/naive_rollout.py``, updates by ``bench/plain_sac.py``.

Kept only as the benchmark's baseline.
"""

from __future__ import annotations

import numpy as np
import torch

from engine.batch import Batch

FIELDS = ("obs", "act", "rew", "next_obs", "terminal")


class NumpyReplayBuffer:
    """OfflineRL-Kit's ``ReplayBuffer``: fixed-capacity NumPy arrays, ``add_batch`` and ``sample``."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, rng: np.random.Generator):
        self.capacity, self.ptr, self.size, self.rng = capacity, 0, 0, rng
        shapes = {"obs": (obs_dim,), "act": (act_dim,), "rew": (), "next_obs": (obs_dim,), "terminal": ()}
        self.data = {k: np.zeros((capacity, *shapes[k]), np.float32) for k in FIELDS}

    def add_batch(self, **batch: np.ndarray) -> None:
        n = len(batch["obs"])
        idx = (np.arange(n) + self.ptr) % self.capacity
        for k in FIELDS:
            self.data[k][idx] = batch[k]
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return {k: torch.tensor(self.data[k][idx]) for k in FIELDS}


def plain_mopo_step(agent, real: NumpyReplayBuffer, fake: NumpyReplayBuffer, num_real: int, num_model: int) -> dict:
    """One update of OfflineRL-Kit's ``MBPolicyTrainer.train`` + ``MOPOPolicy.learn``: sample both
    buffers, concatenate, one SAC update."""
    r, f = real.sample(num_real), fake.sample(num_model)
    return agent.update(Batch(*(torch.cat([r[k], f[k]], 0) for k in FIELDS)))
