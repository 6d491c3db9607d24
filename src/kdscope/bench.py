"""Benchmarks: costs measured side by side in one run, printed as ratios.

``kdscope bench training`` trains the same student, on the same data and machine, in variants
that isolate the cost of kdscope's own machinery: the per-step path-length logging of the
diagnosed layers (needed by the learning-speed metric) and the teacher-output cache (used when
students train without augmentation). Each variant is timed ``repeats`` times; the median counts.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from kdscope.config import ModelConfig, TrainConfig
from kdscope.datasets import build as build_dataset
from kdscope.models import build_model
from kdscope.trainer import RunPlan, train_run

BENCHMARKS: dict[str, Callable[..., list[dict[str, object]]]] = {}


def _benchmark(
    name: str,
) -> Callable[[Callable[..., list[dict[str, object]]]], Callable[..., list[dict[str, object]]]]:
    def add(fn: Callable[..., list[dict[str, object]]]) -> Callable[..., list[dict[str, object]]]:
        BENCHMARKS[name] = fn
        return fn

    return add


@_benchmark("training")
def bench_training(
    n_train: int = 512, epochs: int = 2, repeats: int = 3
) -> list[dict[str, object]]:
    """Student training throughput: plain, with path-length logging, with/without teacher cache."""
    data = build_dataset("shapes", n_train=n_train, n_test=256, seed=0)
    torch.manual_seed(0)
    teacher = build_model("resnet_small", data.num_classes, width=8).eval()
    train = TrainConfig(epochs=epochs, batch_size=64)
    student = ModelConfig(name="cnn_small", width=16)
    variants = [
        ("ce, no trajectory", "ce", (), True),
        ("ce, path length of conv+fc1", "ce", ("conv", "fc1"), True),
        ("kd, teacher cached", "kd", (), True),
        ("kd, teacher run every batch", "kd", (), False),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, method, layers, cache) in enumerate(variants):
            plan = RunPlan(label, 0, student, method, {}, train, (epochs,), layers)
            times = []
            for r in range(repeats):
                t0 = time.perf_counter()
                train_run(
                    plan, data, Path(tmp) / f"{i}-{r}", teacher if method != "ce" else None, cache
                )
                times.append(time.perf_counter() - t0)
            rows.append({"variant": label, "seconds": statistics.median(times)})
    base = {"ce": rows[0]["seconds"], "kd": rows[2]["seconds"]}
    for row, (_, method, *_rest) in zip(rows, variants, strict=True):
        row["images_per_s"] = n_train * epochs / float(row["seconds"])  # type: ignore[arg-type]
        row["ratio_to_first_of_method"] = float(row["seconds"]) / float(base[method])  # type: ignore[arg-type]
    return rows


def format_rows(rows: list[dict[str, object]]) -> str:
    cols = list(rows[0])
    fmt = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in fmt)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in fmt]
    return "\n".join(lines)
