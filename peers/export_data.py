"""Export a simloop dataset for the peer libraries: one ``.npz`` of flat float32 transitions that the peer
scripts (``peers/*.py``, run in the peers' own venvs, without simloop) read with
``peers.peer_common.load_dataset``.

    python -m peers.export_data simloop/halfcheetah/medium-v0 runs/peers/data/halfcheetah-medium.npz

The arrays are ``engine.data.load``'s (``obs, next_obs [N, D]``, ``act [N, A]``, ``rew, terminal [N]``) plus
``timeout [N]``: 1 on the last transition of every episode that did not terminate (time limit, or cut at the
dataset's transition budget). Episode ends are the rows where ``next_obs[i] != obs[i + 1]`` (a reset follows)
and the last row; their count is checked against the dataset's episode count. Stored with them: the dataset id,
simloop's env name, its Gymnasium id and the behaviour policy's normalised score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from peers.peer_common import load_dataset, save_dataset


def episode_flags(obs: np.ndarray, next_obs: np.ndarray, terminal: np.ndarray, num_episodes: int) -> np.ndarray:
    """``timeout [N]`` float32 for flat transitions in episode order.

    Args:
        obs, next_obs: ``[N, D]``; within an episode ``next_obs[i] == obs[i + 1]`` exactly (both are slices of
            the episode's stored observations).
        terminal: ``[N]``, 1 where the episode reached a terminal state.
        num_episodes: episodes in the dataset (``len(TransitionData.episode_returns)``).
    Raises:
        ValueError: the boundaries found are not ``num_episodes``, or a terminal row is not an episode's last.
    """
    end = np.ones(len(obs), dtype=bool)
    end[:-1] = np.any(next_obs[:-1] != obs[1:], axis=1)
    if int(end.sum()) != num_episodes:
        raise ValueError(
            f"found {int(end.sum())} episode ends where next_obs[i] != obs[i + 1], but the dataset holds "
            f"{num_episodes} episodes"
        )
    term = terminal > 0.5
    if (term & ~end).any():
        raise ValueError(f"{int((term & ~end).sum())} terminal rows are followed by a row of the same episode")
    return (end & ~term).astype(np.float32)


def export(dataset_id: str, out: str | Path) -> Path:
    """Write ``dataset_id`` (loaded with ``engine.data.load``, generated first if it is a simloop id not yet
    on this machine) to ``out`` (``.npz``). Returns the path written.

    Raises:
        ValueError: ``out`` not ending in ``.npz``; a dataset of an env simloop does not support or without
            reference scores; inconsistent episode boundaries; everything ``engine.data.load`` raises.
    """
    from engine.data import load
    from engine.envs import get_env_spec

    if Path(out).suffix != ".npz":
        raise ValueError(f"output must end in .npz; got {out}")
    data = load(dataset_id)
    if data.env_name is None:
        raise ValueError(f"dataset {dataset_id!r} is not from an environment simloop evaluates on")
    obs, next_obs = data.obs.numpy(), data.next_obs.numpy()
    terminal = data.terminal.numpy()
    arrays = dict(
        obs=obs,
        act=data.act.numpy(),
        rew=data.rew.numpy(),
        next_obs=next_obs,
        terminal=terminal,
        timeout=episode_flags(obs, next_obs, terminal, len(data.episode_returns)),
    )
    return save_dataset(
        out,
        arrays,
        dataset_id=dataset_id,
        env=data.env_name,
        gym_id=get_env_spec(data.env_name).gym_id,
        behavior_normalized_score=data.behavior_normalized_score,
    )


@dataclass(frozen=True)
class Args:
    """Export a simloop (Minari) dataset to an .npz the peer adapters read."""

    dataset_id: tyro.conf.Positional[str]
    """Minari id, e.g. simloop/halfcheetah/medium-v0."""
    out: tyro.conf.Positional[Path]
    """Destination .npz file."""


def main(argv: list[str] | None = None) -> Path:
    args = tyro.cli(Args, args=argv)
    path = export(args.dataset_id, args.out)
    d = load_dataset(path)
    print(
        f"{path}: {len(d.rew):,} transitions, {d.num_episodes:,} episodes ({int(d.terminal.sum()):,} terminal), "
        f"env {d.gym_id}, behaviour normalised score {d.behavior_normalized_score:.1f}"
    )
    return path


if __name__ == "__main__":
    main()
