"""Datasets on disk in Minari's layout: the datasets root, reading a dataset's episodes, and writing episodes
as a new dataset.

Minari keeps datasets under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``). A dataset is
written into a hidden staging folder there and moved into place only when complete, so an interrupted
generation never leaves a partial dataset behind. Nothing here deletes data on error. ``minari`` and
``gymnasium`` are imported only when a dataset is read or written (``import engine.data`` stays cheap).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from engine.data.registry import DATASETS
from engine.envs import get_env_spec, make_env

if TYPE_CHECKING:
    import minari


class Episode(NamedTuple):
    """One episode in Minari's layout: ``observations [T+1, D]`` float64, ``actions [T, A]`` float32,
    ``rewards [T]`` float64, ``terminations, truncations [T]`` bool, ``seed`` of its reset (or None)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None


def _datasets_root() -> Path:
    """Minari's local dataset folder (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def local_dataset_ids(root: Path) -> list[str]:
    """Ids of the datasets under ``root`` (folders holding a ``data`` folder), hidden folders skipped."""
    if not root.is_dir():
        return []
    found = []
    for data_dir in root.rglob("data"):
        rel = data_dir.parent.relative_to(root)
        if data_dir.is_dir() and rel.parts and not any(p.startswith(".") for p in rel.parts):
            found.append(rel.as_posix())
    return sorted(found)


def unknown_id_error(dataset_id: str, root: Path) -> ValueError:
    """The error for an id that is neither a simloop recipe nor a dataset under ``root``: it lists both."""
    local = local_dataset_ids(root)
    return ValueError(
        f"unknown dataset {dataset_id!r}: neither a simloop id nor present locally in {root}. "
        f"simloop ids: {', '.join(DATASETS)}. Local: {', '.join(local) if local else '(none)'}"
    )


def read_episodes(dataset_id: str, path: Path) -> tuple[list[Episode], dict, str | None]:
    """All episodes of a local Minari dataset, its metadata and its env spec id.

    Raises ValueError naming ``path`` on any read failure (corrupt, partial, missing metadata).
    """
    import minari

    try:
        ds = minari.load_dataset(dataset_id)
        meta = dict(ds.storage.metadata)
        episodes = [
            Episode(
                np.asarray(e.observations),
                np.asarray(e.actions),
                np.asarray(e.rewards),
                np.asarray(e.terminations, bool),
                np.asarray(e.truncations, bool),
                None,
            )
            for e in ds.iterate_episodes()
        ]
        if sum(len(e.rewards) for e in episodes) != meta["total_steps"] or len(episodes) != meta["total_episodes"]:
            raise ValueError(
                f"{len(episodes)} episodes / {sum(len(e.rewards) for e in episodes)} steps on disk, metadata "
                f"says {meta['total_episodes']} / {meta['total_steps']}"
            )
        env_id = ds.env_spec.id if ds.env_spec is not None else None
    except Exception as e:  # noqa: BLE001 - any failure to read means a damaged dataset; say where
        fix = (
            f"regenerate it with engine.data.make_dataset({dataset_id!r}, overwrite=True)"
            if dataset_id in DATASETS
            else "delete it and download or create it again"
        )
        raise ValueError(
            f"dataset {dataset_id!r} at {path} is corrupt or incomplete ({type(e).__name__}: {e}); "
            f"{fix}. Nothing was deleted."
        ) from e
    return episodes, meta, env_id


def write_episodes(
    dataset_id: str, episodes: list[Episode], env_name: str, max_episode_steps: int, **meta
) -> minari.MinariDataset:
    """Write ``episodes`` with ``minari.create_dataset_from_buffers`` into a hidden staging folder of the
    datasets root, then move the finished dataset into place (replacing an old one only now).

    ``env_name``'s EnvSpec gives the Gymnasium spec (with ``max_episode_steps``) and the reference scores
    stored as ``ref_min_score`` / ``ref_max_score``; ``meta`` is more Minari metadata (``algorithm_name``,
    ``code_permalink``, ``description``). Returns the written ``minari.MinariDataset``.
    """
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    spec = get_env_spec(env_name)
    buffers = [
        EpisodeBuffer(
            seed=e.seed,
            observations=e.observations,
            actions=e.actions,
            rewards=e.rewards,
            terminations=e.terminations,
            truncations=e.truncations,
        )
        for e in episodes
    ]
    env = make_env(env_name, max_episode_steps=max_episode_steps)
    root = _datasets_root()
    staging = Path(tempfile.mkdtemp(prefix=".simloop-staging-", dir=root))
    saved = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(staging)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*author_email.*")
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=env.spec,
                eval_env=gym.spec(spec.gym_id),
                author="simloop",
                ref_min_score=spec.ref_min_score,
                ref_max_score=spec.ref_max_score,
                requirements=[f"{p}=={importlib.metadata.version(p)}" for p in ("gymnasium", "mujoco")],
                data_format="hdf5",
                **meta,
            )
        for ns_file in staging.rglob("namespace_metadata.json"):  # namespaces Minari made in staging
            dest = root / ns_file.relative_to(staging)
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ns_file, dest)
        final, previous = root / dataset_id, staging / ".previous"
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            final.replace(previous)
        try:
            (staging / dataset_id).replace(final)
        except BaseException:
            if previous.exists():
                previous.replace(final)  # put the old dataset back before the staging folder goes
            raise
    finally:
        env.close()
        if saved is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = saved
        shutil.rmtree(staging, ignore_errors=True)
    return minari.load_dataset(dataset_id)
