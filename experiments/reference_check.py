"""Does a run keep ARMOR's promise against its reference policy? Robust policy improvement (Bhardwaj et al. 2023,
"Adversarial Model for Offline Reinforcement Learning": the learned policy is never worse than the reference),
judged on evaluations by the two criteria of issue 33:

- the mean of the run's last 5 evaluations is at least the reference's (``experiments.scores.last_evals_mean``);
- no evaluation of the run after ``after`` updates (50,000 by default) falls more than ``margin`` (5) normalised
  points below the reference's final evaluation.

Both runs are run directories or records under ``bench/results/`` (each with a ``metrics.csv``); the reference is
the BC run whose ``policy.pt`` the ARMOR run was given with ``--reference``. The exit status is 0 when both hold,
1 otherwise::

    python -m experiments.reference_check bench/results/armor/simloop_hopper_medium-v0/seed0 \\
        bench/results/bc/simloop_hopper_medium-v0/seed0-ablation-reference
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from experiments.curves import Curve, eval_curve
from experiments.scores import LAST_EVALS, last_evals_mean


@dataclass(frozen=True)
class Verdict:
    """The two criteria's figures (normalised scores) and whether each holds."""

    last5: float
    """The run's mean over its last ``LAST_EVALS`` evaluations."""
    reference_last5: float
    """The reference's mean over its last ``LAST_EVALS`` evaluations."""
    reference_final: float
    """The reference's final evaluation."""
    lowest_after: tuple[int, float] | None
    """``(step, score)`` of the run's lowest evaluation after ``after`` updates; None when it has none there."""
    after: int
    """Updates after which the floor applies."""
    margin: float
    """Normalised points below the reference's final evaluation that the floor allows."""

    @property
    def floor(self) -> float:
        """``reference_final - margin``: no evaluation after ``after`` updates may fall below it."""
        return self.reference_final - self.margin

    @property
    def last5_holds(self) -> bool:
        return self.last5 >= self.reference_last5

    @property
    def floor_holds(self) -> bool:
        return self.lowest_after is None or self.lowest_after[1] >= self.floor

    @property
    def holds(self) -> bool:
        return self.last5_holds and self.floor_holds


def check(run: Curve, reference: Curve, after: int = 50_000, margin: float = 5.0) -> Verdict:
    """The verdict of ``run`` against ``reference`` (``eval_curve`` pairs ``(step, normalised score)``).

    Raises:
        ValueError: either curve is empty (a run without evaluations cannot be judged), or ``margin`` < 0.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0 normalised points, got {margin}")
    for name, curve in (("run", run), ("reference", reference)):
        if not curve:
            raise ValueError(f"the {name} has no evaluations (eval/normalized_score in its metrics.csv)")
    late = [(step, score) for step, score in run if step > after]
    return Verdict(
        last5=last_evals_mean(run)[0],
        reference_last5=last_evals_mean(reference)[0],
        reference_final=reference[-1][1],
        lowest_after=min(late, key=lambda p: p[1]) if late else None,
        after=after,
        margin=margin,
    )


def report(name: str, reference_name: str, v: Verdict) -> str:
    """A heading, one line per criterion ending in ``holds`` or ``FAILS``, then the overall verdict."""
    mark = {True: "holds", False: "FAILS"}
    low = "no evaluation" if v.lowest_after is None else f"lowest {v.lowest_after[1]:.1f} at {v.lowest_after[0]:,}"
    return "\n".join(
        [
            f"{name} against its reference {reference_name}:",
            f"  last-{LAST_EVALS} mean {v.last5:.1f} >= reference's {v.reference_last5:.1f}: {mark[v.last5_holds]}",
            f"  after {v.after:,} updates: {low} >= reference's final {v.reference_final:.1f} - {v.margin:g} = "
            f"{v.floor:.1f}: {mark[v.floor_holds]}",
            f"  the promise {mark[v.holds]}",
        ]
    )


@dataclass(frozen=True)
class Args:
    """Check a run against its reference policy's run (issue 33's two criteria); exit status 1 when one fails."""

    run: tyro.conf.Positional[Path]
    """The run (an ARMOR run directory or record)."""
    reference: tyro.conf.Positional[Path]
    """The reference policy's run (the BC run directory or record whose policy.pt the run was given)."""
    after: int = 50_000
    """Updates after which no evaluation may fall more than ``margin`` below the reference's final score."""
    margin: float = 5.0
    """Normalised points."""


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(Args, args=sys.argv[1:] if argv is None else argv)
    curves = {}
    for label, path in (("run", args.run), ("reference", args.reference)):
        if not (path / "metrics.csv").is_file():
            raise SystemExit(
                f"{label} {path} has no metrics.csv: give a run directory or a record under bench/results/"
            )
        curves[label] = eval_curve(path / "metrics.csv")
    try:
        verdict = check(curves["run"], curves["reference"], args.after, args.margin)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(report(str(args.run), str(args.reference), verdict))
    return 0 if verdict.holds else 1


if __name__ == "__main__":
    sys.exit(main())
