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


# ------------------------------------------------------------ mixed backgrounds, groups, textures


def _fill(foreground: torch.Tensor) -> torch.Tensor:
    """The object's pixels less its outline."""
    return foreground & ~torch.from_numpy(S._inner_border(foreground.numpy()))


def _hue(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in [0, 1) of (..., 3) RGB with some saturation (the inverse of S._hsv_to_rgb)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = np.moveaxis(rgb, -1, 0)
    hi, lo = rgb.max(-1), rgb.min(-1)
    chroma = np.maximum(hi - lo, 1e-12)
    h = np.where(
        hi == r, (g - b) / chroma, np.where(hi == g, 2 + (b - r) / chroma, 4 + (r - g) / chroma)
    )
    return np.mod(h / 6.0, 1.0)


def _hue_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.mod(a - b + 0.5, 1.0) - 0.5)


def test_default_outputs_unchanged():
    # Checksums of the outputs of the code before mixed backgrounds, groups and textures were
    # added: the new options' defaults leave every original output bit for bit as it was.
    d = shapes(n_train=200, n_test=50, seed=1)
    expected = ((91665, 31923, 302593.2101630261), (5122, 8679, 79813.21036228773))
    for ds, (label_sum, fg_sum, input_sum) in zip((d.train, d.test), expected, strict=True):
        assert int((ds.labels * torch.arange(len(ds.labels))).sum()) == label_sum
        assert int(ds.foreground.sum()) == fg_sum
        assert float(ds.inputs.double().sum()) == pytest.approx(input_sum, rel=1e-7)
        assert set(ds.tags) == {"domain"}
    explicit = shapes(n_train=200, n_test=50, seed=1, groups=0, object_texture="none")
    _assert_same(d.train, explicit.train)
    _assert_same(d.test, explicit.test)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"background": "mixed"},
        {"groups": 5},
        {"object_texture": "conflict"},
        {"background": "mixed", "groups": 3, "object_texture": "random", "distractors": 9},
    ],
)
def test_new_options_keep_labels_and_masks(kwargs):
    base = shapes(n_train=120, n_test=30, seed=4)
    new = shapes(n_train=120, n_test=30, seed=4, **kwargs)
    again = shapes(n_train=120, n_test=30, seed=4, **kwargs)
    for a, b, c in ((base.train, new.train, again.train), (base.test, new.test, again.test)):
        assert torch.equal(a.labels, b.labels)
        assert torch.equal(a.foreground, b.foreground)
        _assert_same(b, c)  # deterministic
        for tag in b.tags.values():
            assert tag.dtype == torch.int64 and tag.shape == (len(b),)


def test_new_attributes_do_not_depend_on_distractors():
    common = dict(n_train=300, n_test=1, seed=3, background="mixed", groups=4)
    a = shapes(distractors=0, object_texture="random", **common).train
    b = shapes(distractors=9, object_texture="random", **common).train
    for k in ("domain", "group", "texture"):
        assert torch.equal(a.tags[k], b.tags[k]), k


def test_tags_present_only_when_on():
    assert set(shapes(n_train=8, n_test=4, groups=3).train.tags) == {"domain", "group"}
    assert set(shapes(n_train=8, n_test=4, object_texture="class").train.tags) == {
        "domain",
        "texture",
    }
    d = shapes(n_train=8, n_test=4, groups=2, object_texture="random", background="mixed")
    assert set(d.train.tags) == {"domain", "group", "texture"}
    assert set(d.train[0].tags) == {"domain", "group", "texture"}


def test_mixed_domains_balanced_and_rendered_as_their_domain():
    n = 900
    d = shapes(n_train=n, n_test=1, seed=6, background="mixed", noise=0.0, distractors=0).train
    domain = d.tags["domain"]
    counts = torch.bincount(domain, minlength=3)
    assert counts.shape == (3,) and bool((counts > 0.27 * n).all()), counts
    x, bg = d.inputs, ~d.foreground
    for i in range(n):
        pixels = x[i][:, bg[i]]  # (3, background pixels)
        uniform = bool((pixels == pixels[:, :1]).all())
        if domain[i] == 0:
            assert bool((pixels == S.PLAIN_GREY).all()), i
        elif domain[i] == 1:
            assert uniform and not bool((pixels == S.PLAIN_GREY).all()), i
        else:
            assert not uniform, i
    # The same objects as on a single background.
    single = shapes(n_train=n, n_test=1, seed=6, background="plain", noise=0.0).train
    assert torch.equal(single.foreground, d.foreground)


def test_mixed_background_cue_on_textured_images():
    k, n = 10, 450
    cfg = _config(background="mixed", background_cue=1.0, distractors=0, noise=0.0)
    images, masks, labels, p = S._generate(n, np.random.SeedSequence(11), cfg)
    textured = p["domain"] == 2
    np.testing.assert_array_equal(p["grating_tied"], textured)
    est = _grating_angle_estimate(images[textured], masks[textured])
    class_angle = labels[textured] * math.pi / k
    assert (_angle_error(est, class_angle) < math.radians(15)).mean() > 0.9


@pytest.mark.parametrize("groups", [2, 4, 7])
def test_groups_tag_range_and_balance(groups):
    n = 1400
    d = shapes(n_train=n, n_test=1, seed=0, groups=groups).train
    group = d.tags["group"]
    assert group.dtype == torch.int64
    assert int(group.min()) == 0 and int(group.max()) == groups - 1
    counts = torch.bincount(group, minlength=groups).double()
    assert bool((counts > 0.75 * n / groups).all()) and bool((counts < 1.25 * n / groups).all())
    # Independent of the class: every class appears in every group.
    joint = torch.bincount(d.labels * groups + group, minlength=10 * groups)
    assert bool((joint > 0).all())


def test_group_sets_background_colour():
    groups, n = 5, 500
    d = shapes(n_train=n, n_test=1, seed=2, groups=groups, background="mixed", noise=0.0)
    ds = d.train
    group, domain = ds.tags["group"].numpy(), ds.tags["domain"].numpy()
    # Plain and coloured backgrounds are uniform: one pixel outside the object gives the colour.
    flat = ds.inputs.permute(0, 2, 3, 1).reshape(n, -1, 3).numpy()
    first_bg = (~ds.foreground).reshape(n, -1).int().argmax(1).numpy()
    colour = flat[np.arange(n), first_bg]
    uniform = domain < 2
    hue = _hue(colour[uniform])
    assert (_hue_distance(hue, group[uniform] / groups) <= 0.25 / groups + 1e-3).all()
    plain = domain == 0
    expected = S._hsv_to_rgb(
        group[plain] / groups, np.full(plain.sum(), 0.6), np.full(plain.sum(), 0.65)
    )
    np.testing.assert_allclose(colour[plain], expected, atol=1e-6)
    # Textured: the mean background hue of each group sits near the group's hue.
    textured = domain == 2
    bg = ~ds.foreground.numpy()[:, None]
    mean_bg = (ds.inputs.numpy() * bg).sum((2, 3)) / bg.sum((2, 3))
    for g in range(groups):
        sel = textured & (group == g)
        assert _hue_distance(_hue(mean_bg[sel].mean(0)), g / groups) < 0.5 / groups


def test_group_grating_and_object_hue_bands():
    groups, n = 4, 2000
    cfg = _config(groups=groups)
    _, _, _, p = S._generate(n, np.random.SeedSequence(5), cfg)
    g = p["group"]
    even = g % 2 == 0
    assert (p["grating_freq"][even] >= 1.5).all() and (p["grating_freq"][even] <= 2.5).all()
    assert (p["grating_freq"][~even] >= 3.5).all() and (p["grating_freq"][~even] <= 5.0).all()
    dist = _angle_error(p["grating_angle"], g * math.pi / groups)
    assert (dist <= math.pi / (4 * groups) + 1e-9).all()
    # Random object hues lie in the group's sector, turned by half a turn.
    centre = np.mod((g + 0.5) / groups + 0.5, 1.0)
    assert (_hue_distance(_hue(p["colour"]), centre) <= 0.5 / groups + 1e-3).all()


def test_object_texture_tags():
    n = 3000
    common = dict(n_train=n, n_test=1, seed=1)
    cls = shapes(object_texture="class", **common).train
    assert torch.equal(cls.tags["texture"], cls.labels)
    rnd = shapes(object_texture="random", **common).train
    joint = torch.bincount(rnd.labels * 10 + rnd.tags["texture"], minlength=100).view(10, 10)
    # Every class gets every texture at roughly its 1/10 share (expected 30 each).
    assert int(joint.min()) >= 12 and int(joint.max()) <= 50, joint
    con = shapes(object_texture="conflict", **common).train
    assert not bool((con.tags["texture"] == con.labels).any())
    joint = torch.bincount(con.labels * 10 + con.tags["texture"], minlength=100).view(10, 10)
    off_diagonal = joint[~torch.eye(10, dtype=torch.bool)]
    assert int(off_diagonal.min()) >= 12  # every other texture occurs for every class
    few = shapes(n_train=200, n_test=1, num_classes=3, object_texture="conflict").train
    assert int(few.tags["texture"].max()) <= 2
    assert not bool((few.tags["texture"] == few.labels).any())


def test_texture_changes_only_the_fill():
    common = dict(n_train=200, n_test=1, seed=8, noise=0.0)
    flat = shapes(object_texture="none", **common).train
    tex = shapes(object_texture="class", **common).train
    assert torch.equal(flat.foreground, tex.foreground)
    fill = _fill(tex.foreground)
    changed = (flat.inputs != tex.inputs).any(dim=1)
    assert not bool((changed & ~fill).any())  # background and outline untouched
    assert bool(changed.flatten(1).any(dim=1).all())  # every object is textured
    # Inside the fill: the object's colour or its contrasting second colour, nothing else.
    train_seq = np.random.SeedSequence(8).spawn(2)[0]  # the stream shapes() uses for train
    _, _, _, p = S._generate(200, train_seq, _config(object_texture="class", noise=0.0))
    first = torch.from_numpy(p["colour"])[:, :, None, None]
    second = torch.from_numpy(p["texture_colour"])[:, :, None, None]
    is_first = (tex.inputs == first).all(dim=1)
    is_second = (tex.inputs == second).all(dim=1)
    assert torch.equal((is_first | is_second) & fill, fill)
    assert float((second - first).abs().max(dim=1).values.min()) > 0.2  # high contrast


def test_texture_patterns_exact_and_distinct():
    size, k = 24, len(S.TEXTURE_NAMES)  # 24 is a multiple of every period: exact fractions
    base = S._texture_pattern({"texture": np.arange(k), "texture_shift": np.zeros((k, 2))}, size)
    expected = {"dots": 0.25, "grid": 7 / 16}
    for t, name in enumerate(S.TEXTURE_NAMES):
        assert base[t].mean() == expected.get(name, 0.5), name
    # Any two textures differ on at least a quarter of the pixels whatever their offsets.
    rng = np.random.default_rng(0)
    for _ in range(20):
        shift = np.tile(rng.uniform(0, 12, size=2), (k, 1))
        other = S._texture_pattern({"texture": np.arange(k), "texture_shift": shift}, size)
        differ = (base[:, None] != other[None]).mean(axis=(2, 3))
        assert differ[~np.eye(k, dtype=bool)].min() >= 0.25 - 1e-9
    # Horizontal and vertical stripes really run that way.
    assert (base[0] == base[0][:, :1]).all() and (base[2] == base[2][:1]).all()


def test_textures_differ_visibly_on_the_same_glyph():
    common = dict(n_train=300, n_test=1, seed=2, background="plain", noise=0.0)
    a = shapes(object_texture="class", **common).train
    b = shapes(object_texture="conflict", **common).train
    fill = _fill(a.foreground)
    diff = (a.inputs - b.inputs).abs().mean(dim=1)
    per_image = (diff * fill).flatten(1).sum(1) / fill.flatten(1).sum(1)
    assert float(per_image.mean()) > 0.15
    assert float((per_image > 0.1).float().mean()) > 0.9


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"groups": 1}, "groups"),
        ({"groups": 9}, "groups"),
        ({"groups": -1}, "groups"),
        ({"groups": 2.0}, "groups"),
        ({"groups": True}, "groups"),
        ({"object_texture": "stripes"}, "object_texture"),
        ({"object_texture": None}, "object_texture"),
        ({"background": "Mixed"}, "background"),
        ({"background_cue": 0.5, "background": "coloured"}, "background_cue"),
        ({"group_rotation": [0, 45]}, "group_rotation"),  # groups off
        ({"groups": 3, "group_rotation": [0, 45]}, "group_rotation"),
        ({"groups": 2, "group_rotation": [0, 400]}, "group_rotation"),
    ],
)
def test_bad_new_params_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        shapes(**{"n_train": 4, "n_test": 4, **kwargs})


def test_stylized_images_draw_their_texture_at_random_and_carry_a_tag() -> None:
    base = shapes(n_train=600, n_test=8, size=16, seed=3, object_texture="class")
    mixed = shapes(n_train=600, n_test=8, size=16, seed=3, object_texture="class", stylized=0.5)
    tr = mixed.train
    flag = tr.tags["stylized"].bool()
    assert 0.4 < flag.float().mean() < 0.6
    # standard images keep the class texture and the very same pixels
    assert torch.equal(tr.tags["texture"][~flag], tr.labels[~flag])
    assert torch.equal(tr.inputs[~flag], base.train.inputs[~flag])
    # stylized images: texture independent of the label (mostly another class's)
    assert (tr.tags["texture"][flag] != tr.labels[flag]).float().mean() > 0.75
    assert torch.equal(tr.foreground, base.train.foreground)
    assert "stylized" not in base.train.tags
    with pytest.raises(ValueError, match="stylized"):
        shapes(n_train=4, n_test=4, object_texture="random", stylized=0.5)
    with pytest.raises(ValueError, match="stylized"):
        shapes(n_train=4, n_test=4, object_texture="class", stylized=1.5)


def test_group_rotation_turns_only_its_group_and_a_turned_plus_is_an_x_cross() -> None:
    plain = {"n_train": 300, "n_test": 1, "seed": 4, "groups": 3, "num_classes": 6}
    base = shapes(**plain).train
    turned = shapes(**plain, group_rotation=[0, 45, 0]).train
    group = base.tags["group"]
    same = group != 1
    assert torch.equal(base.inputs[same], turned.inputs[same])  # no draw moved
    assert torch.equal(base.labels, turned.labels)
    assert not torch.equal(base.foreground[~same], turned.foreground[~same])
    # Centred, upright objects (jitter 0): a plus turned by 45 degrees covers the x_cross's
    # pixels (up to a few boundary pixels of float rounding), and differs from the plus.
    fixed = {"n_train": 400, "n_test": 1, "seed": 1, "groups": 2, "num_classes": 6, "jitter": 0.0}
    d = shapes(**fixed, group_rotation=[0, 45]).train
    plus, x_cross = CLASS_NAMES.index("plus"), CLASS_NAMES.index("x_cross")
    g, y = d.tags["group"], d.labels
    turned_plus = d.foreground[(g == 1) & (y == plus)][0]
    upright_x = d.foreground[(g == 0) & (y == x_cross)][0]
    upright_plus = d.foreground[(g == 0) & (y == plus)][0]
    assert int((turned_plus != upright_x).sum()) <= 4
    assert int((turned_plus != upright_plus).sum()) > 50
