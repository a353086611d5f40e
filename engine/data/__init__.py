"""Offline datasets: the embedded ``simloop/<env>/<level>-v0`` datasets and any Minari dataset, loaded into
device tensors, with D4RL normalised scores.

One job per module:

- ``registry``: the recipes of the ``simloop`` datasets (``DATASETS``, ``DEFAULT_DATASET``) and the D4RL
  ``-v2`` datasets of the same names (``D4RL_DATASETS``, ``D4RL_SOURCES``).
- ``minari_io``: datasets on disk in Minari's layout (the datasets root, reading and writing episodes).
- ``generate``: ``make_dataset``, the rollout of the behaviour policies that makes a ``simloop`` dataset.
- ``loader``: ``load``, a dataset as flat transition tensors (``TransitionData``).
- ``score``: ``normalized_score``, D4RL's normalised score of returns on a dataset.
- ``__main__``: the command line, ``python -m engine.data list | make``.

The names below are the package's interface (``from engine import data; data.load(...)``). Importing it
imports neither ``minari`` nor ``gymnasium``, nor the SAC trainer.
"""

from engine.data.generate import MissingArtifactError, make_dataset
from engine.data.loader import TransitionData, check_id, load
from engine.data.minari_io import _datasets_root
from engine.data.registry import (
    D4RL_DATASETS,
    D4RL_SOURCES,
    DATASETS,
    DEFAULT_DATASET,
    LEVELS,
    DatasetRecipe,
    get_recipe,
)
from engine.data.score import normalized_score

__all__ = [
    "D4RL_DATASETS",
    "D4RL_SOURCES",
    "DATASETS",
    "DEFAULT_DATASET",
    "LEVELS",
    "DatasetRecipe",
    "MissingArtifactError",
    "TransitionData",
    "_datasets_root",
    "check_id",
    "get_recipe",
    "load",
    "make_dataset",
    "normalized_score",
]
