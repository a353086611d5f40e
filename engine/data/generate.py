"""Generation of the embedded ``simloop`` datasets from their recipes (``engine.data.registry``): behaviour
policies (or uniform random actions) rolled out on Gymnasium MuJoCo v5 environments stepped in lockstep,
the medium policy's training replay buffer cut into episodes, and the medium and expert datasets
concatenated; the episodes are written with ``engine.data.minari_io``.

As in D4RL (Fu et al. 2020, Sec. 5), datasets are budgeted in transitions, not episodes: episodes still
running when the budget is reached are cut and marked truncated. ``terminations`` are Gymnasium's
``terminated`` (a real terminal state); ``truncations`` mark the 1000-step time limit and such cuts, and
are never terminals. Generation is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from engine import policy_io
from engine.data.minari_io import Episode, _datasets_root, read_episodes, write_episodes
from engine.data.registry import DATASETS, DatasetRecipe, get_recipe
from engine.envs import EnvSpec, get_env_spec, make_env
from engine.nets import TanhGaussianActor

if TYPE_CHECKING:
    import minari

REPO_ROOT = Path(__file__).resolve().parents[2]
BEHAVIOR_RUN_DIR = REPO_ROOT / "artifacts" / "behavior"
"""Where ``python -m engine.behavior train --out artifacts/behavior/<env>`` keeps its runs."""


class MissingArtifactError(FileNotFoundError, ValueError):
    """A behaviour checkpoint or training run needed to generate a dataset is not on disk.
    The message names the file and the commands that make it (catchable as either base class)."""


@dataclass(frozen=True)
class _Request:
    """What one generation collects: the recipe's values, or the overrides given to ``make_dataset``."""

    num_episodes: int | None
    """Whole episodes to collect (None: a transition budget)."""
    num_transitions: int | None
    """Transition budget (None with ``num_episodes``, or for derived datasets: the recipe's)."""
    seed: int | None
    """None: the recipe's."""
    max_episode_steps: int
    num_envs: int
    policy_path: str | Path | None
    """None: ``policy_io.POLICY_DIR / recipe.policy``."""
    progress: bool

    def overrides(self, recipe: DatasetRecipe) -> bool:
        """Whether anything differs from the recipe (then a derived dataset cannot reuse stored parts)."""
        sized = self.num_episodes is not None or self.num_transitions is not None or self.seed is not None
        return sized or self.max_episode_steps != recipe.max_episode_steps or self.num_envs != recipe.num_envs


def _behavior_commands(env: str, name: str, target_return: float | None) -> str:
    run = f"artifacts/behavior/{env}"
    target = f"{target_return:g}" if target_return is not None else "<return>"
    return (
        f"`python -m engine.behavior train --env {env} --out {run}` then "
        f"`python -m engine.behavior export --run {run} --target-return {target} --name {name}`"
    )


def _load_checkpoint(recipe: DatasetRecipe, policy_path: str | Path | None) -> tuple[TanhGaussianActor, dict, Path]:
    """``(actor, info, path)`` of the recipe's behaviour policy, checked against its environment."""
    path = Path(policy_path) if policy_path is not None else policy_io.POLICY_DIR / recipe.policy
    if not path.is_file():
        name = Path(recipe.policy).stem
        raise MissingArtifactError(
            f"{recipe.dataset_id} needs the behaviour policy checkpoint {path}, which does not exist. "
            f"Make it with {_behavior_commands(recipe.env, name, recipe.target_return)}"
        )
    actor, info = policy_io.load_policy(path)
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


class _Lockstep:
    """``S`` environments (slots), each running one episode at a time, whose episodes' arrays ``[S, T(+1), ...]``
    are filled in place and copied out when an episode ends. Episode ``k`` (in order of start) is reset with
    ``_reset_seed(seed, k)``. An episode starts while the budget allows: ``num_episodes`` episodes started,
    or else ``num_transitions`` transitions stepped."""

    def __init__(
        self,
        envs: list,
        spec: EnvSpec,
        max_episode_steps: int,
        seed: int,
        num_episodes: int | None,
        num_transitions: int | None,
    ):
        slots, T = len(envs), max_episode_steps
        self.envs, self.seed = envs, seed
        self.num_episodes, self.num_transitions = num_episodes, num_transitions
        self.obs = np.zeros((slots, T + 1, spec.obs_dim))  # [S, T+1, D] float64, as the environment returns it
        self.act = np.zeros((slots, T, spec.act_dim), np.float32)
        self.rew = np.zeros((slots, T))
        self.term = np.zeros((slots, T), bool)
        self.trunc = np.zeros((slots, T), bool)
        self.t = np.zeros(slots, np.int64)  # steps taken in each slot's current episode
        self.slot_episode = [-1] * slots  # episode index running in each slot, -1 when idle
        self.slot_seed = [0] * slots
        self.done: dict[int, Episode] = {}
        self.started = self.total = 0

    def can_start(self) -> bool:
        if self.num_episodes is not None:
            return self.started < self.num_episodes
        return self.total < self.num_transitions

    def start(self, i: int) -> None:
        s = _reset_seed(self.seed, self.started)
        self.obs[i, 0] = self.envs[i].reset(seed=s)[0]
        self.t[i], self.slot_episode[i], self.slot_seed[i] = 0, self.started, s
        self.started += 1

    def start_all(self) -> list[int]:
        """Start an episode in every slot the budget allows; returns those slots."""
        active = []
        for i in range(len(self.envs)):
            if self.can_start():
                self.start(i)
                active.append(i)
        return active

    def finish(self, i: int) -> None:
        n = self.t[i]
        if n > 0:
            self.done[self.slot_episode[i]] = Episode(
                self.obs[i, : n + 1].copy(),
                self.act[i, :n].copy(),
                self.rew[i, :n].copy(),
                self.term[i, :n].copy(),
                self.trunc[i, :n].copy(),
                self.slot_seed[i],
            )
        self.slot_episode[i] = -1

    def observations(self) -> torch.Tensor:
        """``[S, D]`` float32: each slot's current observation, idle slots too (fixed shape)."""
        return torch.from_numpy(self.obs[np.arange(len(self.envs)), self.t].astype(np.float32))

    def step(self, active: list[int], actions: np.ndarray) -> list[int]:
        """Step each active slot ``i`` with ``actions[i]`` (``actions: [S, A]``); a slot whose episode ends
        starts the next one if the budget allows. Once the transition budget is reached, the open episodes
        are cut there (``cut_open``) and no slot stays active. Returns the slots still active."""
        still = []
        for i in active:
            k = self.t[i]
            next_o, r, te, tr, _ = self.envs[i].step(actions[i])
            self.obs[i, k + 1], self.act[i, k], self.rew[i, k] = next_o, actions[i], r
            self.term[i, k], self.trunc[i, k] = te, tr
            self.t[i] = k + 1
            self.total += 1
            if te or tr:
                self.finish(i)
                if self.can_start():
                    self.start(i)
                    still.append(i)
            else:
                still.append(i)
            if self.num_episodes is None and self.total >= self.num_transitions:
                self.cut_open()
                return []
        return still

    def cut_open(self) -> None:
        """Finish every open episode where it stands, its last step marked truncated (D4RL's ``timeouts``)."""
        for i in range(len(self.envs)):
            if self.slot_episode[i] >= 0:
                n = self.t[i]
                if n > 0 and not self.term[i, n - 1]:
                    self.trunc[i, n - 1] = True  # budget reached: a cut, never a terminal
                self.finish(i)

    def episodes(self) -> list[Episode]:
        """The finished episodes in order of start."""
        return [self.done[k] for k in sorted(self.done)]


def _actions(actor: TanhGaussianActor | None, obs: torch.Tensor, act_dim: int, gen: torch.Generator) -> np.ndarray:
    """``[S, A]`` actions for ``obs: [S, D]``: the actor's stochastic ones, or uniform in [-1, 1] without one."""
    if actor is None:
        return (torch.rand(obs.shape[0], act_dim, generator=gen) * 2.0 - 1.0).numpy()
    return actor.act(obs, deterministic=False, generator=gen).numpy()


def _rollout(
    env_name: str,
    actor: TanhGaussianActor | None,
    *,
    seed: int,
    num_episodes: int | None,
    num_transitions: int | None,
    max_episode_steps: int,
    num_envs: int,
    progress: bool,
    desc: str,
) -> list[Episode]:
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
    lockstep = _Lockstep(envs, spec, max_episode_steps, seed, num_episodes, num_transitions)
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    try:
        active = lockstep.start_all()
        torch.set_num_threads(1)  # a [S, D] batch through a small MLP: one thread is fastest (and leaves a core)
        with tqdm(total=num_transitions, disable=not progress, desc=desc, unit="transition") as bar:
            while active:
                actions = _actions(actor, lockstep.observations(), spec.act_dim, gen)
                stepped = lockstep.total
                active = lockstep.step(active, actions)
                bar.update(lockstep.total - stepped)
    finally:
        torch.set_num_threads(threads)
        for env in envs:
            env.close()
    return lockstep.episodes()


def _behavior_episodes(recipe: DatasetRecipe, req: _Request) -> tuple[list[Episode], str, str]:
    """random / medium / expert: rollouts of the recipe's behaviour policy (or of uniform random actions)."""
    num_episodes, num_transitions = req.num_episodes, req.num_transitions
    if num_episodes is None and num_transitions is None:
        num_transitions = recipe.num_transitions
    seed = recipe.seed if req.seed is None else req.seed
    actor = None
    if recipe.policy is None:
        if req.policy_path is not None:
            raise ValueError("policy_path given for a random dataset (uniform random actions)")
        algorithm = "uniform random actions in [-1, 1]"
    else:
        actor, info, path = _load_checkpoint(recipe, req.policy_path)
        algorithm = f"SAC stochastic policy {path.name} (train_step {info.get('meta', {}).get('train_step')})"
    episodes = _rollout(
        recipe.env,
        actor,
        seed=seed,
        num_episodes=num_episodes,
        num_transitions=num_transitions,
        max_episode_steps=req.max_episode_steps,
        num_envs=req.num_envs,
        progress=req.progress,
        desc=recipe.dataset_id,
    )
    size = f"{num_episodes} episodes" if num_episodes is not None else f"{num_transitions} transitions"
    desc = (
        f"simloop {recipe.dataset_id}: {size} of {algorithm} on {get_env_spec(recipe.env).gym_id} "
        f"(time limit {req.max_episode_steps}), seed {seed}, {req.num_envs} envs in lockstep; D4RL {recipe.level}"
    )
    return episodes, algorithm, desc


def _concatenated_episodes(recipe: DatasetRecipe, req: _Request) -> tuple[list[Episode], str, str]:
    """medium-expert: the episodes of its components in order. Without overrides these are the stored
    datasets (generated first where missing); with overrides, variants generated in memory only."""
    if req.policy_path is not None:
        raise ValueError("policy_path applies to random/medium/expert datasets, not medium-expert")
    episodes = []
    for i, cid in enumerate(recipe.components):
        if req.overrides(recipe):
            part_req = replace(req, seed=None if req.seed is None else req.seed + i)
            part = _episodes_for(DATASETS[cid], part_req)[0]
        else:
            path = _datasets_root() / cid
            if not (path / "data").exists():
                make_dataset(cid, progress=req.progress)
            part = read_episodes(cid, path)[0]
        episodes += part
    parts = " and ".join(recipe.components)
    desc = f"simloop {recipe.dataset_id}: concatenation of {parts} (D4RL medium-expert)"
    return episodes, "concatenation", desc


def _replay_episodes(recipe: DatasetRecipe, req: _Request) -> tuple[list[Episode], str, str]:
    """medium-replay: the training run's replay buffer up to the medium snapshot's ``train_step``.

    The buffer (``engine.buffer.ReplayBuffer`` state in ``<run>/checkpoint.pt``) is in insertion order
    and holds no episode boundaries; an episode ends where ``terminal`` is set or where the next row
    does not start from this row's ``next_obs`` (a reset). An end without ``terminal`` is a
    truncation (time limit), as is the last, cut episode.
    """
    if req.overrides(recipe):
        raise ValueError("medium-replay is the training run's replay buffer; it takes no size or seed")
    run = BEHAVIOR_RUN_DIR / recipe.env
    ckpt_path = run / "checkpoint.pt"
    _, info, _ = _load_checkpoint(recipe, req.policy_path)
    step = info.get("meta", {}).get("train_step")
    if not ckpt_path.is_file() or step is None:
        what = f"the training run checkpoint {ckpt_path}" if step is not None else "a train_step in its checkpoint"
        name = f"{recipe.env}-medium"
        raise MissingArtifactError(
            f"{recipe.dataset_id} is the replay buffer of the medium policy's training run and needs {what}, "
            f"which is missing. Make it with {_behavior_commands(recipe.env, name, recipe.target_return)} "
            f"(keep {run})"
        )
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["buffer"]  # plain data (engine.checkpoint)
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
            Episode(observations, act[begin : end + 1], rew[begin : end + 1].astype(np.float64), term, trunc, None)
        )
        begin = end + 1
    desc = (
        f"simloop {recipe.dataset_id}: replay buffer of the SAC run {run} "
        f"up to step {step}, when the medium snapshot {recipe.policy} was taken (D4RL medium-replay)"
    )
    return episodes, "SAC (replay buffer)", desc


def _episodes_for(recipe: DatasetRecipe, req: _Request) -> tuple[list[Episode], str, str]:
    """Episodes of a recipe plus ``(algorithm_name, description)`` for the metadata."""
    if recipe.level == "medium-expert":
        return _concatenated_episodes(recipe, req)
    if recipe.level == "medium-replay":
        return _replay_episodes(recipe, req)
    return _behavior_episodes(recipe, req)


def _check_overrides(**sizes: int | None) -> None:
    """Raises ValueError for both ``num_episodes`` and ``num_transitions``, or a size below 1."""
    if sizes["num_episodes"] is not None and sizes["num_transitions"] is not None:
        raise ValueError("give num_episodes or num_transitions, not both")
    for name, value in sizes.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be positive, got {value}")


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

    Throughput is bound by the MuJoCo step; the policy runs once per lockstep on a ``[num_envs, D]`` batch
    (bench/RESULTS.md has the rate).

    Returns:
        the written ``minari.MinariDataset``.
    Raises:
        ValueError: unknown id, bad override, dataset already present without ``overwrite``,
            policy for another environment.
        MissingArtifactError (a FileNotFoundError and ValueError): behaviour checkpoint or training
            run missing; the message names the file and the commands that make it.
    """
    recipe = get_recipe(dataset_id)
    _check_overrides(
        num_episodes=num_episodes,
        num_transitions=num_transitions,
        max_episode_steps=max_episode_steps,
        num_envs=num_envs,
    )
    path = _datasets_root() / dataset_id
    if path.exists() and not overwrite:
        raise ValueError(
            f"dataset {dataset_id!r} already exists at {path}; pass overwrite=True (`make --overwrite`) to replace it"
        )
    req = _Request(
        num_episodes=num_episodes,
        num_transitions=num_transitions,
        seed=seed,
        max_episode_steps=recipe.max_episode_steps if max_episode_steps is None else max_episode_steps,
        num_envs=recipe.num_envs if num_envs is None else num_envs,
        policy_path=policy_path,
        progress=progress,
    )
    episodes, algorithm, desc = _episodes_for(recipe, req)
    if not episodes:
        raise ValueError(f"no episodes generated for {dataset_id!r}")
    return write_episodes(
        dataset_id,
        episodes,
        recipe.env,
        req.max_episode_steps,
        algorithm_name=algorithm,
        code_permalink=f"simloop engine/data/generate.py: make_dataset({dataset_id!r}), recipe {recipe}",
        description=desc,
    )
