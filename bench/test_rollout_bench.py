"""Rollout throughput: the engine (fixed shapes, no host round trip) against the naive
baseline (host round trip every step, terminated rows dropped), in one run, at MOPO's sizes:
N=50,000 start states, H=5, E=7 members of 4x200 SiLU, HalfCheetah dims (D=17, A=6).

    pytest bench/test_rollout_bench.py --benchmark-only
Reports transitions/s (N*H / median seconds) in each benchmark's extra_info.
"""

import numpy as np
import pytest
import torch

from bench.conftest import machine
from bench.naive_rollout import naive_rollout
from engine.nets import TanhGaussianActor
from engine.rollout import RolloutConfig, RolloutEngine
from engine.termination import termination_params
from kernels import EnsembleParams

H, E, D, A, K = 5, 7, 17, 6, 200


@pytest.fixture(scope="module")
def setup(bench_n):
    torch.manual_seed(0)
    params = EnsembleParams.random(E, D, A, K, num_layers=4, seed=0, num_elites=5)
    actor = TanhGaussianActor(D, A)
    start = torch.randn(bench_n, D)
    return params, actor, start


def _report(benchmark, n):
    benchmark.extra_info["machine"] = machine()
    benchmark.extra_info["N"], benchmark.extra_info["H"] = n, H
    if benchmark.stats is not None:
        benchmark.extra_info["transitions_per_s"] = n * H / benchmark.stats.stats.median


def test_engine_rollout(benchmark, setup):
    params, actor, start = setup
    term = termination_params("halfcheetah")
    gen = torch.Generator().manual_seed(1)
    engine = RolloutEngine(params, lambda o: actor(o, gen)[0], term.obs_low, term.obs_high, RolloutConfig(H, 0.5), gen)
    tr = benchmark.pedantic(engine.rollout, args=(start,), rounds=3, iterations=1, warmup_rounds=1)
    assert tr.rew.shape == (H, start.shape[0]) and tr.valid.all()
    _report(benchmark, start.shape[0])


def test_naive_rollout(benchmark, setup):
    params, actor, start = setup
    term = termination_params("halfcheetah")
    gen = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    policy = lambda o: actor(o, gen)[0]  # noqa: E731
    out = benchmark.pedantic(
        naive_rollout,
        args=(params, policy, start.numpy(), H, 0.5, term.obs_low.numpy(), term.obs_high.numpy(), rng),
        rounds=3,
        iterations=1,
        warmup_rounds=1,
    )
    assert out["rew"].shape == (H * start.shape[0],)
    _report(benchmark, start.shape[0])
