"""SAC update throughput: simloop's ``engine.sac.SAC.update`` (twin critics as one batched ensemble,
fused Adam with a lean step, multiply-and-sum Q head) against a plain PyTorch SAC update written
the common way (``bench/plain_sac.py``: two critic modules with two optimisers, OfflineRL-Kit style),
at MOPO's sizes: batch 256, 2x256 networks, HalfCheetah dims (D=17, A=6). Both are timed in one run,
in interleaved blocks of updates.

    SIMLOOP_BENCH_THREADS=1 pytest bench/test_update_bench.py --benchmark-enable --benchmark-only
Reports updates/s of each provider (median block, wall clock and CPU time) and their ratio in extra_info.
``SIMLOOP_BENCH_UPDATES`` updates per provider (default 1,000); with ``--benchmark-disable`` (CI) only
two blocks each, a smoke run rather than a measurement.
"""

import math

import torch

from bench.conftest import machine, time_interleaved
from bench.plain_sac import PlainSAC
from engine.batch import Batch
from engine.sac import SAC

D, A, B = 17, 6, 256
BLOCK = 25
"""Updates per timed block (about half a second on one core)."""


def random_batches(num: int, seed: int) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [
        Batch(
            torch.randn(B, D, generator=g),
            torch.rand(B, A, generator=g) * 2 - 1,
            torch.randn(B, generator=g),
            torch.randn(B, D, generator=g),
            (torch.rand(B, generator=g) < 0.05).float(),
        )
        for _ in range(num)
    ]


def report_ratio(benchmark, res: dict, unit: str, threads: int, **info) -> None:
    """extra_info: per provider ``<provider>_<unit>`` (wall clock) and ``<provider>_<unit>_cpu``, the
    ratios simloop / plain, the machine and the threads."""
    benchmark.extra_info.update(machine=machine(), threads=threads, **info)
    for name, t in res.items():
        benchmark.extra_info[f"{name}_{unit}"] = 1.0 / t["wall_s"]
        benchmark.extra_info[f"{name}_{unit}_cpu"] = 1.0 / t["cpu_s"]
    benchmark.extra_info["ratio"] = res["plain"]["wall_s"] / res["simloop"]["wall_s"]
    benchmark.extra_info["ratio_cpu"] = res["plain"]["cpu_s"] / res["simloop"]["cpu_s"]


def test_update_throughput(benchmark, bench_updates, bench_threads):
    batches = random_batches(8, seed=0)
    torch.manual_seed(0)
    sim, plain = SAC(D, A), PlainSAC(D, A)
    g = torch.Generator().manual_seed(1)
    step = {"simloop": 0, "plain": 0}
    metrics = {}

    def simloop_update():
        metrics.update(sim.update(batches[step["simloop"] % 8], g))
        step["simloop"] += 1

    def plain_update():
        plain.update(batches[step["plain"] % 8])
        step["plain"] += 1

    fns = {"simloop": simloop_update, "plain": plain_update}
    for fn in fns.values():  # warm-up: allocator, first-call dispatch
        for _ in range(5):
            fn()
    num = bench_updates if not benchmark.disabled else min(bench_updates, 2 * BLOCK)
    res = benchmark.pedantic(time_interleaved, args=(fns, num, BLOCK), rounds=1, iterations=1)
    report_ratio(benchmark, res, "updates_per_s", bench_threads, batch_size=B, updates=num)
    assert all(math.isfinite(float(v)) for v in metrics.values())


def test_armor_update_throughput(benchmark, bench_updates, bench_threads):
    """ARMOR's iteration (``algos.armor.ARMORAgent.update``: critics, adversarial model, actor, temperature)
    at its default sizes (batch 128 real + 128 model rows, 3x256 actor and critics, a 4x200 model) against
    the same iteration written plainly (``bench/plain_armor.py``: a set of critic passes per loss)."""
    from algos.armor import ARMORAgent, Config
    from bench.plain_armor import PlainARMORAgent
    from engine.dynamics import EnsembleDynamics
    from engine.nets import TanhGaussianActor

    cfg = Config()
    batches = random_batches(8, seed=0)
    halves = [(Batch(*(t[: B // 2] for t in b)), Batch(*(t[B // 2 :] for t in b))) for b in batches]
    torch.manual_seed(0)
    reference = TanhGaussianActor(D, A, cfg.hidden_dims)
    bounds = (torch.full((D,), -torch.inf), torch.full((D,), torch.inf))
    agents = {
        name: cls(reference, EnsembleDynamics(D, A, cfg.dynamics), cfg, 1000.0, *bounds)
        for name, cls in (("simloop", ARMORAgent), ("plain", PlainARMORAgent))
    }
    g = torch.Generator().manual_seed(1)
    step = {"simloop": 0, "plain": 0}
    metrics = {}

    def make(name):
        def fn():
            metrics.update(agents[name].update(*halves[step[name] % 8], g))
            step[name] += 1

        return fn

    fns = {name: make(name) for name in agents}
    for fn in fns.values():
        for _ in range(3):
            fn()
    num = bench_updates if not benchmark.disabled else min(bench_updates, 2 * BLOCK)
    res = benchmark.pedantic(time_interleaved, args=(fns, num // 2, BLOCK // 2), rounds=1, iterations=1)
    report_ratio(benchmark, res, "updates_per_s", bench_threads, batch_size=B, updates=num // 2)
    assert all(math.isfinite(float(v)) for v in metrics.values())


PEAK_N = 2048
"""The square matmul whose float32 FLOP/s is the practical peak the ``*_peak_fraction`` benchmarks divide by."""


def _peak_fraction(benchmark, bench_updates, bench_threads, update, per_block: int) -> dict:
    """FLOPs of one ``update()`` (``torch.utils.flop_counter.FlopCounterMode``: matmuls, forward and backward),
    its achieved FLOP/s, and that against the float32 matmul peak (a ``PEAK_N``-cubed matmul) measured in the same
    run: the two are timed in interleaved blocks (``bench.conftest.time_interleaved``: ``per_block`` updates
    against one peak matmul), so that other load on the machine hits both alike. Reported by the wall clock
    (``peak_fraction``) and by CPU time (``peak_fraction_cpu``, which leaves out the time other processes held
    the core; with one thread the figure to trust on a busy machine). Also the FLOP/s of the critics' largest
    matmul shape alone (``critic_bmm_gflops_cpu``: ``[2, 256, 256] @ [2, 256, 256]``), which tells the matmuls'
    own efficiency from the rest of the update's. Returns the figures (also in extra_info)."""
    from torch.utils.flop_counter import FlopCounterMode

    for _ in range(3):
        update()
    with FlopCounterMode(display=False) as counter:
        update()
    flops = counter.get_total_flops()
    n = PEAK_N if not benchmark.disabled else 256
    a, b = torch.randn(n, n), torch.randn(n, n)
    x, w = torch.randn(2, B, 256), torch.randn(2, 256, 256)

    def updates():
        for _ in range(per_block):
            update()

    fns = {"update": updates, "peak": lambda: a @ b, "bmm": lambda: [torch.bmm(x, w) for _ in range(20)]}
    for fn in fns.values():
        fn()
    blocks = max(2, bench_updates // per_block) if not benchmark.disabled else 2
    res = benchmark.pedantic(time_interleaved, args=(fns, blocks, 1), rounds=1, iterations=1)
    peak_flops, bmm_flops = 2.0 * n**3, 20 * 2.0 * 2 * B * 256 * 256
    info = {"gflop_per_update": flops / 1e9}
    for clock, suffix in (("wall_s", ""), ("cpu_s", "_cpu")):
        achieved = per_block * flops / res["update"][clock]
        peak = peak_flops / res["peak"][clock]
        info.update(
            {
                f"updates_per_s{suffix}": per_block / res["update"][clock],
                f"achieved_gflops{suffix}": achieved / 1e9,
                f"peak_gflops{suffix}": peak / 1e9,
                f"peak_fraction{suffix}": achieved / peak,
                f"critic_bmm_gflops{suffix}": bmm_flops / res["bmm"][clock] / 1e9,
            }
        )
    benchmark.extra_info.update(machine=machine(), threads=bench_threads, **info)
    assert 0 < info["peak_fraction_cpu"] < 2
    return info


def test_armor_update_peak_fraction(benchmark, bench_updates, bench_threads):
    """``_peak_fraction`` of one ARMOR iteration (``algos.armor.ARMORAgent.update``) at its default sizes (batch
    128 real + 128 model rows), HalfCheetah dims, 3 updates against one peak matmul."""
    from algos.armor import ARMORAgent, Config
    from engine.dynamics import EnsembleDynamics
    from engine.nets import TanhGaussianActor

    cfg = Config()
    halves = [(Batch(*(t[: B // 2] for t in b)), Batch(*(t[B // 2 :] for t in b))) for b in random_batches(8, 0)]
    torch.manual_seed(0)
    bounds = (torch.full((D,), -torch.inf), torch.full((D,), torch.inf))
    reference, model = TanhGaussianActor(D, A, cfg.hidden_dims), EnsembleDynamics(D, A, cfg.dynamics)
    agent = ARMORAgent(reference, model, cfg, 1e3, *bounds)
    g = torch.Generator().manual_seed(1)
    step = [0]

    def update():
        agent.update(*halves[step[0] % 8], g)
        step[0] += 1

    info = _peak_fraction(benchmark, bench_updates, bench_threads, update, per_block=3)
    assert info["gflop_per_update"] > 1  # ~2.4 GFLOP of critic matmuls alone (RESULTS)


def test_combo_update_peak_fraction(benchmark, bench_updates, bench_threads):
    """``_peak_fraction`` of one COMBO update (``algos.combo.COMBOAgent.update``) as the hopper and walker2d
    presets run it: batch 128 dataset + 128 model rows, beta 5, the conservative term over the whole batch
    (``rho_states="mix"``: 10 repeats x 3 proposals per state), HalfCheetah's dims (walker2d's are the same),
    one update against one peak matmul."""
    from algos.combo import COMBOAgent, Config

    cfg = Config(dataset="simloop/walker2d/medium-v0", conservative_coef=5.0, rho_states="mix")
    halves = [(Batch(*(t[: B // 2] for t in b)), Batch(*(t[B // 2 :] for t in b))) for b in random_batches(8, 0)]
    torch.manual_seed(0)
    agent = COMBOAgent(D, A, cfg, "cpu")
    g = torch.Generator().manual_seed(1)
    step = [0]
    metrics = {}

    def update():
        metrics.update(agent.update(*halves[step[0] % 8], g))
        step[0] += 1

    info = _peak_fraction(benchmark, bench_updates, bench_threads, update, per_block=1)
    assert info["gflop_per_update"] > 5 and all(math.isfinite(float(v)) for v in metrics.values())
