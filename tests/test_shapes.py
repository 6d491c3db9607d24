"""Tests of the embedded procedurally generated ``shapes`` dataset."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from kdscope.datasets import DATASETS, build
from kdscope.datasets import shapes as S
from kdscope.datasets.shapes import CLASS_COLOURS, CLASS_NAMES, NAMED_COLOURS, shapes


def _config(**overrides):
    params = dict(
        size=32,
        num_classes=10,
        background="textured",
        object_colour="random",
        jitter=1.0,
        background_cue=0.0,
        distractors=4,
        noise=0.03,
        outline=True,
    )
    params.update(overrides)
    return S._config(**params)


def _assert_same(a, b):
    for name in ("inputs", "labels", "foreground"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.tags.keys() == b.tags.keys()
    for k in a.tags:
        assert torch.equal(a.tags[k], b.tags[k])


def test_registered():
    assert "shapes" in DATASETS
    d = build("shapes", n_train=20, n_test=10, seed=1)
    assert len(d.train) == 20 and len(d.test) == 10


def test_deterministic_from_seed():
    a = shapes(n_train=64, n_test=32, seed=3)
    b = shapes(n_train=64, n_test=32, seed=3)
    _assert_same(a.train, b.train)
    _assert_same(a.test, b.test)
    c = shapes(n_train=64, n_test=32, seed=4)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    assert not torch.equal(a.test.inputs, c.test.inputs)
    # Train and test come from different streams.
    assert not torch.equal(a.train.inputs[:32], a.test.inputs)


@pytest.mark.parametrize("background", ["plain", "coloured", "textured"])
def test_shapes_dtypes_ranges(background):
    d = shapes(n_train=40, n_test=20, size=24, seed=0, background=background)
    assert d.num_classes == 10
    for ds, n in ((d.train, 40), (d.test, 20)):
        assert ds.inputs.shape == (n, 3, 24, 24) and ds.inputs.dtype == torch.float32
        assert float(ds.inputs.min()) >= 0.0 and float(ds.inputs.max()) <= 1.0
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        assert ds.foreground.shape == (n, 24, 24) and ds.foreground.dtype == torch.bool
        assert ds.modality == "image"
        assert ds.class_names == CLASS_NAMES
        domain = S.BACKGROUNDS[background]
        assert ds.tags["domain"].dtype == torch.int64
        assert torch.equal(ds.tags["domain"], torch.full((n,), domain, dtype=torch.int64))
        sample = ds[0]
        assert sample.tags == {"domain": domain}


def test_labels_balanced():
    d = shapes(n_train=103, n_test=50, seed=2)
    for ds in (d.train, d.test):
        counts = torch.bincount(ds.labels, minlength=10)
        assert int(counts.max() - counts.min()) <= 1
    # Shuffled, not in class order.
    assert not torch.equal(d.train.labels, torch.arange(103) % 10)


def test_masks_nonempty_and_sensible():
    d = shapes(n_train=500, n_test=1, seed=0)
    frac = d.train.foreground.float().mean(dim=(1, 2))
    assert bool((frac > 0.04).all()) and bool((frac < 0.6).all())
    # Every class has non-empty masks, and the average object is neither tiny nor huge.
    for c in range(10):
        assert 0.08 < float(frac[d.train.labels == c].mean()) < 0.4


@pytest.mark.parametrize("outline", [True, False])
def test_mask_exact_plain_background(outline):
    d = shapes(
        n_train=100, n_test=1, seed=5, background="plain", noise=0.0, object_colour="red",
        outline=outline,
    )  # fmt: skip
    x, mask = d.train.inputs, d.train.foreground
    red = torch.tensor(NAMED_COLOURS["red"], dtype=torch.float32)[None, :, None, None]
    is_red = (x == red).all(dim=1)
    grey = (x == S.PLAIN_GREY).all(dim=1)
    # Red luminance is low: the outline is light.
    is_outline = (x == S.OUTLINE_LIGHT).all(dim=1)
    assert torch.equal(grey, ~mask)
    if outline:
        assert torch.equal(is_red | is_outline, mask)
        assert not bool((is_red & is_outline).any())
        assert torch.equal(torch.from_numpy(S._inner_border(mask.numpy())), is_outline)
        assert bool(is_red.flatten(1).any(dim=1).all())  # every object keeps some fill
    else:
        assert torch.equal(is_red, mask)
        assert not bool(is_outline.any())


def test_class_colours_fill_the_object():
    d = shapes(
        n_train=60, n_test=1, seed=1, background="coloured", noise=0.0, object_colour="class"
    )
    fill = d.train.foreground & ~torch.from_numpy(S._inner_border(d.train.foreground.numpy()))
    expected = torch.from_numpy(CLASS_COLOURS)[d.train.labels][:, :, None, None]
    same = (d.train.inputs == expected).all(dim=1)
    assert bool((same | ~fill).all())


def test_strokes_never_in_mask():
    common = dict(n_train=200, n_test=1, seed=7, noise=0.0, background="textured")
    without = shapes(distractors=0, **common).train
    with_strokes = shapes(distractors=8, **common).train
    # Strokes are drawn after all other parameters: the objects and the rest are identical.
    assert torch.equal(without.labels, with_strokes.labels)
    assert torch.equal(without.foreground, with_strokes.foreground)
    changed = (without.inputs != with_strokes.inputs).any(dim=1)
    assert int(changed.sum()) > 200 * 8 * 4  # the strokes are there...
    assert not bool((changed & with_strokes.foreground).any())  # ...and never on the object
    assert torch.equal(
        without.inputs[without.foreground.unsqueeze(1).expand(-1, 3, -1, -1)],
        with_strokes.inputs[with_strokes.foreground.unsqueeze(1).expand(-1, 3, -1, -1)],
    )


def test_object_independent_of_background_and_noise():
    a = shapes(n_train=50, n_test=10, seed=9, background="plain", noise=0.0)
    b = shapes(n_train=50, n_test=10, seed=9, background="textured", noise=0.1, distractors=2)
    assert torch.equal(a.train.labels, b.train.labels)
    assert torch.equal(a.train.foreground, b.train.foreground)
    assert torch.equal(a.test.foreground, b.test.foreground)


def test_jitter_zero_is_centred_and_fixed():
    size = 32
    d = shapes(n_train=40, n_test=1, size=size, seed=0, jitter=0.0, background="plain")
    ds = d.train
    rows = torch.arange(size, dtype=torch.float32)
    centre = (size - 1) / 2
    for c, name in enumerate(CLASS_NAMES):
        masks = ds.foreground[ds.labels == c]
        assert torch.equal(masks, masks[:1].expand_as(masks)), name  # same every time
        if name == "crescent":  # not symmetric: its centroid is off-centre by design
            continue
        m = masks[0].float()
        cy = float((m.sum(1) * rows).sum() / m.sum())
        cx = float((m.sum(0) * rows).sum() / m.sum())
        assert abs(cy - centre) <= 1.0 and abs(cx - centre) <= 1.0, (name, cx, cy)


def test_jitter_moves_scales_and_rotates():
    cfg = _config(jitter=1.0)
    n = 2000
    _, _, _, p = S._generate(n, np.random.SeedSequence(0), cfg)
    assert p["radius"].min() >= 0.22 * 32 - 1e-6 and p["radius"].max() <= 0.38 * 32 + 1e-6
    assert np.ptp(p["radius"]) > 0.14 * 32
    assert np.abs(p["rotation"]).max() <= math.radians(15) + 1e-9
    assert np.abs(p["cx"] - 16).max() > 0.15 * 32
    assert np.abs(p["cx"] - 16).max() <= 0.2 * 32 + 1e-9


def _grating_angle_estimate(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Dominant orientation (mod pi) of the background from its mid-frequency power spectrum."""
    n, size = images.shape[0], images.shape[-1]
    g = images.mean(axis=1)
    mean = np.nanmean(np.where(masks, np.nan, g).reshape(n, -1), axis=1)[:, None, None]
    g = np.where(masks, mean, g) - mean
    power = np.abs(np.fft.fft2(g)) ** 2
    f = np.fft.fftfreq(size) * size
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fx, fy)
    weight = ((radius >= 1.5) & (radius <= 6)) * np.exp(2j * np.arctan2(fy, fx))
    return np.angle((power * weight).sum(axis=(1, 2))) / 2 % math.pi


def _angle_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((a - b + math.pi / 2) % math.pi - math.pi / 2)


def test_background_cue_ties_orientation_to_class():
    k, n = 10, 300
    cfg = _config(background_cue=1.0, distractors=0, noise=0.0)
    images, masks, labels, p = S._generate(n, np.random.SeedSequence(11), cfg)
    class_angle = labels * math.pi / k
    # Exact: every grating orientation is the class's.
    assert p["grating_tied"].all()
    np.testing.assert_array_equal(p["grating_angle"], class_angle)
    # And it is what is rendered: the background's dominant orientation follows the class.
    est = _grating_angle_estimate(images, masks)
    assert (_angle_error(est, class_angle) < math.radians(15)).mean() > 0.9

    cfg0 = _config(background_cue=0.0, distractors=0, noise=0.0)
    images0, masks0, labels0, p0 = S._generate(n, np.random.SeedSequence(11), cfg0)
    assert not p0["grating_tied"].any()
    est0 = _grating_angle_estimate(images0, masks0)
    assert (_angle_error(est0, p0["grating_angle"]) < math.radians(15)).mean() > 0.9
    assert (_angle_error(est0, labels0 * math.pi / k) < math.radians(15)).mean() < 0.4


def test_background_cue_partial():
    cfg = _config(background_cue=0.5)
    _, _, labels, p = S._generate(2000, np.random.SeedSequence(0), cfg)
    tied = p["grating_tied"]
    assert 0.4 < tied.mean() < 0.6
    np.testing.assert_array_equal(p["grating_angle"][tied], labels[tied] * math.pi / 10)


def test_num_classes_three():
    d = shapes(n_train=30, n_test=9, num_classes=3, seed=0)
    assert d.num_classes == 3
    assert d.train.class_names == ["disk", "ring", "square"]
    assert torch.equal(torch.bincount(d.train.labels), torch.tensor([10, 10, 10]))
    assert torch.equal(torch.bincount(d.test.labels), torch.tensor([3, 3, 3]))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"num_classes": 11}, "num_classes"),
        ({"num_classes": 1}, "num_classes"),
        ({"size": 7}, "size"),
        ({"size": 32.0}, "size"),
        ({"n_train": 0}, "n_train"),
        ({"n_test": 0}, "n_test"),
        ({"seed": -1}, "seed"),
        ({"background": "noisy"}, "background"),
        ({"object_colour": "mauve"}, "object_colour"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": float("nan")}, "jitter"),
        ({"background_cue": 2.0}, "background_cue"),
        ({"background_cue": 0.5, "background": "plain"}, "background_cue"),
        ({"distractors": -1}, "distractors"),
        ({"noise": -0.1}, "noise"),
        ({"outline": 1}, "outline"),
    ],
)
def test_bad_params_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        shapes(**{"n_train": 4, "n_test": 4, **kwargs})


@pytest.mark.parametrize("colour", sorted(NAMED_COLOURS))
def test_named_colours_and_small_size(colour):
    d = shapes(n_train=20, n_test=2, size=8, seed=0, object_colour=colour)
    assert d.train.inputs.shape == (20, 3, 8, 8)
    assert bool(d.train.foreground.flatten(1).any(dim=1).all())


def test_generation_time_10k():
    start = time.perf_counter()
    d = shapes(n_train=10_000, n_test=1, size=32, seed=0)
    elapsed = time.perf_counter() - start
    assert len(d.train) == 10_000
    print(f"\nshapes: 10,000 32x32 images generated in {elapsed:.2f} s")
