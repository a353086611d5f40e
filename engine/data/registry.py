"""The registry of the embedded ``simloop/<env>/<level>-v0`` datasets: how each is made (its recipe) and
the D4RL ``-v2`` dataset of the same name that it imitates, with that dataset's published returns.

The ``simloop`` ids are generated on this machine, D4RL style (Fu et al. 2020, "D4RL: Datasets for Deep
Data-Driven Reinforcement Learning", Sec. 5 and d4rl/infos.py), from Gymnasium MuJoCo v5 environments:

- ``random``: 1M transitions of uniform random actions in [-1, 1]^A.
- ``medium`` / ``expert``: 1M transitions of the stochastic policy of a SAC checkpoint in
  ``engine/policies/`` (medium: stopped at about a third of expert return; expert: fully trained).
- ``medium-expert``: the medium and the expert datasets concatenated (2M transitions).
- ``medium-replay``: the replay buffer of the medium policy's training run, up to the step at which
  the medium snapshot was taken (the run's ``checkpoint.pt`` under ``artifacts/behavior/<env>``).

``engine.data.generate`` makes a dataset from its recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.envs import ENVS

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


def get_recipe(dataset_id: str) -> DatasetRecipe:
    """The recipe of a ``simloop`` id. Raises ValueError listing the registered ids."""
    if dataset_id not in DATASETS:
        raise ValueError(f"{dataset_id!r} is not a simloop dataset; registered: {', '.join(DATASETS)}")
    return DATASETS[dataset_id]
