"""The ``modelnet40`` loader on tiny files written here: the OFF tree (meshes sampled by area)
and the HDF5 files of ``modelnet40_ply_hdf5_2048``, clutter and foreground as in ``points``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from kdscope import KdscopeError
from kdscope.datasets import DATASETS, build
from kdscope.datasets.modelnet import modelnet40, read_off, sample_surface
from kdscope.datasets.points import CLUTTER_EXTENT

TETRA = """OFF
# a tetrahedron
4 4 0

0 0 0
1 0 0
0 1 0
0 0 1
3 0 1 2
3 0 1 3
3 0 2 3
3 1 2 3
"""
CUBE_VERTICES = "\n".join(
    f"{x} {y} {z}" for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)
)  # vertex 4x + 2y + z (0/1 for −1/+1)
CUBE_FACES = "4 0 1 3 2\n4 4 5 7 6\n4 0 1 5 4\n4 2 3 7 6\n4 0 2 6 4\n4 1 3 7 5\n"
CUBE = f"OFF\n8 6 0\n{CUBE_VERTICES}\n{CUBE_FACES}"
CUBE_QUIRK = f"OFF8 6 0\n{CUBE_VERTICES}\n{CUBE_FACES}"  # counts on the header line


def _one_line(e: pytest.ExceptionInfo[KdscopeError], *words: str) -> None:
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


@pytest.fixture
def off_root(tmp_path: Path) -> Path:
    """Two classes, ``box`` (cubes, one with the header quirk) and ``pyramid`` (tetrahedra):
    3 train and 2 test meshes each."""
    root = tmp_path / "ModelNet40"
    for name, texts in (("box", [CUBE, CUBE_QUIRK]), ("pyramid", [TETRA])):
        for split, n in (("train", 3), ("test", 2)):
            (root / name / split).mkdir(parents=True)
            for i in range(n):
                (root / name / split / f"{name}_{i:04d}.off").write_text(texts[i % len(texts)])
    return root


def _write_h5(path: Path, n: int, p: int, labels: np.ndarray, flat: bool = False) -> None:
    rng = np.random.default_rng(len(path.name))
    with h5py.File(path, "w") as f:
        f["data"] = rng.standard_normal((n, p, 3)).astype(np.float32)
        f["label"] = labels.astype(np.uint8) if flat else labels.astype(np.uint8)[:, None]


@pytest.fixture
def h5_root(tmp_path: Path) -> Path:
    """Two train files and one test file of 64-point clouds over 3 classes, with names."""
    root = tmp_path / "modelnet40_ply_hdf5_2048"
    root.mkdir()
    _write_h5(root / "ply_data_train0.h5", 6, 64, np.arange(6) % 3)
    _write_h5(root / "ply_data_train1.h5", 3, 64, np.arange(3), flat=True)
    _write_h5(root / "ply_data_test0.h5", 4, 64, np.array([2, 1, 0, 2]))
    (root / "shape_names.txt").write_text("airplane\nbathtub\nbed\n")
    return root


# ------------------------------------------------------------------------------- OFF meshes


def test_read_off_variants(tmp_path: Path) -> None:
    paths = {}
    for name, text in (("tetra", TETRA), ("cube", CUBE), ("quirk", CUBE_QUIRK)):
        paths[name] = tmp_path / f"{name}.off"
        paths[name].write_text(text)
    v, t = read_off(paths["tetra"])
    assert v.shape == (4, 3) and t.tolist() == [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]
    v, t = read_off(paths["cube"])
    assert v.shape == (8, 3) and t.shape == (12, 3) and t.dtype == np.int64  # quads: 2 each
    assert t[:2].tolist() == [[0, 1, 3], [0, 3, 2]]  # fan of the first quad
    vq, tq = read_off(paths["quirk"])
    assert np.array_equal(v, vq) and np.array_equal(t, tq)


def test_cube_samples_lie_on_its_surface(tmp_path: Path) -> None:
    path = tmp_path / "cube.off"
    path.write_text(CUBE)
    x = sample_surface(np.random.default_rng(0), *read_off(path), 5000)
    assert x.shape == (5000, 3)
    assert (np.abs(x) <= 1 + 1e-6).all()
    assert (np.abs(np.abs(x) - 1).min(1) <= 1e-6).all()  # one coordinate at ±1
    # uniform by area: each of the 6 faces (x, y or z at ±1) gets ~1/6 of the points
    face = np.abs(x).argmax(1) * 2 + (x[np.arange(5000), np.abs(x).argmax(1)] > 0)
    assert np.abs(np.bincount(face, minlength=6) / 5000 - 1 / 6).max() < 0.03


def test_sampling_is_proportional_to_area() -> None:
    # a big triangle (area 8) in the plane z = 0 and a small one (area 0.5) in z = 5
    vertices = np.array([[0, 0, 0], [4, 0, 0], [0, 4, 0], [0, 0, 5], [1, 0, 5], [0, 1, 5.0]])
    triangles = np.array([[0, 1, 2], [3, 4, 5]])
    n, share = 20000, 8 / 8.5
    x = sample_surface(np.random.default_rng(1), vertices, triangles, n)
    on_big = x[:, 2] == 0
    assert abs(on_big.mean() - share) < 4 * math.sqrt(share * (1 - share) / n)
    big = x[on_big]  # inside the big triangle: x, y >= 0, x + y <= 4
    assert (big[:, :2] >= -1e-12).all() and (big[:, :2].sum(1) <= 4 + 1e-12).all()
    # uniform inside the triangle: the mean is its centroid (4/3, 4/3)
    assert np.allclose(big[:, :2].mean(0), 4 / 3, atol=0.05)


def test_off_dataset_shapes_labels_and_clutter(off_root: Path) -> None:
    assert "modelnet40" in DATASETS
    d = build("modelnet40", root=str(off_root), num_points=50, seed=0)
    for split, n in ((d.train, 6), (d.test, 4)):
        assert split.inputs.shape == (n, 50, 3) and split.inputs.dtype == torch.float32
        assert split.foreground.shape == (n, 50) and split.foreground.dtype == torch.bool
        assert split.labels.dtype == torch.int64 and split.modality == "points"
        assert sorted(split.labels.tolist()) == [0] * (n // 2) + [1] * (n // 2)
        assert ((~split.foreground).sum(1) == round(0.2 * 50)).all()
        x, fg = split.inputs.double(), split.foreground
        obj = x[fg].reshape(n, 40, 3)  # normalised: centroid at 0, farthest point at radius 1
        assert torch.allclose(obj.mean(1), torch.zeros(n, 3, dtype=x.dtype), atol=1e-5)
        assert torch.allclose(obj.norm(dim=2).amax(1), torch.ones(n, dtype=x.dtype), atol=1e-5)
        assert (x[~fg].abs() <= CLUTTER_EXTENT + 0.5).all()
    assert d.num_classes == 2 and d.train.class_names == ["box", "pyramid"]
    assert not torch.equal(d.train.foreground[0], d.train.foreground[1])  # points shuffled


def test_off_object_points_lie_on_the_normalised_cube(off_root: Path) -> None:
    d = modelnet40(off_root, num_points=200, clutter=0.0, max_per_class=1)
    assert d.train.labels.tolist().count(0) == 1 and len(d.train) == 2
    cube = d.train.inputs[d.train.labels == 0][0].double()
    # normalisation shifts and scales the cube: every point still lies on one of its faces, a
    # plane where one coordinate is at its smallest or largest value over the cloud
    low, high = cube.amin(0), cube.amax(0)
    on_face = torch.minimum((cube - low).abs(), (cube - high).abs()).amin(1)
    assert (on_face <= 1e-5).all()
    assert cube.norm(dim=1).max() == pytest.approx(1.0, abs=1e-6)


def test_deterministic_from_seed(off_root: Path, h5_root: Path) -> None:
    for root in (off_root, h5_root):
        a, b = modelnet40(root, num_points=32, seed=3), modelnet40(root, num_points=32, seed=3)
        c = modelnet40(root, num_points=32, seed=4)
        for name in ("inputs", "labels", "foreground"):
            assert torch.equal(getattr(a.train, name), getattr(b.train, name))
            assert torch.equal(getattr(a.test, name), getattr(b.test, name))
        assert not torch.equal(a.train.inputs, c.train.inputs)


# ------------------------------------------------------------------------------------- HDF5


def test_hdf5_dataset(h5_root: Path) -> None:
    d = modelnet40(h5_root, num_points=40, clutter=0.25, blobs=0, seed=0)
    assert d.train.inputs.shape == (9, 40, 3) and d.test.inputs.shape == (4, 40, 3)
    assert d.train.class_names == ["airplane", "bathtub", "bed"] and d.num_classes == 3
    assert d.train.labels.bincount().tolist() == [3, 3, 3]
    assert sorted(d.test.labels.tolist()) == [0, 1, 2, 2]
    for split in (d.train, d.test):
        assert split.labels.dtype == torch.int64 and split.foreground.dtype == torch.bool
        assert ((~split.foreground).sum(1) == 10).all()
        assert (split.inputs[~split.foreground].abs() <= CLUTTER_EXTENT).all()
        obj = split.inputs[split.foreground].reshape(len(split), 30, 3)
        assert (torch.cdist(obj, obj) + torch.eye(30)).amin() > 0  # 30 distinct file points
    assert len(modelnet40(h5_root, num_points=40, max_per_class=2).train) == 6
    (h5_root / "shape_names.txt").unlink()
    assert modelnet40(h5_root, num_points=40).train.class_names == ["class0", "class1", "class2"]


def test_hdf5_object_points_are_the_normalised_file_points(h5_root: Path) -> None:
    # 80 points with 16 of clutter: all 64 points of each file cloud are object points
    d = modelnet40(h5_root, num_points=80, clutter=0.2)
    with h5py.File(h5_root / "ply_data_test0.h5") as f:
        raw = np.asarray(f["data"], dtype=np.float64)
    raw -= raw.mean(1, keepdims=True)
    raw /= np.linalg.norm(raw, axis=2).max(1)[:, None, None]
    found = []
    for x, fg in zip(d.test.inputs, d.test.foreground, strict=True):
        obj = x[fg].double().numpy()
        obj = obj[np.lexsort(obj.T)]
        found += [i for i, r in enumerate(raw) if np.allclose(obj, r[np.lexsort(r.T)], atol=1e-6)]
    assert sorted(found) == [0, 1, 2, 3]


# ------------------------------------------------------------------------ layouts and errors


def test_format_autodetection(off_root: Path, h5_root: Path) -> None:
    assert modelnet40(off_root, num_points=16).train.class_names == ["box", "pyramid"]
    assert modelnet40(h5_root, num_points=16).num_classes == 3
    for name in ("ply_data_train0.h5", "ply_data_train1.h5", "ply_data_test0.h5"):
        (h5_root / name).rename(off_root / name)
    with pytest.raises(KdscopeError) as e:
        modelnet40(off_root, num_points=16)
    _one_line(e, str(off_root), "both layouts")
    assert modelnet40(off_root, "off", num_points=16).num_classes == 2
    assert modelnet40(off_root, "hdf5", num_points=16).num_classes == 3  # class0..class2
    with pytest.raises(KdscopeError) as e:
        modelnet40(h5_root, "hdf5", num_points=16)  # now empty
    _one_line(e, str(h5_root), "no ModelNet40 layout")


def test_one_line_errors(tmp_path: Path, off_root: Path, h5_root: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(KdscopeError) as e:
        build("modelnet40", root=str(missing))
    _one_line(e, str(missing), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(KdscopeError) as e:
        build("modelnet40", root=str(empty))
    _one_line(e, str(empty), "no ModelNet40 layout")
    with pytest.raises(KdscopeError) as e:
        build("modelnet40", root=str(empty), format="ply")
    _one_line(e, "unknown format 'ply'")

    bad = off_root / "box" / "train" / "box_0001.off"
    bad.write_text("PLY\n8 6 0\n")
    with pytest.raises(KdscopeError) as e:
        modelnet40(off_root)
    _one_line(e, str(bad), "bad OFF header")
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n")  # collinear: zero area
    with pytest.raises(KdscopeError) as e:
        modelnet40(off_root)
    _one_line(e, str(bad), "degenerate mesh")
    bad.write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")  # no faces
    with pytest.raises(KdscopeError) as e:
        modelnet40(off_root)
    _one_line(e, str(bad), "degenerate mesh")

    with pytest.raises(KdscopeError) as e:
        modelnet40(h5_root, num_points=100)  # 80 object points asked, the files hold 64
    _one_line(e, "ply_data_train0.h5", "64 points", "80 object points")


def test_missing_h5py_names_the_install(h5_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)  # import h5py raises
    with pytest.raises(KdscopeError) as e:
        modelnet40(h5_root, num_points=16)
    _one_line(e, "pip install h5py")


def test_a_tiny_study_on_off_files(off_root: Path, tmp_path: Path) -> None:
    from kdscope.config import parse_study
    from kdscope.pipeline import run_study

    cfg = parse_study(
        {
            "dataset": {"name": "modelnet40", "root": str(off_root), "num_points": 32},
            "teacher": {"model": {"name": "pointnet", "width": 4, "num_points": 32},
                        "train": {"epochs": 1, "batch_size": 4}},
            "student": {"model": {"name": "pointnet_small", "width": 4, "num_points": 32},
                        "train": {"epochs": 1, "batch_size": 4}},
            "students": [{"method": "kd"}],
            "seeds": [0],
            "checkpoints": [0, 1],
            "analyses": ["accuracy"],
        }
    )  # fmt: skip
    run_study(cfg, tmp_path / "run", quiet=True)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    teacher = summary["analyses"]["accuracy"]["groups"]["teacher"]
    assert summary["analyses"]["accuracy"]["n_test"] == 4 and 0.0 <= teacher["mean"] <= 1.0
