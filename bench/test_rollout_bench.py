"""Rollout throughput: the engine (fixed shapes, no host round trip), once with each CPU backend of
``kernels.rollout_step``, against the naive baseline (host round trip every step, terminated rows
dropped), interleaved in one run, at MOPO's sizes: N=50,000 start states, H=5, E=7 members of
4x200 SiLU, HalfCheetah dims (D=17, A=6), the same policy in the loop.

    SIMLOOP_BENCH_THREADS=1 python -m pytest bench/test_rollout_bench.py --benchmark-enable --benchmark-only
extra_info: ``<provider>_transitions_per_s`` (N*H / median seconds; ``..._cpu``: by CPU time) for
``naive``, ``engine-reference`` and ``engine-cpu``, and ``<provider>_vs_naive``.
"""

import os

import numpy as np
import pytest
import torch

from bench.conftest import machine, time_interleaved
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


def test_rollout_throughput(benchmark, setup, bench_threads):
    params, actor, start = setup
    n = start.shape[0]
    term = termination_params("halfcheetah")
    gen = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    policy = lambda o: actor(o, gen)[0]
    outs = {}

    def engine(backend):
        eng = RolloutEngine(params, policy, term.obs_low, term.obs_high, RolloutConfig(H, 0.5, backend=backend), gen)
        return lambda: outs.__setitem__(backend, eng.rollout(start))

    def naive():
        low, high = term.obs_low.numpy(), term.obs_high.numpy()
        outs["naive"] = naive_rollout(params, policy, start.numpy(), H, 0.5, low, high, rng)

    fns = {"naive": naive, "engine-reference": engine("reference"), "engine-cpu": engine("cpu")}
    if not benchmark.disabled:
        for fn in fns.values():  # warm-up
            fn()
    num_rounds = 1 if benchmark.disabled else int(os.environ.get("SIMLOOP_BENCH_ROUNDS", "3"))
    res = benchmark.pedantic(time_interleaved, args=(fns, num_rounds, 1), rounds=1, iterations=1)
    info = benchmark.extra_info
    info.update(machine=machine(), threads=bench_threads, N=n, H=H)
    for clock, suffix in (("wall_s", ""), ("cpu_s", "_cpu")):
        for name, t in res.items():
            info[f"{name}_transitions_per_s{suffix}"] = n * H / t[clock]
            if name != "naive":
                info[f"{name}_vs_naive{suffix}"] = res["naive"][clock] / t[clock]
    for backend in ("reference", "cpu"):
        assert outs[backend].rew.shape == (H, n) and outs[backend].valid.all()
    assert outs["naive"]["rew"].shape == (H * n,)
