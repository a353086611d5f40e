"""COMBO's conservative log-sum-exp in two forms, on a run's checkpoint: ours (CQL's reference code: one
log-sum-exp over the 3R importance-weighted samples of each state) and OfflineRL-Kit's as its code runs (a
log-sum-exp over the 3 proposals of each repeat, averaged over the R repeats; ``algos/combo.py`` says why).
Both push down with weight 1 per state in all; this reports how each spreads it over the samples::

    python -m bench.combo_lse_forms runs/combo-hopper-medium-seed0

(the run's dynamics ensemble must be in this machine's cache, as for ``experiments.diagnose``).
"""

from __future__ import annotations

import math
import sys

import torch


def push_down_shares(weighted: torch.Tensor) -> dict[str, float]:
    """``weighted: [E, B, R, 3]`` importance-weighted Q values (uniform, pi(s), pi(s') per repeat) ->
    the mean over critics and states of: each form's log-sum-exp (``lse_ours``, ``lse_peer``), the share of a
    state's push-down on its largest sample (``top1_*``) and on its three largest (``top3_*``), and for ours
    which proposal the largest sample came from (``top_uniform``, ``top_pi_s``, ``top_pi_next``)."""
    e, b, r, _ = weighted.shape
    flat = weighted.reshape(e, b, 3 * r)
    ours = torch.softmax(flat, -1)  # d lse_30 / d Q: sums to 1 per state
    peer = (torch.softmax(weighted, -1) / r).reshape(e, b, 3 * r)  # d mean_r lse_3 / d Q: sums to 1 per state
    kind = ours.argmax(-1) % 3
    return {
        "lse_ours": float(torch.logsumexp(flat, -1).mean()),
        "lse_peer": float(torch.logsumexp(weighted, -1).mean(-1).mean()),
        "top1_ours": float(ours.max(-1).values.mean()),
        "top1_peer": float(peer.max(-1).values.mean()),
        "top3_ours": float(ours.topk(3, -1).values.sum(-1).mean()),
        "top3_peer": float(peer.topk(3, -1).values.sum(-1).mean()),
        **{f"top_{n}": float((kind == i).float().mean()) for i, n in enumerate(("uniform", "pi_s", "pi_next"))},
    }


@torch.no_grad()
def main(run_dir: str, num_states: int = 256) -> dict[str, float]:
    from algos import combo
    from experiments.diagnose import load_run

    ckpt, cfg, data, _, agent = load_run(run_dir)
    if ckpt["algo"] != "combo":
        raise ValueError(f"{run_dir} is a {ckpt['algo']} run; this reads a COMBO checkpoint")
    real = data.as_batch()
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(len(real.obs), (num_states,), generator=g)
    q_rand, q_pi, lp_pi, q_next, lp_next = combo.sample_conservative_q(
        agent.sac, real.obs[idx], real.next_obs[idx], cfg.num_repeat_actions, g
    )
    log_uniform = real.act.shape[-1] * math.log(0.5)
    weighted = torch.stack([q_rand - log_uniform, q_pi - lp_pi, q_next - lp_next], -1)
    shares = push_down_shares(weighted)
    print(f"{run_dir} at {ckpt['step']} updates ({cfg.dataset}, beta {cfg.conservative_coef}):")
    for k, v in shares.items():
        print(f"  {k:12s} {v:.3f}")
    return shares


if __name__ == "__main__":
    main(*sys.argv[1:2])
