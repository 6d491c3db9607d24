"""Datasets read from the user's files (image folders with masks, .npz), tested on small files
written here with known content: layout, order, resizing, masks, uint8 storage, channels, and
one clear line for each bad input."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from file_fixtures import voc_xml, write_cub, write_voc
from PIL import Image

import kdscope.datasets.registry as registry
from kdscope.config import parse_study
from kdscope.datasets import build
from kdscope.errors import KdscopeError
from kdscope.pipeline import run_study


def square(
    path: Path, colour: tuple[int, int, int], box: tuple[int, int, int, int], size: int = 8
) -> None:
    """An image of ``size`` px, black but for a ``colour`` box (x0, y0, x1, y1 exclusive), and
    its mask (the box) under the mirror path."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def mask(path: Path, box: tuple[int, int, int, int], size: int = 8) -> None:
    array = np.zeros((size, size), dtype=np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def folder(root: Path, masks: bool = True, per_class: int = 3) -> Path:
    """Two classes: red boxes top-left ("cat"), blue boxes bottom-right ("dog")."""
    boxes = {"cat": ((255, 0, 0), (0, 0, 4, 4)), "dog": ((0, 0, 255), (4, 4, 8, 8))}
    for split in ("train", "test"):
        for name, (colour, box) in boxes.items():
            for i in range(per_class):
                square(root / split / name / f"{i}.png", colour, box)
                if masks:
                    mask(root / "masks" / split / name / f"{i}.png", box)
    return root


def test_an_image_folder_reads_classes_masks_and_keeps_uint8(tmp_path: Path) -> None:
    data = build("image_folder", root=str(folder(tmp_path / "d")), size=8)
    train = data.train
    assert train.class_names == ["cat", "dog"] and data.num_classes == 2
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert train.inputs.dtype == torch.uint8 and train.inputs.shape == (6, 3, 8, 8)
    assert train.channels == 3 and train.has_foreground
    # the red box of a cat is where it was drawn, in the red channel only
    cat = train.inputs[0]
    assert cat[0, :4, :4].eq(255).all() and cat[0, 4:, 4:].eq(0).all() and cat[2].eq(0).all()
    # its mask is the box; the batch converts to [0, 1] floats
    assert train.foreground[0, :4, :4].all() and not train.foreground[0, 4:, :].any()
    batch = train.batch(torch.tensor([3]))
    assert batch.input.dtype == torch.float32 and float(batch.input[0, 2, 7, 7]) == 1.0
    assert torch.equal(train.inputs_at(torch.tensor([3])), batch.input)


def test_resizing_grayscale_and_no_masks(tmp_path: Path) -> None:
    root = folder(tmp_path / "d", masks=False)
    data = build("image_folder", root=str(root), size=4, channels=1)
    assert data.train.inputs.shape == (6, 1, 4, 4) and data.train.channels == 1
    # halved (bilinear): the corner cells lie wholly in the red box and the black, at red's
    # luminance (0.299 × 255) and 0; cells across the box's edge blend the two
    cat = data.train.inputs[0, 0]
    assert cat[0, 0] == 76 and cat[3, 3] == 0 and 0 < cat[1, 1] < 76
    full = build("image_folder", root=str(root), size=8, channels=1).train.inputs[0, 0]
    assert full[:4, :4].eq(76).all() and full[4:, 4:].eq(0).all()
    assert not data.train.has_foreground and data.train.foreground.all()
    assert "no object masks" in data.train.annotation
    rect = build("image_folder", root=str(root), size=[4, 6])
    assert rect.train.inputs.shape == (6, 3, 4, 6)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: (r / "train" / "cat" / "0.png").write_bytes(b"not a png"),
            "0.png: cannot be read as an image",
        ),
        (lambda r: (r / "masks" / "test" / "dog" / "2.png").unlink(), "2.png: no mask at"),
        (lambda r: (r / "test" / "bird").mkdir(), "classes ['bird'] that train/ has not"),
        (lambda r: __import__("shutil").rmtree(r / "test"), "no folder"),
    ],
)
def test_a_bad_image_folder_is_one_line_naming_the_file(
    tmp_path: Path, damage, message: str
) -> None:
    root = folder(tmp_path / "d")
    damage(root)
    with pytest.raises(KdscopeError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        build("image_folder", root=str(root), size=8)
    assert "\n" not in str(e.value)


def test_memory_is_checked_before_anything_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = folder(tmp_path / "d")
    monkeypatch.setattr(registry, "available_memory", lambda: 1000)
    with pytest.raises(KdscopeError, match=r"12 examples of .* need at least .*more than"):
        build("image_folder", root=str(root), size=224)


def test_npz_layouts_split_and_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(10, 5, 5, 3), dtype=np.uint8)  # channels last
    y = np.arange(10) % 3
    fg = np.zeros((10, 5, 5), dtype=bool)
    fg[:, 1:3, 1:3] = True
    np.savez(tmp_path / "d.npz", x=x, y=y, foreground=fg)
    data = build("npz", path=str(tmp_path / "d.npz"), test_fraction=0.3, seed=1)
    assert len(data.train) == 7 and len(data.test) == 3 and data.num_classes == 3
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    first = int(order[0])
    assert torch.equal(data.train.inputs[0], torch.from_numpy(x[first].transpose(2, 0, 1)))
    assert data.train.labels[0] == y[first] and data.train.foreground[0, 1, 1]
    # explicit test arrays, float NCHW grayscale (N, H, W)
    np.savez(
        tmp_path / "e.npz",
        x=x[:, :, :, 0] / 255.0,
        y=y,
        x_test=x[:2, :, :, 0] / 255.0,
        y_test=y[:2],
    )
    data = build("npz", path=str(tmp_path / "e.npz"))
    assert data.train.inputs.shape == (10, 1, 5, 5) and data.test.inputs.shape == (2, 1, 5, 5)
    assert not data.train.has_foreground


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((2, 3, 4, 4), np.uint8)}, "no array 'y'"),
        ({"x": np.zeros((2, 3, 4, 4), np.uint8), "y": np.array([0.5, 1])}, "integer labels"),
        ({"x": np.full((2, 3, 4, 4), 2.0), "y": np.array([0, 1])}, "uint8 or floats in"),
        ({"x": np.zeros((2, 5, 4, 4), np.uint8), "y": np.array([0, 1])}, "1 or 3 channels"),
        (
            {
                "x": np.zeros((2, 3, 4, 4), np.uint8),
                "y": np.array([0, 1]),
                "foreground": np.ones((2, 3, 3)),
            },
            "'foreground' has shape",
        ),
    ],
)
def test_a_bad_npz_is_one_line(tmp_path: Path, arrays: dict, message: str) -> None:
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(KdscopeError, match=message):
        build("npz", path=str(tmp_path / "d.npz"))


def test_an_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.array([object()], dtype=object), y=np.array([0]))
    with pytest.raises(KdscopeError, match="d.npz"):
        build("npz", path=str(tmp_path / "d.npz"))


def study(root: Path, **model: object) -> dict:
    net = {"name": "cnn_small", "width": 4, **model}
    return {
        "name": "files",
        "dataset": {"name": "image_folder", "root": str(root), "size": 8, "channels": 1},
        "teacher": {"model": net, "train": {"epochs": 1}},
        "student": {"model": net, "train": {"epochs": 1}},
        "students": [{"method": "kd"}],
        "seeds": [0],
        "analyses": ["accuracy"],
    }


def test_a_grayscale_study_runs_and_a_channel_mismatch_is_named(tmp_path: Path) -> None:
    root = folder(tmp_path / "d")
    out = tmp_path / "out"
    with pytest.raises(
        KdscopeError,
        match="takes 3 input channels, dataset 'image_folder' has 1; set in_channels: 1",
    ):
        run_study(parse_study(study(root)), out, quiet=True)
    assert not out.exists()
    run_study(parse_study(study(root, in_channels=1)), out, quiet=True)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["models"]) == {"teacher", "baseline", "kd"}
    with pytest.raises(KdscopeError, match="mean has 3 values for in_channels 1"):
        run_study(
            parse_study(study(root, in_channels=1, mean=[0.5, 0.5, 0.5])),
            tmp_path / "o2",
            quiet=True,
        )


def cifar_tree(root: Path, hundred: bool = False) -> Path:
    """A tiny CIFAR tree in the distributed format: each image's pixels are its index."""
    if hundred:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        meta = {
            b"fine_label_names": [b"apple", b"bear", b"cloud"],
            b"coarse_label_names": [b"x", b"y"],
        }
        files = {"train": 4, "test": 2}
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        meta = {b"label_names": [b"airplane", b"automobile", b"bird"]}
        files = {f"data_batch_{k}": 2 for k in range(1, 6)} | {"test_batch": 3}
    with (folder / ("meta" if hundred else "batches.meta")).open("wb") as f:
        pickle.dump(meta, f, protocol=2)
    start = 0
    for name, n in files.items():
        data = np.stack([np.full(3072, start + i, dtype=np.uint8) for i in range(n)])
        labels = [(start + i) % 3 for i in range(n)]
        batch = {b"data": data}
        if hundred:
            batch |= {b"fine_labels": labels, b"coarse_labels": [y % 2 for y in labels]}
        else:
            batch[b"labels"] = labels
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f, protocol=2)
        start += n
    return root


def test_cifar_batches_are_read_in_order(tmp_path: Path) -> None:
    data = build("cifar", root=str(cifar_tree(tmp_path / "c10")))
    assert len(data.train) == 10 and len(data.test) == 3
    assert data.train.class_names == ["airplane", "automobile", "bird"]
    assert data.train.inputs.dtype == torch.uint8 and data.train.inputs.shape == (10, 3, 32, 32)
    assert [int(data.train.inputs[i, 2, 31, 31]) for i in range(10)] == list(range(10))
    assert data.train.labels.tolist() == [i % 3 for i in range(10)]
    assert not data.train.has_foreground
    small = build("cifar", root=str(tmp_path / "c10"), max_per_class=1)
    assert small.train.labels.tolist() == [0, 1, 2] and len(small.test) == 3
    coarse = build("cifar", root=str(cifar_tree(tmp_path / "c100", hundred=True)), label="coarse")
    assert coarse.num_classes == 2 and coarse.train.labels.tolist() == [0, 1, 0, 0]


def test_a_cifar_file_that_would_run_code_is_refused(tmp_path: Path) -> None:
    root = cifar_tree(tmp_path / "c10")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    with (root / "cifar-10-batches-py" / "data_batch_3").open("wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(KdscopeError, match=r"data_batch_3: not a CIFAR python batch \(it asks for"):
        build("cifar", root=str(root))
    assert not marker.exists()


def test_cub_crops_birds_and_thresholds_their_segmentations(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "CUB_200_2011")
    # image 1: bird at x 2..9, y 3..8 (8 × 6); annotated box one pixel wider: 10 × 8, unresized
    data = build("cub200", root=str(root), size=[8, 10])
    assert data.train.class_names == ["001.Class_1", "002.Class_2", "003.Class_3"]
    assert data.train.labels.tolist() == [0, 1, 2] and data.test.labels.tolist() == [0, 1]
    bird = data.train.inputs[0].int()
    assert (bird[0, 1:7, 1:9] > 240).all() and (bird[1:, 1:7, 1:9] < 15).all()  # red inside
    fg = data.train.foreground[0]
    assert fg[1:7, 1:9].all() and not fg[0].any() and not fg[:, 0].any()  # halo (100) < 255 / 2
    two = build("cub200", root=str(root), size=8, classes=2, max_per_class=1)
    assert two.num_classes == 2 and two.train.labels.tolist() == [0, 1]


def test_voc_crops_one_object_per_instance_with_its_mask(tmp_path: Path) -> None:
    root = write_voc(tmp_path / "VOC2007")
    data = build("voc", root=str(root), size=[7, 5])  # the first cat's box is 5 × 7
    names = data.train.class_names
    assert [names[i] for i in data.train.labels] == ["cat", "dog", "cat"]  # the bird is difficult
    assert [names[i] for i in data.test.labels] == ["dog"]
    cat = data.train.inputs[0].int()
    assert ((cat - 140).abs() <= 3).all()  # instance 1's pixels only
    fg = data.train.foreground[0]
    assert fg[:, :4].all() and not fg[:, 4].any()  # the border column (255) is not the object
    assert len(build("voc", root=str(root), size=8, skip_difficult=False).train) == 4


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda r: (r / "Annotations" / "2007_000001.xml").write_text(
                '<!DOCTYPE a [<!ENTITY x "y">]><annotation>&x;</annotation>'
            ),
            "declares a document type or entity",
        ),
        (
            lambda r: (r / "Annotations" / "2007_000003.xml").write_text(
                voc_xml([("unicorn", (1, 1, 3, 3), 0)])
            ),
            "'unicorn', not one of the 20 VOC classes",
        ),
        (
            lambda r: (r / "SegmentationObject" / "2007_000002.png").unlink(),
            "2007_000002.jpg: no mask at",
        ),
        (
            lambda r: Image.new("P", (4, 4)).save(r / "SegmentationObject" / "2007_000003.png"),
            "the mask is 4×4, its image 2007_000003.jpg is 16×14",
        ),
    ],
)
def test_a_bad_voc_file_is_one_line_naming_it(tmp_path: Path, damage, message: str) -> None:
    root = write_voc(tmp_path / "VOC2007")
    damage(root)
    with pytest.raises(KdscopeError, match=message) as e:
        build("voc", root=str(root), size=8)
    assert "\n" not in str(e.value)


def test_a_malformed_cub_table_names_its_line(tmp_path: Path) -> None:
    root = write_cub(tmp_path / "CUB")
    (root / "bounding_boxes.txt").write_text("1 2.0 3.0\n")
    with pytest.raises(KdscopeError, match=r"bounding_boxes.txt, line 1: expected 5 columns"):
        build("cub200", root=str(root), size=8)
