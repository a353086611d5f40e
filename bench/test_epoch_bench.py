"""Seconds per MOPO epoch: one rollout phase (N=50,000 start states x H=5 in E=7 members of 4x200
SiLU) plus 1,000 SAC updates on batches of 256 mixing 5% real and 95% model rows, HalfCheetah dims
(D=17, A=6), for simloop's pieces (``RolloutEngine.rollout`` into the device ``ReplayBuffer``,
``algos.mopo.MOPOAgent.update`` on ``ReplayBuffer.sample`` + real rows) and for the plain baselines
(``bench/naive_rollout.py`` into a NumPy buffer, ``bench/plain_mopo.py`` + ``bench/plain_sac.py``),
in one run.

    SIMLOOP_BENCH_THREADS=1 pytest bench/test_epoch_bench.py --benchmark-enable --benchmark-only

Sizes: ``SIMLOOP_BENCH_N`` start states (default 50,000) and ``SIMLOOP_BENCH_UPDATES`` timed updates
per provider (default 1,000; with fewer, or with ``--benchmark-disable`` as in CI where two blocks of
25 are timed, the epoch is 1,000 x the median time per update). extra_info: rollout seconds, seconds
per update, seconds per epoch of both, and the ratio, by the wall clock and by CPU time (``_cpu``: all
threads of the process; with one thread, the time without other processes' share of the core).
"""

import time

import numpy as np
import torch

from algos.mopo import Config, MOPOAgent
from bench.conftest import machine, time_interleaved
from bench.naive_rollout import naive_rollout
from bench.plain_mopo import NumpyReplayBuffer, plain_mopo_step
from bench.plain_sac import PlainSAC
from engine.batch import Batch
from engine.buffer import ReplayBuffer
from engine.rollout import RolloutConfig, RolloutEngine
from engine.termination import termination_params
from kernels import EnsembleParams

H, E, D, A, K = 5, 7, 17, 6, 200
UPDATES_PER_EPOCH = 1_000
BLOCK = 25
"""Updates per timed block."""


def time_once(fn) -> dict[str, float]:
    """Seconds of one call by the wall clock and by this process's CPU time (as ``time_interleaved``)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}


def test_mopo_epoch(benchmark, bench_n, bench_updates, bench_threads):
    cfg = Config()
    num_real = int(round(cfg.batch_size * cfg.real_ratio))
    num_model = cfg.batch_size - num_real
    g = torch.Generator().manual_seed(0)
    params = EnsembleParams.random(E, D, A, K, num_layers=4, seed=0, num_elites=5)
    num_data = max(bench_n, 1_000)
    real = Batch(
        torch.randn(num_data, D, generator=g),
        torch.rand(num_data, A, generator=g) * 2 - 1,
        torch.randn(num_data, generator=g),
        torch.randn(num_data, D, generator=g),
        torch.zeros(num_data),
    )
    term = termination_params("halfcheetah")
    rollout_cfg = RolloutConfig(H, cfg.rollout.penalty_coef)
    torch.manual_seed(0)
    agent, plain = MOPOAgent(D, A, cfg.sac, "cpu"), PlainSAC(D, A)
    sim = agent.sac

    engine = RolloutEngine(params, lambda o: sim.actor(o, g)[0], term.obs_low, term.obs_high, rollout_cfg, g)
    model_buffer = ReplayBuffer(bench_n * H, D, A)

    def simloop_rollout():
        start = real.obs[torch.randint(len(real), (bench_n,), generator=g)]
        model_buffer.add(*engine.rollout(start).flat())

    def simloop_update():
        real_batch = real.index(torch.randint(len(real), (num_real,), generator=g))
        agent.update(real_batch, model_buffer.sample(num_model, g), g)

    rng = np.random.default_rng(0)
    real_np = NumpyReplayBuffer(num_data, D, A, rng)
    real_np.add_batch(**{k: v.numpy() for k, v in zip(("obs", "act", "rew", "next_obs", "terminal"), real)})
    fake_np = NumpyReplayBuffer(bench_n * H, D, A, rng)
    low, high = term.obs_low.numpy(), term.obs_high.numpy()

    @torch.no_grad()
    def plain_policy(obs):
        return plain.actor(obs)[0]

    def plain_rollout():
        start = real_np.sample(bench_n)["obs"].numpy()
        fake_np.add_batch(**naive_rollout(params, plain_policy, start, H, rollout_cfg.penalty_coef, low, high, rng))

    def plain_update():
        plain_mopo_step(plain, real_np, fake_np, num_real, num_model)

    num = bench_updates if not benchmark.disabled else min(bench_updates, 2 * BLOCK)

    def epoch_pieces():
        rollout_s = {"simloop": time_once(simloop_rollout), "plain": time_once(plain_rollout)}
        return rollout_s, time_interleaved({"simloop": simloop_update, "plain": plain_update}, num, BLOCK)

    rollout_s, update_s = benchmark.pedantic(epoch_pieces, rounds=1, iterations=1)
    info = benchmark.extra_info
    info.update(machine=machine(), threads=bench_threads, N=bench_n, H=H, updates_timed=num)
    for name in ("simloop", "plain"):
        for clock, suffix in (("wall_s", ""), ("cpu_s", "_cpu")):
            info[f"{name}_rollout_s{suffix}"] = rollout_s[name][clock]
            info[f"{name}_update_s{suffix}"] = update_s[name][clock]
            info[f"{name}_epoch_s{suffix}"] = rollout_s[name][clock] + UPDATES_PER_EPOCH * update_s[name][clock]
    info["ratio"] = info["plain_epoch_s"] / info["simloop_epoch_s"]
    info["ratio_cpu"] = info["plain_epoch_s_cpu"] / info["simloop_epoch_s_cpu"]
    assert len(model_buffer) > 0 and fake_np.size > 0
