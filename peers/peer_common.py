"""What the peer adapters share, on both sides of the bridge: the dataset file written by
``peers.export_data`` (simloop's venv) and read by the peer scripts (their own venvs), the layout of
a peer run directory, and the export of policy snapshots as TorchScript.

This module imports only numpy and torch (no simloop ``engine``). Everything imports it as ``peers.peer_common``:
simloop's side (``peers.export_data``, ``peers.score``, the tests) and the peer scripts, which run from the
repository root as ``python -m peers.<script>`` with the peer's own python.

A peer run directory holds:

- ``policies/step_XXXXXXX.pt``: TorchScript snapshots, each mapping ``obs [B, D] float32`` to the
  deterministic action ``[B, A]`` in ``[-1, 1]``, with any observation normalisation of the peer inside;
  loadable with ``torch.jit.load`` without the peer installed.
- ``peer_run.json``: what ran (``PeerRecord``), rewritten at every snapshot so that a killed run still says
  how far it got.
- the peer's own logs, under a folder named after the library.
"""

from __future__ import annotations

import hashlib
import json
import platform
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

FORMAT_VERSION = 1
"""Version of the dataset file layout; bumped when a key changes meaning."""
ARRAY_KEYS = ("obs", "act", "rew", "next_obs", "terminal", "timeout")
"""Float32 arrays of a dataset file: ``obs, next_obs [N, D]``, ``act [N, A]``, ``rew, terminal, timeout [N]``."""
SNAPSHOT_DIR = "policies"
SNAPSHOT_RE = re.compile(r"^step_(\d{7,})\.pt$")
RECORD_FILE = "peer_run.json"


@dataclass(frozen=True, eq=False)
class PeerDataset:
    """A simloop dataset as flat transitions (one row per environment step, in episode order).

    ``terminal[i] = 1`` where the episode reached a real terminal state; ``timeout[i] = 1`` on the last
    transition of every episode that ended without one (time limit, or cut at the dataset's transition budget).
    Exactly one of them is set on the last row of each episode and neither elsewhere, so episode ``k`` spans
    the rows up to its ``k``-th set flag. Within an episode ``next_obs[i] == obs[i + 1]``.
    """

    obs: np.ndarray
    """``[N, D]`` float32."""
    act: np.ndarray
    """``[N, A]`` float32, in ``[-1, 1]``."""
    rew: np.ndarray
    """``[N]`` float32: environment reward of the transition."""
    next_obs: np.ndarray
    """``[N, D]`` float32."""
    terminal: np.ndarray
    """``[N]`` float32 in {0, 1}."""
    timeout: np.ndarray
    """``[N]`` float32 in {0, 1}."""
    dataset_id: str
    """Minari id, e.g. ``simloop/halfcheetah/medium-v0``."""
    env: str
    """simloop's short env name (``halfcheetah``, ``hopper``, ``walker2d``)."""
    gym_id: str
    """Gymnasium id of the true simulator (``HalfCheetah-v5``)."""
    level: str
    """Part of the id after the env (``medium`` for ``simloop/halfcheetah/medium-v0``)."""
    behavior_normalized_score: float
    """D4RL normalised score of the dataset's mean episode return."""

    @property
    def num_episodes(self) -> int:
        return int((self.terminal + self.timeout).sum())


def save_dataset(
    path: str | Path,
    arrays: dict[str, np.ndarray],
    *,
    dataset_id: str,
    env: str,
    gym_id: str,
    behavior_normalized_score: float,
) -> Path:
    """Write a dataset file (uncompressed ``.npz``), first to a temporary name, then moved into place.

    Args:
        path: destination; must end in ``.npz``.
        arrays: every key of ``ARRAY_KEYS``, checked as ``load_dataset`` checks them.
    Returns:
        the path written.
    Raises:
        ValueError: a path not ending in ``.npz``, or arrays that ``load_dataset`` would refuse.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"dataset file must end in .npz; got {path}")
    meta = dict(
        format_version=np.int64(FORMAT_VERSION),
        dataset_id=np.str_(dataset_id),
        env=np.str_(env),
        gym_id=np.str_(gym_id),
        behavior_normalized_score=np.float64(behavior_normalized_score),
    )
    data = {k: np.ascontiguousarray(arrays[k], dtype=np.float32) for k in ARRAY_KEYS}
    _check_arrays(data, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **data, **meta)
    tmp.replace(path)
    return path


def _check_arrays(d: dict[str, np.ndarray], where: str) -> None:
    n = len(d["rew"])
    shapes = {k: d[k].shape for k in ARRAY_KEYS}
    ok = (
        n > 0
        and d["obs"].ndim == 2
        and d["act"].ndim == 2
        and d["next_obs"].shape == d["obs"].shape
        and d["obs"].shape[0] == n
        and d["act"].shape[0] == n
        and all(d[k].shape == (n,) for k in ("rew", "terminal", "timeout"))
    )
    if not ok:
        raise ValueError(
            f"{where}: expected obs, next_obs [N, D], act [N, A], rew, terminal, timeout [N]; got {shapes}"
        )
    for k in ARRAY_KEYS:
        if d[k].dtype != np.float32:
            raise ValueError(f"{where}: {k} must be float32, got {d[k].dtype}")
        bad = int(d[k].size - np.isfinite(d[k]).sum())
        if bad:
            raise ValueError(f"{where}: {bad} non-finite values in {k}")
    for k in ("terminal", "timeout"):
        if not np.isin(d[k], (0.0, 1.0)).all():
            raise ValueError(f"{where}: {k} must hold only 0 and 1")
    if (d["terminal"] * d["timeout"]).any():
        raise ValueError(f"{where}: a row is both terminal and timeout; the last row of an episode holds one of them")
    if d["terminal"][-1] + d["timeout"][-1] != 1.0:
        raise ValueError(f"{where}: the last row must end an episode (terminal or timeout set)")


def load_dataset(path: str | Path) -> PeerDataset:
    """Read a dataset file written by ``save_dataset`` (``python -m peers.export_data``).

    Raises:
        FileNotFoundError: no such file (the message names the export command).
        ValueError: a missing key, another format version, wrong shapes or dtypes, NaN/inf, flags outside {0, 1},
            a row both terminal and timeout, a last row that ends no episode.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no dataset file {path}: write it in simloop's venv with `python -m peers.export_data DATASET_ID {path}`"
        )
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in (*ARRAY_KEYS, "format_version", "dataset_id", "env", "gym_id") if k not in z.files]
        if missing:
            raise ValueError(f"{path} is not a peer dataset file: missing {', '.join(missing)}")
        if int(z["format_version"]) != FORMAT_VERSION:
            raise ValueError(f"{path}: format version {int(z['format_version'])}, this code reads {FORMAT_VERSION}")
        d = {k: z[k] for k in ARRAY_KEYS}
        meta = {k: z[k].item() for k in ("dataset_id", "env", "gym_id", "behavior_normalized_score")}
    _check_arrays(d, str(path))
    dataset_id = str(meta["dataset_id"])
    level = dataset_id.rsplit("/", 1)[-1].rsplit("-v", 1)[0]
    return PeerDataset(
        **d,
        dataset_id=dataset_id,
        env=str(meta["env"]),
        gym_id=str(meta["gym_id"]),
        level=level,
        behavior_normalized_score=float(meta["behavior_normalized_score"]),
    )


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    """``<run_dir>/policies/step_<step, 7 digits>.pt``."""
    return Path(run_dir) / SNAPSHOT_DIR / f"step_{step:07d}.pt"


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of the snapshots in ``run_dir/policies``, by step.

    Raises:
        ValueError: a ``.pt`` file there whose name is not ``step_<digits>.pt``.
    """
    folder = Path(run_dir) / SNAPSHOT_DIR
    found = []
    for p in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
        m = SNAPSHOT_RE.match(p.name)
        if m is None:
            raise ValueError(f"{p}: snapshot names must be step_<7+ digits>.pt")
        found.append((int(m.group(1)), p))
    return sorted(found)


def check_snapshot(path: str | Path, reference: Callable[[torch.Tensor], torch.Tensor], obs: np.ndarray) -> float:
    """Load a saved TorchScript policy and compare it with the peer's own greedy action on ``obs``.

    Args:
        path: the ``.pt`` file.
        reference: the peer's deterministic action, ``obs [B, D] float32 tensor -> [B, A]`` (tensor or array).
        obs: ``[B, D]`` float32 observations (a few dataset rows; ``B`` should differ from the batch the
            module was traced with, so that a batch size baked into a trace shows up).
    Returns:
        the largest absolute difference.
    Raises:
        ValueError: output of another shape, outside ``[-1, 1]``, or differing from the reference by over 1e-4.
    """
    module = torch.jit.load(str(path), map_location="cpu")
    x = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        got = module(x)
        want = torch.as_tensor(np.asarray(reference(x)), dtype=torch.float32)
    if got.shape != want.shape or got.ndim != 2 or got.shape[0] != x.shape[0]:
        raise ValueError(f"{path}: snapshot maps obs {tuple(x.shape)} to {tuple(got.shape)}; peer: {tuple(want.shape)}")
    diff = float((got - want).abs().max())
    if diff > 1e-4 or float(got.abs().max()) > 1.0 + 1e-6:
        raise ValueError(f"{path}: snapshot differs from the peer's greedy action by {diff:.2e} or leaves [-1, 1]")
    return diff


@dataclass
class PeerRecord:
    """Contents of ``peer_run.json``: what a peer run did, read by ``peers.score``."""

    algo: str
    """``offlinerlkit-mopo``, ``offlinerlkit-combo``, ``d3rlpy-iql`` or ``d3rlpy-td3plusbc``."""
    dataset: str
    env: str
    seed: int
    num_updates: int
    """Policy updates the run was asked for."""
    behavior_normalized_score: float
    code: dict
    """``{"library", "repository", "commit"}`` or ``{"library", "repository", "version"}``."""
    settings: dict
    """Every hyperparameter the run used, with ``source``: the file and commit it came from."""
    data_file: str
    torch_threads: int
    torch_version: str = torch.__version__
    python: str = platform.python_version()
    finished: bool = False
    updates_done: int = 0
    wall_s: float = 0.0
    """Seconds from the start of the script to the last snapshot (data loading, model fitting and updates)."""
    phases_s: dict = field(default_factory=dict)
    """Seconds per phase (e.g. ``dynamics``, ``updates``, ``rollouts``)."""
    updates_per_s: float | None = None
    """Policy updates per second of the whole update phase (its setup and rollouts included)."""
    interval_updates_per_s: float | None = None
    """Policy updates per second between the last two snapshots (steady state; rollouts included)."""
    snapshots: list = field(default_factory=list)
    """``[{"step", "file", "wall_s"}]``."""
    extra: dict = field(default_factory=dict)
    """Peer-specific figures (OfflineRL-Kit: the dynamics fit's epochs and holdout loss)."""
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))

    def write(self, run_dir: str | Path) -> None:
        write_json(Path(run_dir) / RECORD_FILE, asdict(self))

    def mark_resumed(self, run_dir: str | Path, step: int) -> None:
        """A killed run continues from its state at update ``step``: forget snapshots recorded after it (they are
        taken again), note the resume in ``extra["resumed"]`` and say so on stdout."""
        self.snapshots = [x for x in self.snapshots if x["step"] <= step]
        self.extra.setdefault("resumed", []).append({"step": step, "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        print(f"resumed {run_dir} at update {step}", flush=True)

    def add_snapshot(self, run_dir: str | Path, step: int, path: Path, t0: float, t_updates: float) -> None:
        """Record a snapshot written at update ``step`` and rewrite ``peer_run.json``.

        ``t0``, ``t_updates``: ``time.perf_counter()`` at the start of the script and of the update phase."""
        now = time.perf_counter()
        prev_step, prev_t = (self.snapshots[-1]["step"], self.snapshots[-1]["wall_s"]) if self.snapshots else (0, None)
        self.updates_done, self.wall_s = step, now - t0
        self.phases_s["updates"] = now - t_updates
        self.updates_per_s = step / (now - t_updates)
        if prev_t is not None:
            self.interval_updates_per_s = (step - prev_step) / (now - t0 - prev_t)
        self.snapshots.append({"step": step, "file": str(Path(path).relative_to(run_dir)), "wall_s": now - t0})
        self.write(run_dir)
        rate = self.interval_updates_per_s or self.updates_per_s
        print(f"step {step}: snapshot {Path(path).name}, {rate:.1f} updates/s, {now - t0:.0f} s", flush=True)


def data_sha256(data: PeerDataset) -> str:
    """SHA-256 of a dataset's arrays (``ARRAY_KEYS`` in order, their bytes): which data a run trained on. simloop
    generates its datasets on each machine, and the bytes differ across CPU kinds."""
    h = hashlib.sha256()
    for k in ARRAY_KEYS:
        h.update(np.ascontiguousarray(getattr(data, k)).tobytes())
    return h.hexdigest()


def check_same_data(record: dict, digest: str) -> dict:
    """A resumed run's data must be the data it started on: returns ``record`` with ``extra["data_sha256"]`` set
    (added to a record that predates it). Raises ValueError when the record names other data (another machine's
    export of the same dataset id, or another file), before anything is trained or saved."""
    saved = record.get("extra", {}).get("data_sha256")
    if saved is not None and saved != digest:
        raise ValueError(
            f"{record.get('data_file')}: its data (sha256 {digest[:16]}...) is not the data this run started on "
            f"({saved[:16]}...); simloop's datasets differ across CPU kinds: resume where the run's data can be "
            "exported again byte for byte, or start the run again"
        )
    record.setdefault("extra", {})["data_sha256"] = digest
    return record


def read_record(run_dir: str | Path) -> dict:
    """``peer_run.json`` of a run directory. Raises FileNotFoundError when absent."""
    path = Path(run_dir) / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a peer run directory (see peers/README.md)")
    return json.loads(path.read_text())


def write_json(path: str | Path, obj) -> None:
    """Write ``obj`` as indented JSON through a temporary file (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def new_run_dir(run_dir: str | Path) -> Path:
    """Create a fresh run directory. Raises FileExistsError if it already holds a peer run or snapshots."""
    run_dir = Path(run_dir)
    if (run_dir / RECORD_FILE).exists() or list_snapshots(run_dir):
        raise FileExistsError(f"{run_dir} already holds a peer run; pass another --out (nothing was overwritten)")
    (run_dir / SNAPSHOT_DIR).mkdir(parents=True, exist_ok=True)
    return run_dir


def set_threads(num_threads: int) -> None:
    """torch's intra-op and inter-op thread pools. (numpy's BLAS reads ``OMP_NUM_THREADS`` when it is first
    imported, so the commands set that variable in the environment as well.)

    Raises ValueError for ``num_threads < 1``."""
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1; got {num_threads}")
    torch.set_num_threads(num_threads)
    try:
        torch.set_num_interop_threads(num_threads)
    except RuntimeError:  # already set once in this process
        pass


def rng_state() -> dict:
    """python's, numpy's global and torch's CPU random states, as plain values and tensors (``torch.load`` with
    ``weights_only=True`` reads them back)."""
    kind, key, *rest = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(key.astype(np.int64)), *rest],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])


def save_atomic(obj, path: str | Path) -> None:
    """``torch.save`` through a temporary file (a kill never leaves a half-written file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


RESUME_FILE = "resume.pt"
"""A peer run's training state at its last snapshot (written by the adapters that can resume)."""


def resume_args(run_dir: str | Path, state_files: tuple[str, ...] = (RESUME_FILE,)) -> dict:
    """The saved ``--`` arguments (``peer_run.json``'s ``extra.args``) and record of a run to resume.

    ``state_files``: the files a resumable run holds, any one of which will do (the OfflineRL-Kit adapters' also
    ``fit_state.pt``, written while the ensemble fits). Raises FileNotFoundError when the run has none of them (it
    stopped before it saved any state: start it again) or no record, ValueError when it has finished."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if record["finished"]:
        raise ValueError(f"{run_dir} finished at {record['updates_done']} updates; nothing to resume")
    if not any((run_dir / name).is_file() for name in state_files):
        names = " or ".join(state_files)
        raise FileNotFoundError(f"no {names} in {run_dir}: it stopped before it saved any state; start it again")
    return record
