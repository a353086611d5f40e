"""D4RL normalised scores of episode returns on a dataset, with the reference returns of its environment
(simloop ids, ``engine.envs``) or those its Minari metadata stores (other ids)."""

from __future__ import annotations

from engine.data.minari_io import _datasets_root, unknown_id_error
from engine.data.registry import DATASETS
from engine.envs import d4rl_score, get_env_spec


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
            raise unknown_id_error(dataset_id, root)
        try:
            meta = MinariStorage.read_raw_metadata(data_path)
        except Exception as e:  # noqa: BLE001 - unreadable metadata: say which file
            raise ValueError(f"cannot read the metadata of {dataset_id!r} at {data_path}: {e}") from e
        lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
        if lo is None or hi is None:
            raise ValueError(f"dataset {dataset_id!r} at {data_path} stores no ref_min_score/ref_max_score")
    return d4rl_score(returns, lo, hi)
