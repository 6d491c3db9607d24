"""Colour ops, resized crops and the shift protocol of the invariance tests: identities, hand-computed
values, box geometry, determinism, and the trainer running with the new augmentations."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdscope.augment import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment,
    colour_jitter,
    crop_pair,
    crop_resize,
    fixed_area_crop_boxes,
    fixed_colour_jitter,
    fixed_jitter_params,
    hsv_to_rgb,
    random_colour_jitter,
    random_crop_boxes,
    random_jitter_params,
    random_resized_crop,
    rgb_to_hsv,
    shift_pair,
)
from kdscope.config import ModelConfig, TrainConfig
from kdscope.trainer import RunPlan, train_run


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 6, h: int = 10, w: int = 10, seed: int = 0) -> torch.Tensor:
    x = torch.rand(b, 3, h, w, generator=_gen(seed))
    x[0, :, :2] = 0.0  # saturated extremes: black, white, pure colours
    x[0, :, -2:] = 1.0
    x[1, 0], x[1, 1:] = 1.0, 0.0
    return x


def _const(b: int, v: float) -> torch.Tensor:
    return torch.full((b,), v)


def _grey_by_hand(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


# --------------------------------------------------------------------------- colour ops


def test_unit_factors_and_zero_hue_are_identities() -> None:
    x = _images()
    one = _const(len(x), 1.0)
    for op in (adjust_brightness, adjust_contrast, adjust_saturation):
        torch.testing.assert_close(op(x, one), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_hue(x, _const(len(x), 0.0)), x, atol=1e-6, rtol=0)


def test_saturation_zero_gives_the_grey_image() -> None:
    x = _images()
    out = adjust_saturation(x, _const(len(x), 0.0))
    for c in range(3):
        torch.testing.assert_close(out[:, c], _grey_by_hand(x), atol=1e-6, rtol=0)


def test_hue_full_turn_is_identity_and_a_third_turn_maps_red_to_green() -> None:
    x = _images()
    torch.testing.assert_close(adjust_hue(x, _const(len(x), 1.0)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x, _const(len(x), -2.0)), x, atol=1e-5, rtol=0)
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    green, blue = red.roll(1, dims=1), red.roll(2, dims=1)
    torch.testing.assert_close(adjust_hue(red, _const(1, 1 / 3)), green, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(red, _const(1, -1 / 3)), blue, atol=1e-5, rtol=0)


def test_rgb_hsv_round_trip_and_known_values() -> None:
    x = _images()
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6, rtol=0)
    pixels = torch.tensor(
        [[1.0, 0.0, 0.0], [0.5, 0.25, 0.25], [0.0, 0.5, 1.0], [0.3, 0.3, 0.3], [0.0, 0.0, 0.0]]
    )
    hsv = rgb_to_hsv(pixels.T.reshape(1, 3, 1, 5))[0, :, 0].T
    expected = torch.tensor(
        [[0.0, 1.0, 1.0], [0.0, 0.5, 0.5], [7 / 12, 1.0, 1.0], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(hsv, expected, atol=1e-6, rtol=0)


def test_brightness_and_contrast_by_hand() -> None:
    # one image, 1 x 2 pixels: (1, 0, 0) and (0.2, 0.2, 0.2); grey levels 0.299 and 0.2
    x = torch.tensor([[1.0, 0.2], [0.0, 0.2], [0.0, 0.2]]).view(1, 3, 1, 2)
    bright = adjust_brightness(x, _const(1, 1.5))
    torch.testing.assert_close(bright[0, :, 0], torch.tensor([[1.0, 0.3], [0.0, 0.3], [0.0, 0.3]]))
    # m = (0.299 + 0.2)/2 = 0.2495; contrast 0.5: m + 0.5(x − m)
    low = adjust_contrast(x, _const(1, 0.5))[0, :, 0]
    want = torch.tensor([[0.62475, 0.22475], [0.12475, 0.22475], [0.12475, 0.22475]])
    torch.testing.assert_close(low, want)
    # contrast 3: m + 3(x − m) = 2.5 → 1, −0.499 → 0, 0.101
    high = adjust_contrast(x, _const(1, 3.0))[0, :, 0]
    torch.testing.assert_close(high, torch.tensor([[1.0, 0.101], [0.0, 0.101], [0.0, 0.101]]))


def test_op_order_matters_and_matches_sequential_application() -> None:
    # grey pixels 0.6 and 0.2: brightness ×2 then contrast ×2 gives (1.0, 0.1); the other order
    # gives (1.0, 0.0), because brightness clips 1.2 to 1 before the mean is taken
    x = torch.tensor([0.6, 0.2]).view(1, 1, 1, 2).expand(2, 3, 1, 2).clone()
    factors = torch.tensor([[2.0, 2.0, 1.0], [2.0, 2.0, 1.0]])
    order = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]])
    out = colour_jitter(x, factors, _const(2, 0.0), order)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[1.0, 0.1]] * 3))
    torch.testing.assert_close(out[1, :, 0], torch.tensor([[1.0, 0.0]] * 3))

    x = _images(8)
    params = random_jitter_params(8, _gen(3), strength=0.8, hue=0.5)
    got = colour_jitter(x, *params)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for b in range(8):
        img = x[b : b + 1]
        for j in params.order[b].tolist():
            p = params.factors[b, j] if j < 3 else params.hue[b]
            img = ops[j](img, p.view(1))
        torch.testing.assert_close(got[b : b + 1], img, atol=1e-6, rtol=0)


def test_jitter_parameters_follow_their_distributions() -> None:
    p = random_jitter_params(500, _gen(1))
    assert p.factors.min() >= 0.6 and p.factors.max() <= 1.4 and p.hue.abs().max() <= 0.2
    assert p.factors.min() < 0.65 and p.factors.max() > 1.35  # the whole range is used
    assert torch.equal(p.order.sort(1).values, torch.arange(4).expand(500, 4))
    assert len({tuple(r) for r in p.order.tolist()}) == 24  # every permutation occurs
    q = fixed_jitter_params(500, 0.3, _gen(1))
    torch.testing.assert_close((q.factors - 1).abs(), torch.full((500, 3), 0.3))
    torch.testing.assert_close(q.hue.abs(), torch.full((500,), 0.15))
    assert (q.factors > 1).any(0).all() and (q.factors < 1).any(0).all()  # both signs per op


def test_fixed_jitter_at_zero_strength_is_the_identity() -> None:
    x = _images()
    torch.testing.assert_close(fixed_colour_jitter(x, 0.0, _gen()), x, atol=1e-6, rtol=0)


def test_colour_jitter_rejects_a_non_permutation_order() -> None:
    x = _images(2)
    with pytest.raises(ValueError, match="permutation"):
        colour_jitter(x, torch.ones(2, 3), torch.zeros(2), torch.tensor([[0, 0, 1, 2]] * 2))


# --------------------------------------------------------------------------- crops


def test_full_area_square_crop_is_the_identity() -> None:
    x = _images(h=12, w=12)
    out = random_resized_crop(x, _gen(), area=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    x1, x2 = crop_pair(x, 1.0, _gen())
    torch.testing.assert_close(x1, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(x2, x, atol=1e-5, rtol=0)


def test_crop_resize_of_an_integer_box_is_crop_then_bilinear_resize() -> None:
    x = _images(3, 8, 10)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 5.0], [2.0, 3.0, 5.0, 6.0], [4.0, 5.0, 4.0, 5.0]])
    out = crop_resize(x, boxes)
    for b, (t, left, h, w) in enumerate(boxes.long().tolist()):
        crop = x[b : b + 1, :, t : t + h, left : left + w]
        want = F.interpolate(crop, size=(8, 10), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[b : b + 1], want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("s", [0.3, 0.6])
def test_fixed_area_boxes_have_the_area_and_aspect_asked_for(s: float) -> None:
    boxes = fixed_area_crop_boxes(2000, 20, 20, s, _gen(2))
    top, left, h, w = boxes.unbind(1)
    torch.testing.assert_close(h * w / 400, torch.full((2000,), s))
    aspect = w / h
    assert aspect.min() >= 3 / 4 - 1e-6 and aspect.max() <= 4 / 3 + 1e-6
    assert (aspect < 0.8).any() and (aspect > 1.25).any()
    assert abs(float(aspect.log().mean())) < 0.02  # log-uniform, symmetric about 1
    assert top.min() >= 0 and left.min() >= 0
    assert (top + h).max() <= 20 + 1e-4 and (left + w).max() <= 20 + 1e-4
    assert top.std() > 1 and left.std() > 1  # placed at random, not centred


def test_fixed_area_boxes_fall_back_to_a_centred_crop_of_that_area() -> None:
    # on a 10 x 100 strip no crop of aspect 3/4..4/3 covering half the area fits
    top, left, h, w = fixed_area_crop_boxes(5, 10, 100, 0.5, _gen()).unbind(1)
    torch.testing.assert_close(h, torch.full((5,), math.sqrt(0.5) * 10))
    torch.testing.assert_close(w, torch.full((5,), math.sqrt(0.5) * 100))
    torch.testing.assert_close(top, (10 - h) / 2)
    torch.testing.assert_close(left, (100 - w) / 2)
    full = fixed_area_crop_boxes(5, 12, 12, 1.0, _gen())
    torch.testing.assert_close(full, torch.tensor([[0.0, 0.0, 12.0, 12.0]] * 5))


def test_random_crop_boxes_respect_area_and_ratio_bounds() -> None:
    top, left, h, w = random_crop_boxes(3000, 16, 16, _gen(4)).unbind(1)
    frac = h * w / 256
    assert frac.min() >= 0.08 - 1e-6 and frac.max() <= 1 + 1e-6
    assert frac.min() < 0.1 and frac.max() > 0.9
    assert (w / h).min() >= 3 / 4 - 1e-6 and (w / h).max() <= 4 / 3 + 1e-6
    assert top.min() >= 0 and left.min() >= 0
    assert (top + h).max() <= 16 + 1e-4 and (left + w).max() <= 16 + 1e-4
    # torchvision's fallback on a strip where nothing fits: full height, width H·4/3, centred
    top, left, h, w = random_crop_boxes(4, 10, 100, _gen(), area=(0.9, 1.0)).unbind(1)
    torch.testing.assert_close(h, torch.full((4,), 10.0))
    torch.testing.assert_close(w, torch.full((4,), 40 / 3))
    torch.testing.assert_close(left, (100 - w) / 2)
    torch.testing.assert_close(top, torch.zeros(4))


# --------------------------------------------------------------------------- shift protocol


def _shift_candidates(x: torch.Tensor, d: int) -> dict[tuple[int, int], torch.Tensor]:
    """The protocol by hand at H = 28: resize to 32, centre crop 28 + d, every 28 x 28 crop."""
    big = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    t = round((32 - 28 - d) / 2)
    big = big[..., t : t + 28 + d, t : t + 28 + d]
    return {
        (dy, dx): big[..., dy : dy + 28, dx : dx + 28]
        for dy, dx in itertools.product(range(d + 1), repeat=2)
    }


def test_shift_with_zero_window_gives_the_resized_centre_crop_twice() -> None:
    x = torch.rand(4, 3, 28, 28, generator=_gen())
    x1, x2 = shift_pair(x, 0, _gen())
    assert torch.equal(x1, x2)
    torch.testing.assert_close(x1, _shift_candidates(x, 0)[(0, 0)])


def test_shift_offsets_cover_the_window_independently() -> None:
    d, n = 3, 200
    x = torch.rand(n, 3, 28, 28, generator=_gen(5))
    x1, x2 = shift_pair(x, d, _gen(6))
    cands = _shift_candidates(x, d)
    keys = list(cands)
    stacked = torch.stack([cands[k] for k in keys])  # (K, n, 3, 28, 28)
    found = []
    for out in (x1, x2):
        match = (stacked - out).abs().amax((2, 3, 4)) < 1e-6  # (K, n)
        assert torch.equal(match.sum(0), torch.ones(n, dtype=torch.long))  # exactly one offset
        found.append(match.to(torch.uint8).argmax(0))
    for idx in found:
        assert {keys[i] for i in idx.tolist()} == set(keys)  # every offset in {0..d}^2 occurs
    assert (found[0] != found[1]).float().mean() > 0.8  # drawn independently for the two crops
    with pytest.raises(ValueError, match="shift d"):
        shift_pair(x, 5, _gen())


# --------------------------------------------------------------------------- all transforms


Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _random_transforms() -> dict[str, Transform]:
    return {
        "train_jitter": lambda x, g: random_colour_jitter(x, g, strength=1.0, hue=0.5),
        "fixed_jitter": lambda x, g: fixed_colour_jitter(x, 0.6, g),
        "resized_crop": lambda x, g: random_resized_crop(x, g),
        "crop_pair": lambda x, g: torch.cat(crop_pair(x, 0.3, g)),
        "shift_pair": lambda x, g: torch.cat(shift_pair(x, 2, g)),
        "augment": lambda x, g: augment(x, ["flip", "shift", "colour", "crop"], g),
    }


@pytest.mark.parametrize("name", list(_random_transforms()))
def test_outputs_stay_in_range_and_a_seed_fixes_them(name: str) -> None:
    fn = _random_transforms()[name]
    x = _images(8, 16, 16)
    out = fn(x, _gen(7))
    assert out.shape[1:] == x.shape[1:] and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, fn(x, _gen(7)))
    assert not torch.equal(out, fn(x, _gen(8)))


def test_augment_knows_the_new_names_and_the_config_accepts_them(
    tiny_splits, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(_images(2), ["blur"], _gen())
    plan = RunPlan(
        name="m",
        seed=1,
        model=ModelConfig(name="cnn_small", width=4),
        method="ce",
        method_params={},
        train=TrainConfig(epochs=1, batch_size=16, augment=("colour", "crop")),
        checkpoints=(1,),
    )
    result = train_run(plan, tiny_splits, tmp_path / "run")
    assert 0 <= result["test_acc"] <= 1
