"""``modelnet40``: the user's ModelNet40 files as point clouds with labelled background clutter.

Two standard layouts are read (``format="auto"`` detects which one ``root`` holds):

* ``"off"``, the original ModelNet40 zip: ``root/<class>/train/*.off`` and
  ``root/<class>/test/*.off``; the classes are the sorted names of the class directories. Each
  mesh is read from its OFF file (comments, blank lines, the ModelNet quirk of counts on the
  header line, ``OFF490 518 0``, and polygons of any size, fan-triangulated) and its object
  points are sampled uniformly by area on its surface (:func:`sample_surface`).
* ``"hdf5"``, the widely used ``modelnet40_ply_hdf5_2048``: ``root/*train*.h5`` and
  ``root/*test*.h5`` (e.g. ``ply_data_train0.h5``), each with ``data`` (N, P, 3) and ``label``
  (N, 1) or (N,); class names from ``root/shape_names.txt`` (one per line) when present, else
  ``class0``, ``class1``, ... The object points of a cloud are a uniformly random subset of its
  P points (without replacement).

Every cloud then follows the ``points`` dataset (kdscope's choice, docs/knowledge_points.md: object
datasets have no background): its ``m = P − round(clutter · P)`` object points are normalised, x ←
(x − x̄) / max_i ‖x_i − x̄‖, ``round(clutter · P)`` clutter points of the same model are added
(uniform in the enlarged bounding box [−1.2, 1.2]³, half of them in ``blobs`` distractor blobs),
object points are marked foreground and clutter background, and the points of every cloud are put in
a random order (:func:`kdscope.datasets.points.normalise` and
:func:`kdscope.datasets.points.add_clutter`). The examples of a split are in a random order too
(studies take the first ``transfer_size``).

Sampling is deterministic from ``seed``: train and test draw from separate
``numpy.random.Generator(PCG64)`` streams spawned from ``SeedSequence(seed)``. ``h5py`` is
needed for the HDF5 layout only and imported there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdscope.datasets.base import DataSplits, check_float, check_int
from kdscope.datasets.points import add_clutter, cloud_dataset, normalise
from kdscope.datasets.registry import register_dataset
from kdscope.errors import KdscopeError

__all__ = ["FORMATS", "modelnet40", "read_off", "sample_surface"]

FORMATS: tuple[str, ...] = ("auto", "off", "hdf5")
SPLITS: tuple[str, str] = ("train", "test")
LAYOUTS = "<class>/train/*.off and <class>/test/*.off, or *train*.h5 and *test*.h5"


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The mesh of an OFF file: vertices (V, 3) float64 and triangles (T, 3) int64.

    Text after ``#`` and blank lines are ignored; the counts ``V F [E]`` follow ``OFF`` on its
    own line or on the next one; extra columns (colours) are ignored. A face of k ≥ 3 vertices
    (i_0, ..., i_{k−1}) becomes the k − 2 triangles (i_0, i_j, i_{j+1}), j = 1, ..., k − 2 (a
    fan, exact for convex polygons). Raises ValueError on a malformed file.
    """
    text = path.read_text(errors="replace").splitlines()
    lines = [s for line in text if (s := line.split("#", 1)[0].strip())]
    if not lines or not lines[0].startswith("OFF"):
        first = lines[0][:40] if lines else ""
        raise ValueError(f"bad OFF header {first!r} (expected 'OFF' and the counts 'V F E')")
    if lines[0] == "OFF":  # counts on the next line
        lines = lines[1:]
    else:  # the ModelNet quirk: "OFF490 518 0"
        lines[0] = lines[0][3:]
    counts, body = (lines[0].split() if lines else []), lines[1:]
    try:
        nv, nf = int(counts[0]), int(counts[1])
    except (IndexError, ValueError):
        raise ValueError(f"bad OFF counts {' '.join(counts)!r} (expected 'V F E')") from None
    if nv < 0 or nf < 0 or len(body) < nv + nf:
        raise ValueError(f"expected {nv} vertex and {nf} face lines, found {len(body)} lines")
    coords = [row.split()[:3] for row in body[:nv]]
    if any(len(xyz) < 3 for xyz in coords):
        raise ValueError("a vertex line has fewer than 3 coordinates")
    vertices = np.array(coords, dtype=np.float64).reshape(nv, 3)
    faces = [row.split() for row in body[nv : nv + nf]]
    sizes = np.array([int(face[0]) for face in faces], dtype=np.int64)
    short = any(len(face) <= k for face, k in zip(faces, sizes, strict=True))
    if short or (nf and sizes.min() < 3):
        raise ValueError("a face has fewer than 3 vertices or fewer indices than its size")
    triangles = [np.empty((0, 3), dtype=np.int64)]
    for k in np.unique(sizes):
        rows = [face[1 : k + 1] for face, size in zip(faces, sizes, strict=True) if size == k]
        polygons = np.array(rows, dtype=np.int64)
        fan = np.stack([np.zeros(k - 2, dtype=np.int64), np.arange(1, k - 1), np.arange(2, k)], 1)
        triangles.append(polygons[:, fan].reshape(-1, 3))
    out = np.concatenate(triangles)
    if out.size and (out.min() < 0 or out.max() >= nv):
        raise ValueError(f"a face refers to a vertex outside 0..{nv - 1}")
    return vertices, out


def sample_surface(
    rng: np.random.Generator, vertices: np.ndarray, triangles: np.ndarray, n: int
) -> np.ndarray:
    """(n, 3) points uniform by area on a triangle mesh.

    Triangle t = (a, b, c) has area A_t = ½ ‖(b − a) × (c − a)‖. Each point picks t with
    probability A_t / Σ_s A_s, then a uniform point of t from u_1, u_2 ~ U(0, 1), s = √u_1:

        x = (1 − s) a + s (1 − u_2) b + s u_2 c.

    The segment of t at fraction s of the way from a to the edge bc has length ∝ s, so s has
    density 2s on [0, 1] (s = √u_1), and u_2 is uniform along that segment: x is uniform on t.
    The mixture has density Σ_t (A_t / A) · (1 / A_t) = 1 / A on the whole surface, A = Σ_t A_t.
    Raises ValueError when the mesh has no faces or zero total area.
    """
    a, b, c = (vertices[triangles[:, j]] for j in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = float(area.sum())
    if not len(triangles) or not total > 0.0:
        raise ValueError(f"degenerate mesh: {len(triangles)} triangles of total area {total:g}")
    t = rng.choice(len(triangles), size=n, p=area / total)
    s, u = np.sqrt(rng.random((n, 1))), rng.random((n, 1))
    return (1.0 - s) * a[t] + s * (1.0 - u) * b[t] + s * u * c[t]


def _first_per_class(labels: np.ndarray, cap: int | None) -> np.ndarray:
    """Indices (ascending) of the first ``cap`` examples of each class; all when cap is None."""
    if cap is None:
        return np.arange(len(labels))
    order = np.argsort(labels, kind="stable")
    ranked = labels[order]
    rank = np.arange(len(labels)) - np.searchsorted(ranked, ranked, side="left")
    return np.sort(order[rank < cap])


def _off_classes(root: Path) -> list[str]:
    """Sorted names of the class directories: those with a ``train`` or ``test`` folder."""
    return sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and any((d / split).is_dir() for split in SPLITS)
    )


def _off_files(root: Path, split: str) -> tuple[list[Path], np.ndarray]:
    """The OFF files of a split in class, then name, order, and their labels."""
    files, labels = [], []
    for k, name in enumerate(_off_classes(root)):
        found = sorted((root / name / split).glob("*.off"))
        files += found
        labels += [k] * len(found)
    return files, np.array(labels, dtype=np.int64)


def _read_off_split(
    root: Path, rng: np.random.Generator, split: str, m: int, cap: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Object points (n, m, 3) sampled on the split's meshes and their labels (n,), in a random
    order."""
    files, labels = _off_files(root, split)
    keep = _first_per_class(labels, cap)
    keep = keep[rng.permutation(len(keep))]
    objects = np.empty((len(keep), m, 3))
    for i, j in enumerate(keep):
        try:
            objects[i] = sample_surface(rng, *read_off(files[j]), m)
        except ValueError as e:
            raise KdscopeError(f"modelnet40: {files[j]}: {e}") from None
    return objects, labels[keep]


def _h5_files(root: Path, split: str) -> list[Path]:
    """The split's HDF5 files in ``root``: ``*.h5`` whose names contain the split's name."""
    return sorted(p for p in root.glob("*.h5") if split in p.name)


def _read_h5_split(
    root: Path, rng: np.random.Generator, split: str, m: int, cap: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Object points (n, m, 3), a random subset of each cloud's points, and labels (n,), in a
    random order."""
    try:
        import h5py
    except ImportError:
        raise KdscopeError(
            "modelnet40: the HDF5 layout needs h5py: pip install h5py "
            "(or pip install 'kdscope[modelnet]')"
        ) from None
    clouds, labels = [], []
    for path in _h5_files(root, split):
        try:
            with h5py.File(path, "r") as f:
                data, label = np.asarray(f["data"]), np.asarray(f["label"])
        except (OSError, KeyError) as e:
            raise KdscopeError(
                f"modelnet40: {path}: cannot read 'data' and 'label' ({e})"
            ) from None
        if data.ndim != 3 or data.shape[2] != 3 or label.size != len(data):
            raise KdscopeError(
                f"modelnet40: {path}: expected data (N, P, 3) and label (N, 1) or (N,), "
                f"got {data.shape} and {label.shape}"
            )
        if data.shape[1] < m:
            raise KdscopeError(
                f"modelnet40: {path}: clouds of {data.shape[1]} points, fewer than the {m} "
                "object points asked for (num_points − round(clutter · num_points))"
            )
        if clouds and data.shape[1] != clouds[0].shape[1]:
            raise KdscopeError(
                f"modelnet40: {path}: clouds of {data.shape[1]} points, "
                f"the other {split} files have {clouds[0].shape[1]}"
            )
        clouds.append(data)
        labels.append(label.reshape(-1).astype(np.int64))
    if not clouds:
        return np.empty((0, m, 3)), np.empty(0, dtype=np.int64)
    label_all = np.concatenate(labels)
    if label_all.min() < 0:
        raise KdscopeError(f"modelnet40: {root}: a {split} label is negative")
    keep = _first_per_class(label_all, cap)
    keep = keep[rng.permutation(len(keep))]
    chosen = rng.random((len(keep), clouds[0].shape[1])).argsort(1)[:, :m]
    objects = np.concatenate(clouds)[keep].astype(np.float64)
    return np.take_along_axis(objects, chosen[:, :, None], 1), label_all[keep]


def _detect(root: Path, format: str) -> str:
    """The layout ``root`` holds: ``format`` when given, else the one found (an error when
    neither or both are)."""
    if not root.is_dir():
        raise KdscopeError(f"modelnet40: root {str(root)!r} does not exist or is not a directory")
    has = {
        "off": any(
            next((root / c / s).glob("*.off"), None) for c in _off_classes(root) for s in SPLITS
        ),
        "hdf5": any(_h5_files(root, s) for s in SPLITS),
    }
    found = [name for name, yes in has.items() if yes and format in ("auto", name)]
    if len(found) != 1:
        what = (
            "both layouts (choose one with format: off or hdf5)"
            if found
            else "no ModelNet40 layout"
        )
        raise KdscopeError(f"modelnet40: root {str(root)!r} holds {what} ({LAYOUTS})")
    return found[0]


def _class_names(root: Path, layout: str, labels: np.ndarray) -> list[str]:
    """OFF: the class directories; HDF5: ``shape_names.txt`` or ``class0``, ``class1``, ..."""
    if layout == "off":
        return _off_classes(root)
    names_file = root / "shape_names.txt"
    if names_file.is_file():
        names = [s for line in names_file.read_text().splitlines() if (s := line.strip())]
        if labels.size and labels.max() >= len(names):
            raise KdscopeError(
                f"modelnet40: {names_file} names {len(names)} classes but a label is {labels.max()}"
            )
        return names
    return [f"class{k}" for k in range(int(labels.max()) + 1)]


@register_dataset("modelnet40", modality="points")
def modelnet40(
    root: str | Path,
    format: str = "auto",
    num_points: int = 1024,
    seed: int = 0,
    *,
    clutter: float = 0.2,
    blobs: int = 2,
    max_per_class: int | None = None,
) -> DataSplits:
    """ModelNet40 point clouds from the user's files, with background clutter (see the module
    docstring for the layouts and the sampling).

    Args:
        root: the folder holding the OFF tree or the HDF5 files.
        format: ``"auto"`` (detect), ``"off"`` or ``"hdf5"``.
        num_points: P, points per cloud including clutter (>= 8).
        seed: non-negative integer; the same seed and files give bit-identical tensors.
        clutter: in [0, 0.9]: the fraction of the P points that is clutter (background);
            exactly round(clutter · P) points of every cloud, on every split.
        blobs: number of distractor blobs per cloud holding half of the clutter points (0: all
            clutter uniform in the enlarged bounding box).
        max_per_class: keep only the first ``max_per_class`` examples of each class of each
            split (in file order), for quick studies; None keeps all.

    Returns:
        :class:`DataSplits` of ``"points"`` datasets: inputs float32 (N, P, 3), labels int64,
        foreground bool (N, P), True on object points and False on clutter points; no tags.
    """
    if format not in FORMATS:
        raise ValueError(f"modelnet40: unknown format {format!r} (known: {', '.join(FORMATS)})")
    num_points = check_int("num_points", num_points, 8)
    seed = check_int("seed", seed, 0)
    clutter = check_float("clutter", clutter, 0.0, 0.9)
    blobs = check_int("blobs", blobs, 0)
    if max_per_class is not None:
        max_per_class = check_int("max_per_class", max_per_class, 1)
    root = Path(root).expanduser()
    layout = _detect(root, format)
    read = _read_off_split if layout == "off" else _read_h5_split
    c = round(clutter * num_points)
    parts = []
    for split, seq in zip(SPLITS, np.random.SeedSequence(seed).spawn(2), strict=True):
        rng = np.random.Generator(np.random.PCG64(seq))
        objects, labels = read(root, rng, split, num_points - c, max_per_class)
        if not len(labels):
            raise KdscopeError(
                f"modelnet40: root {str(root)!r} holds no {split} clouds ({LAYOUTS})"
            )
        parts.append((*add_clutter(rng, normalise(objects), c, blobs), labels))
    names = _class_names(root, layout, np.concatenate([p[2] for p in parts]))
    train, test = (cloud_dataset(*part, names) for part in parts)
    return DataSplits(train=train, test=test)
