"""Offline datasets: Minari storage, the embedded ``simloop/<env>/<level>-v0`` datasets, and their
loading into device tensors.

Any Minari dataset id present locally loads (``load``). The ``simloop`` ids are generated on this
machine, D4RL style (Fu et al. 2020, "D4RL: Datasets for Deep Data-Driven Reinforcement Learning",
Sec. 5 and d4rl/infos.py), from Gymnasium MuJoCo v5 environments:

- ``random``: 1M transitions of uniform random actions in [-1, 1]^A.
- ``medium`` / ``expert``: 1M transitions of the stochastic policy of a SAC checkpoint in
  ``engine/policies/`` (medium: stopped at about a third of expert return; expert: fully trained).
- ``medium-expert``: the medium and the expert datasets concatenated (2M transitions).
- ``medium-replay``: the replay buffer of the medium policy's training run, up to the step at which
  the medium snapshot was taken (the run's ``checkpoint.pt`` under ``artifacts/behavior/<env>``).

As in D4RL, datasets are budgeted in transitions, not episodes: episodes still running when the
budget is reached are cut and marked truncated. ``terminations`` are Gymnasium's ``terminated``
(a real terminal state); ``truncations`` mark the 1000-step time limit and such cuts, and are
never terminals. Scores are normalised with D4RL's reference returns (``engine.envs``), stored as
Minari ``ref_min_score`` / ``ref_max_score``.

Minari keeps datasets under ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``). A dataset
is written into a hidden staging folder there and moved into place only when complete, so an
interrupted generation never leaves a partial dataset behind. Nothing here deletes data on error.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from engine import behavior
from engine.buffer import Batch
from engine.envs import ENVS, get_env_spec, make_env

if TYPE_CHECKING:
    import minari

REPO_ROOT = Path(__file__).resolve().parents[1]
BEHAVIOR_RUN_DIR = REPO_ROOT / "artifacts" / "behavior"
"""Where ``python -m engine.behavior train --out artifacts/behavior/<env>`` keeps its runs."""

LEVELS = ("random", "medium", "expert", "medium-replay", "medium-expert")

D4RL_SOURCES: dict[str, str] = {
    "v2 logs": (
        "YuweiYin/UBC_CPSC_533V, Project/log/get_offline_data/<env>-<level>.log at commit 9f2592a6 (2024): "
        "logs of parsing D4RL's -v2 hdf5 files into episodes, line 'The number of collected samples' and "
        "'Trajectory rewards: mean, std' (numpy std, complete episodes only). The medium, medium-replay and "
        "expert figures agree to every digit with the pasted output of decision-transformer's "
        "download_d4rl_datasets.py in SiliHuang-ai/IDT, gym/data/download_d4rl_datasets.py at commit 96e81ac5"
    ),
}
"""Citation of each source label used in ``D4RL_DATASETS`` (label -> repository, path and commit)."""

D4RL_DATASETS: dict[tuple[str, str], tuple[float, float, str]] = {
    # (env, level): (mean episode return, std, source label)
    ("halfcheetah", "random"): (-288.797119, 80.430679, "v2 logs"),
    ("halfcheetah", "medium"): (4770.334961, 355.750397, "v2 logs"),
    ("halfcheetah", "expert"): (10656.425781, 441.682709, "v2 logs"),
    ("halfcheetah", "medium-replay"): (3093.285645, 1680.693970, "v2 logs"),
    ("halfcheetah", "medium-expert"): (7713.380371, 2970.242432, "v2 logs"),
    ("hopper", "random"): (18.398905, 17.451160, "v2 logs"),
    ("hopper", "medium"): (1422.056152, 378.953705, "v2 logs"),
    ("hopper", "expert"): (3511.357666, 328.585968, "v2 logs"),
    ("hopper", "medium-replay"): (467.302032, 511.025604, "v2 logs"),
    ("hopper", "medium-expert"): (2089.878418, 1039.956909, "v2 logs"),
    ("walker2d", "random"): (1.871351, 5.812726, "v2 logs"),
    ("walker2d", "medium"): (2852.088379, 1095.443359, "v2 logs"),
    ("walker2d", "expert"): (4920.506836, 136.394943, "v2 logs"),
    ("walker2d", "medium-replay"): (682.701294, 895.955566, "v2 logs"),
    ("walker2d", "medium-expert"): (3796.571777, 1312.282593, "v2 logs"),
}
"""The D4RL ``-v2`` dataset of the same name as each simloop recipe, keyed by ``(env, level)``: its mean and
std episode return (environment reward units, undiscounted, over its complete episodes), read in a public
source named by the label (a key of ``D4RL_SOURCES``). ``list --markdown`` shows the mean as a
D4RL normalised score with D4RL's reference returns (``engine.envs``). D4RL's own paper and repository
publish no per-dataset returns; these are logs of parsing its released files.
The medium and expert means are also the ``--target-return`` hint given when a behaviour checkpoint is
missing (``engine.behavior export``)."""


@dataclass(frozen=True)
class DatasetRecipe:
    """How one ``simloop`` dataset is made."""

    dataset_id: str
    """Minari id, ``simloop/<env>/<level>-v0``."""
    env: str
    """Environment short name (``engine.envs.ENVS`` key)."""
    level: str
    """One of ``LEVELS``."""
    num_transitions: int | None
    """Transitions to collect (D4RL: 1M); None where the size follows from the sources
    (medium-expert: both components; medium-replay: the replay buffer up to the medium snapshot)."""
    seed: int | None
    """Seed of the environment resets and the action sampling; None for derived datasets."""
    policy: str | None
    """Checkpoint file name under ``engine/policies/``; None for uniform random actions.
    For medium-replay: the medium checkpoint, whose ``train_step`` says where the replay is cut."""
    components: tuple[str, ...] = ()
    """medium-expert: the dataset ids concatenated, in order."""
    target_return: float | None = None
    """Approximate D4RL return of the behaviour policy (hint for ``engine.behavior export``)."""
    max_episode_steps: int = 1000
    """Time limit of an episode (steps); reaching it is a truncation, not a terminal."""
    num_envs: int = 50
    """Environments stepped in lockstep, the policy batched over them (1000 = 20 x 50 episodes)."""


def _recipe(env: str, level: str) -> DatasetRecipe:
    dataset_id = f"simloop/{env}/{level}-v0"
    if level == "random":
        return DatasetRecipe(dataset_id, env, level, 1_000_000, 0, None)
    if level in ("medium", "expert"):
        seed = 1 if level == "medium" else 2
        target = D4RL_DATASETS[(env, level)][0]
        return DatasetRecipe(dataset_id, env, level, 1_000_000, seed, f"{env}-{level}.pt", target_return=target)
    if level == "medium-expert":
        parts = (f"simloop/{env}/medium-v0", f"simloop/{env}/expert-v0")
        return DatasetRecipe(dataset_id, env, level, None, None, None, components=parts)
    target = D4RL_DATASETS[(env, "medium")][0]
    return DatasetRecipe(dataset_id, env, level, None, None, f"{env}-medium.pt", target_return=target)


DATASETS: dict[str, DatasetRecipe] = {r.dataset_id: r for r in (_recipe(e, lv) for e in ENVS for lv in LEVELS)}
"""Registry of the embedded datasets, keyed by Minari id."""
DEFAULT_DATASET = "simloop/halfcheetah/medium-v0"
"""The embedded default dataset of every command (generated locally on first use)."""


class MissingArtifactError(FileNotFoundError, ValueError):
    """A behaviour checkpoint or training run needed to generate a dataset is not on disk.
    The message names the file and the commands that make it (catchable as either base class)."""


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
        mean = float(self.episode_returns.mean())
        return 100.0 * (mean - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


class _Episode(NamedTuple):
    """One episode in Minari's layout: ``observations [T+1, D]`` float64, ``actions [T, A]`` float32,
    ``rewards [T]`` float64, ``terminations, truncations [T]`` bool, ``seed`` of its reset (or None)."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    seed: int | None


def get_recipe(dataset_id: str) -> DatasetRecipe:
    """The recipe of a ``simloop`` id. Raises ValueError listing the registered ids."""
    if dataset_id not in DATASETS:
        raise ValueError(f"{dataset_id!r} is not a simloop dataset; registered: {', '.join(DATASETS)}")
    return DATASETS[dataset_id]


def _datasets_root() -> Path:
    """Minari's local dataset folder (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return Path(get_dataset_path())


def _local_dataset_ids(root: Path) -> list[str]:
    """Ids of the datasets under ``root`` (folders holding a ``data`` folder), hidden folders skipped."""
    if not root.is_dir():
        return []
    found = []
    for data_dir in root.rglob("data"):
        rel = data_dir.parent.relative_to(root)
        if data_dir.is_dir() and rel.parts and not any(p.startswith(".") for p in rel.parts):
            found.append(rel.as_posix())
    return sorted(found)


def _unknown_id_error(dataset_id: str, root: Path) -> ValueError:
    local = _local_dataset_ids(root)
    return ValueError(
        f"unknown dataset {dataset_id!r}: neither a simloop id nor present locally in {root}. "
        f"simloop ids: {', '.join(DATASETS)}. Local: {', '.join(local) if local else '(none)'}"
    )


def _behavior_commands(env: str, name: str, target_return: float | None) -> str:
    run = f"artifacts/behavior/{env}"
    target = f"{target_return:g}" if target_return is not None else "<return>"
    return (
        f"`python -m engine.behavior train --env {env} --out {run}` then "
        f"`python -m engine.behavior export --run {run} --target-return {target} --name {name}`"
    )


def _load_checkpoint(recipe: DatasetRecipe, policy_path: str | Path | None):
    """``(actor, info, path)`` of the recipe's behaviour policy, checked against its environment."""
    path = Path(policy_path) if policy_path is not None else behavior.POLICY_DIR / recipe.policy
    if not path.is_file():
        name = Path(recipe.policy).stem
        raise MissingArtifactError(
            f"{recipe.dataset_id} needs the behaviour policy checkpoint {path}, which does not exist. "
            f"Make it with {_behavior_commands(recipe.env, name, recipe.target_return)}"
        )
    actor, info = behavior.load_policy(path)
    spec = get_env_spec(recipe.env)
    if info.get("env") != recipe.env or (actor.obs_dim, actor.act_dim) != (spec.obs_dim, spec.act_dim):
        raise ValueError(
            f"{path} is a policy for {info.get('env')!r} (obs {actor.obs_dim}, act {actor.act_dim}), "
            f"not for {recipe.env!r} (obs {spec.obs_dim}, act {spec.act_dim})"
        )
    return actor, info, path


def _reset_seed(seed: int, episode: int) -> int:
    """Reset seed of episode ``episode`` (independent streams per (seed, episode), no collisions)."""
    return int(np.random.SeedSequence([seed, episode]).generate_state(1)[0])


def _rollout(
    env_name: str,
    actor: torch.nn.Module | None,
    *,
    seed: int,
    num_episodes: int | None,
    num_transitions: int | None,
    max_episode_steps: int,
    num_envs: int,
    progress: bool,
    desc: str,
) -> list[_Episode]:
    """Run ``num_envs`` environments in lockstep, the policy batched over all of them each step.

    Collects ``num_episodes`` whole episodes, or else exactly ``num_transitions`` transitions (the
    episodes open when the budget is reached are cut there and marked truncated, as D4RL's
    ``timeouts``). Actions are ``actor.act(obs, deterministic=False)`` or, with ``actor=None``,
    uniform in [-1, 1]; both drawn from one ``torch.Generator`` seeded with ``seed``. Episode ``k``
    (in order of start) is reset with ``_reset_seed(seed, k)``. Deterministic for fixed arguments.
    Returns the episodes in order of start.
    """
    spec = get_env_spec(env_name)
    slots = num_envs if num_episodes is None else max(1, min(num_envs, num_episodes))
    envs = [make_env(env_name, max_episode_steps=max_episode_steps, disable_env_checker=True) for _ in range(slots)]
    D, A, T = spec.obs_dim, spec.act_dim, max_episode_steps
    obs = np.zeros((slots, T + 1, D))  # [S, T+1, D] float64, as the environment returns it
    act = np.zeros((slots, T, A), np.float32)
    rew = np.zeros((slots, T))
    term = np.zeros((slots, T), bool)
    trunc = np.zeros((slots, T), bool)
    t = np.zeros(slots, np.int64)  # steps taken in each slot's current episode
    slot_episode = [-1] * slots  # episode index running in each slot, -1 when idle
    slot_seed = [0] * slots
    gen = torch.Generator().manual_seed(seed)
    done: dict[int, _Episode] = {}
    started = total = 0

    def can_start() -> bool:
        return started < num_episodes if num_episodes is not None else total < num_transitions

    def start(i: int) -> None:
        nonlocal started
        s = _reset_seed(seed, started)
        obs[i, 0] = envs[i].reset(seed=s)[0]
        t[i], slot_episode[i], slot_seed[i] = 0, started, s
        started += 1

    def finish(i: int) -> None:
        n = t[i]
        if n > 0:
            done[slot_episode[i]] = _Episode(
                obs[i, : n + 1].copy(),
                act[i, :n].copy(),
                rew[i, :n].copy(),
                term[i, :n].copy(),
                trunc[i, :n].copy(),
                slot_seed[i],
            )
        slot_episode[i] = -1

    active = []
    for i in range(slots):
        if can_start():
            start(i)
            active.append(i)
    rows = np.arange(slots)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a [S, D] batch through a small MLP: one thread is fastest (and leaves a core)
    try:
        with tqdm(total=num_transitions, disable=not progress, desc=desc, unit="transition") as bar:
            while active:
                o = torch.from_numpy(obs[rows, t].astype(np.float32))  # [S, D]; idle slots too (fixed shape)
                if actor is None:
                    a = (torch.rand(slots, A, generator=gen) * 2.0 - 1.0).numpy()  # [S, A]
                else:
                    a = actor.act(o, deterministic=False, generator=gen).numpy()  # [S, A]
                still, stepped, cut = [], 0, False
                for i in active:
                    k = t[i]
                    next_o, r, te, tr, _ = envs[i].step(a[i])
                    obs[i, k + 1], act[i, k], rew[i, k], term[i, k], trunc[i, k] = next_o, a[i], r, te, tr
                    t[i] = k + 1
                    total += 1
                    stepped += 1
                    if te or tr:
                        finish(i)
                        if can_start():
                            start(i)
                            still.append(i)
                    else:
                        still.append(i)
                    if num_episodes is None and total >= num_transitions:
                        cut = True
                        break
                bar.update(stepped)
                active = still
                if cut:
                    for i in range(slots):
                        if slot_episode[i] >= 0:
                            if t[i] > 0 and not term[i, t[i] - 1]:
                                trunc[i, t[i] - 1] = True  # budget reached: a cut, never a terminal
                            finish(i)
                    active = []
    finally:
        torch.set_num_threads(threads)
        for env in envs:
            env.close()
    return [done[k] for k in sorted(done)]


def _read_episodes(dataset_id: str, path: Path) -> tuple[list[_Episode], dict, str | None]:
    """All episodes of a local Minari dataset, its metadata and its env spec id.

    Raises ValueError naming ``path`` on any read failure (corrupt, partial, missing metadata).
    """
    import minari

    try:
        ds = minari.load_dataset(dataset_id)
        meta = dict(ds.storage.metadata)
        episodes = [
            _Episode(
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


def _replay_episodes(recipe: DatasetRecipe, policy_path: str | Path | None) -> tuple[list[_Episode], int]:
    """medium-replay: the training run's replay buffer up to the medium snapshot's ``train_step``.

    The buffer (``engine.buffer.ReplayBuffer`` state in ``<run>/checkpoint.pt``) is in insertion order
    and holds no episode boundaries; an episode ends where ``terminal`` is set or where the next row
    does not start from this row's ``next_obs`` (a reset). An end without ``terminal`` is a
    truncation (time limit), as is the last, cut episode. Returns ``(episodes, train_step)``.
    """
    run = BEHAVIOR_RUN_DIR / recipe.env
    ckpt_path = run / "checkpoint.pt"
    _, info, _ = _load_checkpoint(recipe, policy_path)
    step = info.get("meta", {}).get("train_step")
    if not ckpt_path.is_file() or step is None:
        what = f"the training run checkpoint {ckpt_path}" if step is not None else "a train_step in its checkpoint"
        name = f"{recipe.env}-medium"
        raise MissingArtifactError(
            f"{recipe.dataset_id} is the replay buffer of the medium policy's training run and needs {what}, "
            f"which is missing. Make it with {_behavior_commands(recipe.env, name, recipe.target_return)} "
            f"(keep {run})"
        )
    # weights_only=False: the run checkpoint also holds a numpy Generator; it is our own artifact.
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)["buffer"]
    if not 1 <= step <= state["size"]:
        raise ValueError(f"{ckpt_path} holds {state['size']} transitions; cannot cut it at train_step {step}")
    obs, act, rew, next_obs, terminal = (f[:step].numpy() for f in state["data"])
    ends = terminal > 0
    ends[:-1] |= (next_obs[:-1] != obs[1:]).any(axis=1)
    ends[-1] = True
    episodes, begin = [], 0
    for end in np.flatnonzero(ends):
        term = terminal[begin : end + 1] > 0
        trunc = np.zeros_like(term)
        trunc[-1] = not term[-1]
        observations = np.concatenate([obs[begin : end + 1], next_obs[end : end + 1]]).astype(np.float64)
        episodes.append(
            _Episode(observations, act[begin : end + 1], rew[begin : end + 1].astype(np.float64), term, trunc, None)
        )
        begin = end + 1
    return episodes, step


def _write(dataset_id: str, episodes: list[_Episode], recipe: DatasetRecipe, max_episode_steps: int, **meta):
    """Write ``episodes`` with ``minari.create_dataset_from_buffers`` into a hidden staging folder of the
    datasets root, then move the finished dataset into place (replacing an old one only now)."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    spec = get_env_spec(recipe.env)
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
    env = make_env(recipe.env, max_episode_steps=max_episode_steps)
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


def _episodes_for(
    recipe: DatasetRecipe,
    *,
    num_episodes: int | None,
    num_transitions: int | None,
    seed: int | None,
    max_episode_steps: int,
    num_envs: int,
    policy_path: str | Path | None,
    progress: bool,
) -> tuple[list[_Episode], str, str]:
    """Episodes of a recipe plus ``(algorithm_name, description)`` for the metadata."""
    overridden = num_episodes is not None or num_transitions is not None or seed is not None
    small = overridden or max_episode_steps != recipe.max_episode_steps or num_envs != recipe.num_envs
    if recipe.level == "medium-expert":
        if policy_path is not None:
            raise ValueError("policy_path applies to random/medium/expert datasets, not medium-expert")
        episodes = []
        for i, cid in enumerate(recipe.components):
            if small:  # a variant of the stored halves: generated in memory only
                part_seed = None if seed is None else seed + i
                part, _, _ = _episodes_for(
                    DATASETS[cid],
                    num_episodes=num_episodes,
                    num_transitions=num_transitions,
                    seed=part_seed,
                    max_episode_steps=max_episode_steps,
                    num_envs=num_envs,
                    policy_path=None,
                    progress=progress,
                )
            else:
                path = _datasets_root() / cid
                if not (path / "data").exists():
                    make_dataset(cid, progress=progress)
                part = _read_episodes(cid, path)[0]
            episodes += part
        parts = " and ".join(recipe.components)
        desc = f"simloop {recipe.dataset_id}: concatenation of {parts} (D4RL medium-expert)"
        return episodes, "concatenation", desc
    if recipe.level == "medium-replay":
        if small:
            raise ValueError("medium-replay is the training run's replay buffer; it takes no size or seed")
        episodes, step = _replay_episodes(recipe, policy_path)
        desc = (
            f"simloop {recipe.dataset_id}: replay buffer of the SAC run {BEHAVIOR_RUN_DIR / recipe.env} "
            f"up to step {step}, when the medium snapshot {recipe.policy} was taken (D4RL medium-replay)"
        )
        return episodes, "SAC (replay buffer)", desc
    if num_episodes is None and num_transitions is None:
        num_transitions = recipe.num_transitions
    seed = recipe.seed if seed is None else seed
    actor = None
    if recipe.policy is None:
        if policy_path is not None:
            raise ValueError("policy_path given for a random dataset (uniform random actions)")
        algorithm = "uniform random actions in [-1, 1]"
    else:
        actor, info, path = _load_checkpoint(recipe, policy_path)
        algorithm = f"SAC stochastic policy {path.name} (train_step {info.get('meta', {}).get('train_step')})"
    episodes = _rollout(
        recipe.env,
        actor,
        seed=seed,
        num_episodes=num_episodes,
        num_transitions=num_transitions,
        max_episode_steps=max_episode_steps,
        num_envs=num_envs,
        progress=progress,
        desc=recipe.dataset_id,
    )
    size = f"{num_episodes} episodes" if num_episodes is not None else f"{num_transitions} transitions"
    desc = (
        f"simloop {recipe.dataset_id}: {size} of {algorithm} on {get_env_spec(recipe.env).gym_id} "
        f"(time limit {max_episode_steps}), seed {seed}, {num_envs} envs in lockstep; D4RL {recipe.level}"
    )
    return episodes, algorithm, desc


def make_dataset(
    dataset_id: str,
    num_episodes: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    *,
    num_transitions: int | None = None,
    max_episode_steps: int | None = None,
    num_envs: int | None = None,
    policy_path: str | Path | None = None,
) -> minari.MinariDataset:
    """Generate a ``simloop`` dataset from its recipe and store it with Minari.

    Args:
        dataset_id: a ``DATASETS`` key.
        num_episodes: collect this many whole episodes instead of the recipe's transition budget.
        seed: seed instead of the recipe's (same seed and arguments -> identical arrays).
        progress: tqdm bar over transitions.
        overwrite: replace an existing local dataset (only once the new one is fully written).
        num_transitions: transition budget instead of the recipe's (episodes open at the end are cut).
        max_episode_steps: time limit instead of 1000 (small test datasets).
        num_envs: environments in lockstep instead of the recipe's (changes the data for a seed).
        policy_path: behaviour checkpoint instead of ``engine/policies/<env>-<level>.pt``.
    The overrides do not apply to medium-replay; for medium-expert they apply to both halves,
    generated in memory (the stored medium/expert datasets are used only without overrides).

    Throughput is bound by the MuJoCo step (about 60 of 90 us per HalfCheetah env.step); the policy runs
    once per lockstep on a ``[num_envs, D]`` batch. Measured, 20k HalfCheetah transitions, 256x256
    policy, 50 envs, 2 CPU cores shared with a SAC run: about 7,000 transitions/s (1M in about 2.5 min).

    Returns:
        the written ``minari.MinariDataset``.
    Raises:
        ValueError: unknown id, bad override, dataset already present without ``overwrite``,
            policy for another environment.
        MissingArtifactError (a FileNotFoundError and ValueError): behaviour checkpoint or training
            run missing; the message names the file and the commands that make it.
    """
    recipe = get_recipe(dataset_id)
    if num_episodes is not None and num_transitions is not None:
        raise ValueError("give num_episodes or num_transitions, not both")
    for name, value in (
        ("num_episodes", num_episodes),
        ("num_transitions", num_transitions),
        ("max_episode_steps", max_episode_steps),
        ("num_envs", num_envs),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    path = _datasets_root() / dataset_id
    if path.exists() and not overwrite:
        raise ValueError(
            f"dataset {dataset_id!r} already exists at {path}; pass overwrite=True (`make --overwrite`) to replace it"
        )
    steps = recipe.max_episode_steps if max_episode_steps is None else max_episode_steps
    episodes, algorithm, desc = _episodes_for(
        recipe,
        num_episodes=num_episodes,
        num_transitions=num_transitions,
        seed=seed,
        max_episode_steps=steps,
        num_envs=recipe.num_envs if num_envs is None else num_envs,
        policy_path=policy_path,
        progress=progress,
    )
    if not episodes:
        raise ValueError(f"no episodes generated for {dataset_id!r}")
    return _write(
        dataset_id,
        episodes,
        recipe,
        steps,
        algorithm_name=algorithm,
        code_permalink=f"simloop engine/data.py: make_dataset({dataset_id!r}), recipe {recipe}",
        description=desc,
    )


def _check_finite(dataset_id: str, path: Path, fields: dict[str, np.ndarray]) -> None:
    for name, arr in fields.items():
        bad = int(arr.size - np.isfinite(arr).sum())
        if bad:
            raise ValueError(f"dataset {dataset_id!r} at {path}: {bad} non-finite values (NaN/inf) in {name}")


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
            raise _unknown_id_error(dataset_id, root)
    episodes, meta, env_id = _read_episodes(dataset_id, path)
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


def normalized_score(dataset_id: str, returns):
    """D4RL normalised score ``100 * (R - ref_min) / (ref_max - ref_min)`` (Fu et al. 2020, Sec. 6).

    ``returns``: undiscounted episode return(s), a float or an array of any shape (same shape out).
    The reference returns come from the registry for ``simloop`` ids (``engine.envs``, D4RL's), else
    from the local dataset's Minari metadata.

    Raises:
        ValueError: the dataset stores no reference scores, or the id is unknown (lists valid ids).
    """
    if dataset_id in DATASETS:
        spec = get_env_spec(DATASETS[dataset_id].env)
        lo, hi = spec.ref_min_score, spec.ref_max_score
    else:
        from minari.dataset.minari_storage import MinariStorage

        root = _datasets_root()
        data_path = root / dataset_id / "data"
        if not data_path.exists():
            raise _unknown_id_error(dataset_id, root)
        try:
            meta = MinariStorage.read_raw_metadata(data_path)
        except Exception as e:  # noqa: BLE001 - unreadable metadata: say which file
            raise ValueError(f"cannot read the metadata of {dataset_id!r} at {data_path}: {e}") from e
        lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
        if lo is None or hi is None:
            raise ValueError(f"dataset {dataset_id!r} at {data_path} stores no ref_min_score/ref_max_score")
    return 100.0 * (returns - lo) / (hi - lo)
