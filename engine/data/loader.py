"""Loading a Minari dataset into flat transition tensors on a device (``TransitionData``).

Any Minari dataset id present locally loads; a ``simloop`` id not generated yet is generated first
(``engine.data.generate``), another id can be downloaded by Minari.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.batch import Batch
from engine.data.generate import make_dataset
from engine.data.minari_io import _datasets_root, read_episodes, unknown_id_error
from engine.data.registry import DATASETS
from engine.envs import ENVS, d4rl_score


@dataclass
class TransitionData:
    """A dataset as flat transition tensors on one device.

    ``obs, next_obs: [N, D]``, ``act: [N, A]``, ``rew, terminal: [N]``, all float32. ``terminal`` is
    1.0 only where the episode reached a real terminal state (never at a time limit).
    """

    obs: torch.Tensor
    act: torch.Tensor
    rew: torch.Tensor
    next_obs: torch.Tensor
    terminal: torch.Tensor
    dataset_id: str
    env_name: str | None
    """Short name (``engine.envs.ENVS`` key) of the environment, None if not a supported one."""
    episode_returns: np.ndarray
    """``[num_episodes]`` float64: undiscounted return of each stored episode (cut ones included)."""
    ref_min_score: float | None
    ref_max_score: float | None

    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def obs_dim(self) -> int:
        """D."""
        return self.obs.shape[1]

    @property
    def act_dim(self) -> int:
        """A."""
        return self.act.shape[1]

    def as_batch(self) -> Batch:
        """All transitions as one ``Batch`` (no copy)."""
        return Batch(self.obs, self.act, self.rew, self.next_obs, self.terminal)

    @property
    def behavior_normalized_score(self) -> float:
        """D4RL normalised score (x100) of the mean episode return in the data.

        Raises ValueError when the dataset stores no reference scores.
        """
        if self.ref_min_score is None or self.ref_max_score is None:
            raise ValueError(f"dataset {self.dataset_id!r} has no ref_min_score/ref_max_score")
        return d4rl_score(float(self.episode_returns.mean()), self.ref_min_score, self.ref_max_score)


def _check_finite(dataset_id: str, path: Path, fields: dict[str, np.ndarray]) -> None:
    for name, arr in fields.items():
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise ValueError(f"dataset {dataset_id!r} at {path}: {bad} non-finite values (NaN/inf) in {name}")


def check_id(dataset_id: str) -> None:
    """Raise the ``ValueError`` ``load`` would raise for an unknown id (neither a simloop id nor a dataset present
    locally; the message lists both), without reading or generating anything: a run checks its dataset before it
    makes its directory."""
    if dataset_id not in DATASETS and not (_datasets_root() / dataset_id / "data").exists():
        raise unknown_id_error(dataset_id, _datasets_root())


def load(
    dataset_id: str, device: str | torch.device = "cpu", generate_missing: bool = True, download: bool = False
) -> TransitionData:
    """Load a Minari dataset as flat transition tensors on ``device``.

    Any locally present Minari id loads; a missing ``simloop`` id is generated first (with a progress
    bar) when ``generate_missing``; another missing id is downloaded by Minari when ``download``.
    ``next_obs = observations[1:]`` per episode, ``terminal = terminations`` (time-limit truncations
    are not terminals). Only flat Box observation and action spaces are supported.

    Returns:
        TransitionData: ``obs, next_obs [N, D]``, ``act [N, A]``, ``rew, terminal [N]`` float32.
    Raises:
        ValueError: unknown id (the message lists the simloop ids and the local ones); a simloop id not
            generated and ``generate_missing=False``; corrupt or partial dataset (names the path, suggests
            ``make_dataset(..., overwrite=True)``; nothing is deleted); NaN/inf in a field (names it and
            the count); a non-flat observation/action space.
        MissingArtifactError: generation needs a behaviour checkpoint that is missing.
    """
    root = _datasets_root()
    path = root / dataset_id
    if not (path / "data").exists():
        if dataset_id in DATASETS:
            if not generate_missing:
                raise ValueError(
                    f"dataset {dataset_id!r} is not generated yet (looked in {path}); "
                    f"run engine.data.make_dataset({dataset_id!r}) or pass generate_missing=True"
                )
            make_dataset(dataset_id, progress=True)
        elif download:
            import minari

            minari.download_dataset(dataset_id)
        else:
            raise unknown_id_error(dataset_id, root)
    episodes, meta, env_id = read_episodes(dataset_id, path)
    if not episodes:
        raise ValueError(f"dataset {dataset_id!r} at {path} holds no episodes")
    for e in episodes:
        if e.observations.ndim != 2 or e.actions.ndim != 2 or len(e.observations) != len(e.actions) + 1:
            raise ValueError(
                f"dataset {dataset_id!r} at {path}: expected flat observations [T+1, D] and actions [T, A], "
                f"got {e.observations.shape} and {e.actions.shape}"
            )
    observations = np.concatenate([e.observations for e in episodes])  # [N + num_episodes, D]
    fields = {
        "observations": observations,
        "actions": np.concatenate([e.actions for e in episodes]),
        "rewards": np.concatenate([e.rewards for e in episodes]),
    }
    _check_finite(dataset_id, path, fields)
    is_last = np.zeros(len(observations), bool)  # row of each episode's final observation s_T
    is_last[np.cumsum([len(e.observations) for e in episodes]) - 1] = True
    obs, next_obs = observations[~is_last], observations[np.roll(~is_last, 1)]  # s_t and s_{t+1}, [N, D]

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)

    if dataset_id in DATASETS:
        env_name = DATASETS[dataset_id].env
    else:
        env_name = next((s.name for s in ENVS.values() if s.gym_id == env_id), None)
    ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
    return TransitionData(
        obs=tensor(obs),
        act=tensor(fields["actions"]),
        rew=tensor(fields["rewards"]),
        next_obs=tensor(next_obs),
        terminal=tensor(np.concatenate([e.terminations for e in episodes])),
        dataset_id=dataset_id,
        env_name=env_name,
        episode_returns=np.array([e.rewards.sum(dtype=np.float64) for e in episodes]),
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
    )
