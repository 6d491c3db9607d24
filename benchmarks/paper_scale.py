"""What the knowledge-point papers' setting costs: VGG-16 on CUB-200 (224x224 images, 200
classes), the ``reference`` recipe (80 SGD steps, 96 noise samples per step) against the
``fast`` estimator (128 vector-Jacobian products), per input, per checkpoint, per layer.

Measured here at a small image size on this machine's CPU, with one thread, and extrapolated to
224x224 by the ratio of the forward-pass FLOPs (both costs are forward and backward passes of the
network up to the diagnosed layer); docs/scaling.md reports the output and what it implies.

    python benchmarks/paper_scale.py [--size 64] [--reference-steps 2] [--device cuda]

The reference recipe is timed over ``--reference-steps`` and twice as many of its 80 steps;
the difference gives the cost of a step, extrapolated to 80.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from kdscope.knowledge_points.estimator import EstimatorSettings, estimate
from kdscope.knowledge_points.units import image_grid

#: VGG-16's convolution widths, "M" a 2x2 max-pool (Simonyan and Zisserman 2015, config D)
VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
#: the layers the papers diagnose (their names in :func:`vgg16`)
LAYERS = ("conv4_3", "conv5_3", "fc1")


def vgg16(num_classes: int = 200, size: int = 224) -> nn.Sequential:
    """VGG-16 (no BatchNorm, as the papers' torchvision model) with named layers."""
    layers: list[tuple[str, nn.Module]] = []
    channels, block, index = 3, 1, 1
    for width in VGG16:
        if width == "M":
            layers.append((f"pool{block}", nn.MaxPool2d(2)))
            block, index = block + 1, 1
            continue
        layers.append((f"conv{block}_{index}", nn.Conv2d(channels, int(width), 3, padding=1)))
        layers.append((f"relu{block}_{index}", nn.ReLU()))
        channels, index = int(width), index + 1
    side = size // 32
    layers += [
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(512 * side * side, 4096)),
        ("relu_fc1", nn.ReLU()),
        ("fc2", nn.Linear(4096, 4096)),
        ("relu_fc2", nn.ReLU()),
        ("fc3", nn.Linear(4096, num_classes)),
    ]
    from collections import OrderedDict

    return nn.Sequential(OrderedDict(layers)).eval()


def conv_flops(size: int, until: str) -> float:
    """Multiply-adds of VGG-16's convolutions on one size x size image, up to layer ``until``."""
    flops, channels, side, block, index = 0.0, 3, size, 1, 1
    for width in VGG16:
        if width == "M":
            side, block, index = side // 2, block + 1, 1
            if until == f"pool{block - 1}":
                break
            continue
        flops += side * side * channels * int(width) * 9
        channels = int(width)
        if until == f"conv{block}_{index}":
            return flops
        index += 1
    return flops


def _reference(steps: int) -> EstimatorSettings:
    """The reference recipe stopped after ``steps`` of its 80 steps."""
    return EstimatorSettings(mode="reference", max_steps=steps, check_step=steps - 1)


def seconds(model: nn.Module, layer: str, x: torch.Tensor, units, settings) -> float:  # noqa: ANN001
    """Seconds of one estimate of ``x`` at ``layer``."""
    t0 = time.perf_counter()
    estimate(model, layer, x, units, settings)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64, help="image side measured (a multiple of 32)")
    p.add_argument("--reference-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda: where the network computes")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = vgg16(size=args.size).to(args.device)
    x = torch.rand(1, 3, args.size, args.size)
    units = image_grid((3, args.size, args.size), args.size // 16)  # 16 x 16 cells, as the papers
    scale = (224 / args.size) ** 2
    print(
        f"VGG-16, measured at {args.size}x{args.size} on 1 input, {args.threads} thread(s); "
        f"x{scale:.1f} to 224x224 (conv FLOPs)"
    )
    print("layer     fast s/input/ckpt  reference s/input/ckpt  ratio   (at 224x224)")
    for layer in LAYERS:
        fast = seconds(model, layer, x, units, EstimatorSettings(mode="fast"))
        a, b = args.reference_steps, 2 * args.reference_steps
        t_a, t_b = (seconds(model, layer, x, units, _reference(n)) for n in (a, b))
        ref = t_a + (t_b - t_a) / (b - a) * (80 - a)  # the fixed part, then 80 steps
        print(f"{layer:8s}  {fast * scale:17.1f}  {ref * scale:22.1f}  {ref / fast:6.0f}")


if __name__ == "__main__":
    main()
