"""The rollout phase and the SAC update of whatever source tree it is run in, for comparing two commits on one
machine (run it alternately in a worktree of each, with nothing else on the cores)::

    git worktree add /tmp/before <commit>
    for i in 1 2 3; do for t in /tmp/before .; do (cd $t && python <this repo>/bench/ab_trees.py $t); done; done

Prints one JSON line: the median of 3 rollout phases (N=50,000 start states, H=5, E=7 members of 4x200,
HalfCheetah dims, the policy in the loop; transitions/s) and of 3 blocks of 200 SAC updates (batch 256,
2x256 networks; ms per update), at 1 torch thread. It imports only names that both trees hold: ``Batch`` comes
from ``engine.batch``, or from ``engine.buffer`` in an older tree.
"""

import json
import sys
import time

import torch

from engine.nets import TanhGaussianActor
from engine.rollout import RolloutConfig, RolloutEngine
from engine.sac import SAC
from engine.termination import termination_params
from kernels import EnsembleParams

try:
    from engine.batch import Batch
except ImportError:  # a tree from before Batch moved
    from engine.buffer import Batch

H, E, D, A, K, N = 5, 7, 17, 6, 200, 50_000


def main(label: str) -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    params = EnsembleParams.random(E, D, A, K, num_layers=4, seed=0, num_elites=5)
    actor = TanhGaussianActor(D, A)
    start = torch.randn(N, D)
    term = termination_params("halfcheetah")
    gen = torch.Generator().manual_seed(1)
    engine = RolloutEngine(params, lambda o: actor(o, gen)[0], term.obs_low, term.obs_high, RolloutConfig(H, 0.5), gen)
    engine.rollout(start)  # warm-up
    phases = []
    for _ in range(3):
        t0 = time.perf_counter()
        engine.rollout(start)
        phases.append(time.perf_counter() - t0)
    sac = SAC(D, A)
    g = torch.Generator().manual_seed(2)
    batch = Batch(
        torch.randn(256, D, generator=g),
        torch.rand(256, A, generator=g) * 2 - 1,
        torch.randn(256, generator=g),
        torch.randn(256, D, generator=g),
        torch.zeros(256),
    )
    for _ in range(20):  # warm-up
        sac.update(batch, g)
    blocks = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(200):
            sac.update(batch, g)
        blocks.append((time.perf_counter() - t0) / 200)
    return {
        "tree": label,
        "rollout_transitions_per_s": N * H / sorted(phases)[1],
        "update_ms": 1000 * sorted(blocks)[1],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else ".")))
