"""The knowledge-point analysis' cache: one ``.npz`` file of entropy maps per network, seed
and layer under ``analyses/knowledge_points/``, with the fingerprint of the settings that
computed it and a SHA-256 digest, so that a rerun reuses maps only when they are what it would
compute and a damaged file is recomputed, never read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from kdscope import io
from kdscope.knowledge_points.diagnosis import EntropyTrajectory


def cache_path(out_dir: Path, name: str, seed: int, layer: str) -> Path:
    """Where the maps of network ``name``, seed ``seed``, at ``layer`` are cached."""
    safe = layer.replace("/", "_")
    return Path(out_dir) / "analyses" / "knowledge_points" / name / f"seed{seed}" / f"{safe}.npz"


#: the maps a cache file holds (:meth:`EntropyTrajectory.arrays`): dtype kind and dimensions
CACHE_MAPS = {
    "entropy": ("f", 3),  # (I, K, n)
    "sigma_f": ("f", 2),  # (I, K)
    "calibrated": ("b", 2),  # (I, K)
    "foreground": ("b", 2),  # (I, n)
    "valid": ("b", 2),  # (I, n)
    "candidates": ("i", 1),  # (I,)
    "effective": ("b", 1),  # (I,)
    "epochs": ("i", 1),  # (K,)
}
#: everything a cache file holds: the maps, the fingerprint of what computed them, the
#: estimator's info (JSON) and a digest of all the rest
CACHE_KEYS = frozenset({*CACHE_MAPS, "fingerprint", "info", "digest"})


def cache_arrays(traj: EntropyTrajectory, fingerprint: str) -> dict[str, np.ndarray]:
    """What the cache file of ``traj``, computed under ``fingerprint``, holds."""
    arrays = {
        **traj.arrays(),
        "fingerprint": np.array(fingerprint),
        "info": np.array(json.dumps(traj.info)),
    }
    return {**arrays, "digest": np.array(_digest(arrays))}


def _digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of the arrays (names, dtypes, shapes and bytes), the ``digest`` entry excluded."""
    h = hashlib.sha256()
    for key in sorted(arrays.keys() - {"digest"}):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}:".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def read_cache(
    path: Path, fingerprint: str, epochs: list[int], n_inputs: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The maps and estimator info cached at ``path``, if they are what the analysis under
    ``fingerprint`` computes for a run with checkpoints ``epochs`` on ``n_inputs`` candidate
    inputs. None if there is no cache, it was computed with other settings (or by an older
    kdscope, without a digest), or it is damaged (then a warning): the maps are recomputed."""
    if not path.exists():
        return None
    try:
        return _read_cache(path, fingerprint, epochs, n_inputs)
    except io.DamagedFile as damage:
        damage.warn("recomputing its entropy maps")
        return None


def _read_cache(
    path: Path, fingerprint: str, epochs: list[int], n_inputs: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """:func:`read_cache`, raising :class:`~kdscope.io.DamagedFile` for a damaged cache."""
    arrays = io.load_npz(path)
    if str(arrays.get("fingerprint")) != fingerprint or "digest" not in arrays:
        return None
    if set(arrays) != CACHE_KEYS or _digest(arrays) != str(arrays["digest"]):
        raise io.DamagedFile(path, "its content does not match its digest")
    problem = _maps_problem(arrays, epochs, n_inputs)
    if problem is not None:
        raise io.DamagedFile(path, problem)
    try:
        info = json.loads(str(arrays["info"]))
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict):
        raise io.DamagedFile(path, "its estimator info is not a JSON object")
    return {k: arrays[k] for k in CACHE_MAPS}, info


def _maps_problem(arrays: dict[str, np.ndarray], epochs: list[int], n_inputs: int) -> str | None:
    """What is wrong with cached maps, or None: dtypes and shapes as
    :func:`~kdscope.knowledge_points.diagnosis.entropy_trajectory` writes them, the run's
    checkpoints, the first I of the ``n_inputs`` candidates, σ_f finite and non-negative, the
    entropy finite at every valid unit."""
    for key, (kind, ndim) in CACHE_MAPS.items():
        if arrays[key].dtype.kind != kind or arrays[key].ndim != ndim:
            return f"{key} is not a {ndim}-d array of dtype kind {kind!r}"
    i, k, n = arrays["entropy"].shape
    shapes = {"sigma_f": (i, k), "calibrated": (i, k), "foreground": (i, n), "valid": (i, n)}
    shapes |= {"candidates": (i,), "effective": (i,), "epochs": (k,)}
    if any(arrays[key].shape != shape for key, shape in shapes.items()):
        return "its arrays disagree in shape"
    if arrays["epochs"].tolist() != list(epochs):
        return f"its checkpoints are not the run's {list(epochs)}"
    if not 1 <= i <= n_inputs or not np.array_equal(arrays["candidates"], np.arange(i)):
        return f"its candidates are not the first of the {n_inputs} analysed inputs"
    sigma_f = arrays["sigma_f"]
    if not (np.isfinite(sigma_f).all() and (sigma_f >= 0).all()):
        return "sigma_f is not finite and non-negative"
    valid = np.broadcast_to(arrays["valid"][:, None, :], (i, k, n))
    if not np.isfinite(arrays["entropy"][valid]).all():
        return "an entropy of a valid unit is not finite"
    return None
