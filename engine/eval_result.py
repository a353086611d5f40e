"""The outcome of a policy evaluation on the true simulator (``engine.evaluate`` on CPU MuJoCo,
``engine.mjx_eval`` on MJX): per-episode returns and lengths, scored with D4RL's normalised score
(Fu et al. 2020, "D4RL", Sec. 5; reference returns in ``engine.envs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.envs import normalize_return


@dataclass(frozen=True, eq=False)
class EvalResult:
    """Outcome of ``engine.evaluate.evaluate``: per-episode returns and lengths, in episode order (episode k was
    reset with ``seed + k``), and the time it took. ``eq=False``: arrays have no boolean ``==``."""

    env: str
    """Gymnasium id of the environment evaluated on."""
    returns: np.ndarray
    """``[num_episodes]`` float64: undiscounted episode returns (sum of per-step rewards)."""
    lengths: np.ndarray
    """``[num_episodes]`` int64: episode lengths in environment steps."""
    wall_s: float
    """Seconds for the whole evaluation (environment construction, resets, steps, policy calls); for the
    MJX backend without compilation, which ``compile_s`` holds."""
    compile_s: float = 0.0
    """Seconds spent compiling (MJX backend, first call per env and batch size in a process; 0 otherwise)."""
    seed: int = 0
    """Seed of episode 0 (episode k was reset with ``seed + k``)."""

    @property
    def return_mean(self) -> float:
        """Mean episode return."""
        return float(self.returns.mean())

    @property
    def return_std(self) -> float:
        """Standard deviation of the episode returns (population, ddof=0)."""
        return float(self.returns.std())

    @property
    def normalized_score(self) -> float:
        """D4RL normalised score of the mean return: ``100 * (R - R_random) / (R_expert - R_random)``."""
        return float(normalize_return(self.env, self.return_mean))

    @property
    def normalized_score_std(self) -> float:
        """Standard deviation (ddof=0) of the per-episode normalised scores."""
        return float(normalize_return(self.env, self.returns).std())

    @property
    def steps_per_s(self) -> float:
        """Environment steps per second of wall time (all episodes' steps / ``wall_s``)."""
        return float(self.lengths.sum() / self.wall_s)

    def episode_rows(self, step: int) -> list[dict]:
        """One dict per episode: ``step`` (the training step evaluated), ``episode``, ``seed``, ``return``,
        ``length``, ``normalized_score``; the rows of a run's ``episodes.csv``."""
        scores = normalize_return(self.env, self.returns)
        return [
            {
                "step": step,
                "episode": k,
                "seed": self.seed + k,
                "return": float(r),
                "length": int(n),
                "normalized_score": float(s),
            }
            for k, (r, n, s) in enumerate(zip(self.returns, self.lengths, scores))
        ]

    def metrics(self) -> dict[str, float]:
        """Flat dict with namespaced keys (``eval/...``, ``perf/eval_steps_per_s``, ``perf/eval_compile_s``)."""
        return {
            "eval/return_mean": self.return_mean,
            "eval/return_std": self.return_std,
            "eval/normalized_score": self.normalized_score,
            "eval/normalized_score_std": self.normalized_score_std,
            "eval/episode_length": float(self.lengths.mean()),
            "perf/eval_steps_per_s": self.steps_per_s,
            "perf/eval_compile_s": self.compile_s,
        }
