"""Where the policy leaves the data: the learned model's uncertainty at the states and actions the policy visits
on the true environment (``UncertaintyProbe``), against its distribution on the dataset, and the warning a run
issues when too many evaluation steps lie beyond it (``off_data_warning``, ``OFF_DATA_WARN_FRAC``)."""

from __future__ import annotations

from pathlib import Path

import torch

from kernels import rollout_step

OFF_DATA_WARN_FRAC = 0.1
"""``ModelBasedRun.evaluate`` warns when more than this fraction of the evaluation's steps lie beyond the data's
99th-percentile uncertainty (a policy that stays where the data is has ~0.01): the policy has left the data,
where the learned simulator's predictions, and so its training signal, are not to be trusted (bench/RESULTS.md
has the fractions of recorded runs)."""


def off_data_warning(
    step: int, metrics: dict[str, float], run_dir: str | Path = "RUN_DIR", threshold: float | None = None
) -> str | None:
    """The warning ``ModelBasedRun.evaluate`` issues for an evaluation's ``UncertaintyProbe.metrics`` at ``step``
    of the run in ``run_dir``, or None when ``eval/model_uncertainty_frac_beyond_p99`` is at most ``threshold``
    (None: ``OFF_DATA_WARN_FRAC``) or absent (the MJX backend has no probe)."""
    frac = metrics.get("eval/model_uncertainty_frac_beyond_p99")
    if frac is None or frac <= (OFF_DATA_WARN_FRAC if threshold is None else threshold):
        return None
    return (
        f"step {step}: {frac:.0%} of the evaluation's steps lie beyond the data's 99th-percentile model uncertainty "
        f"(a policy that stays in the data: ~1%); the policy has left the data and may be exploiting the learned "
        f"simulator: check it with `python -m experiments.diagnose {run_dir}` (a larger rollout.penalty_coef "
        f"charges more for it)"
    )


class UncertaintyProbe:
    """Where the policy leaves the data: the model's uncertainty u(s, a) (``cfg.rollout.uncertainty``, as in the
    rollout penalty) at the states and actions the policy visits on the true environment during an evaluation,
    against its distribution on the dataset's own (s, a), both under the model as it is at the evaluation
    (ARMOR's model changes during training).

    Metrics: ``eval/model_uncertainty_mean`` (mean u over every visited step), ``eval/model_uncertainty_data_p99``
    (the 99th percentile of u on 10,000 dataset rows) and ``eval/model_uncertainty_frac_beyond_p99`` (fraction
    of visited steps beyond it: ~0.01 for a policy that stays where the data is).
    """

    def __init__(self, params, real, uncertainty: str, generator: torch.Generator):
        self.params, self.kind = params, uncertainty
        idx = torch.randint(len(real), (min(len(real), 10_000),), generator=generator, device=real.obs.device)
        self.data_obs, self.data_act = real.obs[idx], real.act[idx]
        self.values: list[torch.Tensor] = []

    def u(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``[N]`` uncertainty of ``(obs [N, D], act [N, A])`` (zero noise; u does not depend on the sample)."""
        n = obs.shape[0]
        noise = torch.zeros(n, obs.shape[1] + 1, device=obs.device)
        member = self.params.elites[:1].expand(n)
        return rollout_step(self.params, obs, act, noise, member, 0.0, uncertainty=self.kind).uncertainty

    def wrap(self, policy):
        """``policy`` that also records u at every (obs, act) it is called on."""

        @torch.no_grad()
        def observed(obs: torch.Tensor) -> torch.Tensor:
            act = policy(obs)
            self.values.append(self.u(obs, act))
            return act

        return observed

    def metrics(self) -> dict[str, float]:
        """The metrics of the steps recorded since the last call."""
        u, self.values = torch.cat(self.values), []
        with torch.no_grad():
            p99 = float(torch.quantile(self.u(self.data_obs, self.data_act), 0.99))
        return {
            "eval/model_uncertainty_mean": float(u.mean()),
            "eval/model_uncertainty_data_p99": p99,
            "eval/model_uncertainty_frac_beyond_p99": float((u > p99).float().mean()),
        }
