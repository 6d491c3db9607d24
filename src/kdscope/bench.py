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
from kdscope.trainer import RunPlan, load_checkpoint, train_run

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


@_benchmark("knowledge-points")
def bench_knowledge_points(images: int = 32, repeats: int = 1) -> list[dict[str, object]]:
    """``fast`` against ``reference`` information discarding on the same trained model, inputs
    and machine: seconds per input map, the speed ratio, and the agreement of the maps
    (per-input Spearman of entropy maps, knowledge-point counts). A second reference run with
    another noise seed gives the ceiling any method can reach against a Monte Carlo reference.
    ``meets_targets``: speed-up ≥ 20, mean Spearman ≥ 0.9 and mean N_fg and N_bg within 1.
    """
    from kdscope.knowledge_points import metrics
    from kdscope.knowledge_points.diagnosis import image_units
    from kdscope.knowledge_points.estimator import EstimatorSettings, estimate

    data = build_dataset("shapes", n_train=1000, n_test=200, seed=0)
    plan = RunPlan(
        "bench",
        0,
        ModelConfig(name="cnn_small", width=16),
        "ce",
        {},
        TrainConfig(epochs=8, lr=0.05, batch_size=32),
        (8,),
    )
    x = data.train.inputs[:images]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        train_run(plan, data, Path(tmp))
        model = load_checkpoint(plan, data.num_classes, Path(tmp) / "checkpoints" / "epoch_008.pt")
    units = image_units(model, x)
    fg = units.foreground(data.train.foreground[:images]).numpy()
    for layer in ("conv", "fc1"):
        variants = {
            "reference": EstimatorSettings(mode="reference", seed=0),
            "reference, other noise seed": EstimatorSettings(mode="reference", seed=1),
            "fast": EstimatorSettings(mode="fast"),
        }
        estimate(model, layer, x[:2], units, variants["fast"])  # warm-up
        maps, seconds = {}, {}
        for label, settings in variants.items():
            times = []
            for _ in range(repeats if label == "fast" else 1):
                t0 = time.perf_counter()
                maps[label] = estimate(model, layer, x, units, settings).entropy.numpy()
                times.append(time.perf_counter() - t0)
            seconds[label] = statistics.median(times)
        ref = maps["reference"]
        for label in ("reference, other noise seed", "fast"):
            rows.append(
                {
                    "layer": layer,
                    "variant": label,
                    "s_per_map": seconds[label] / images,
                    "speedup_vs_reference": (
                        seconds["reference"] / seconds[label] if label == "fast" else "-"
                    ),
                    **_agreement(maps[label], ref, fg, metrics),
                }
            )
        fast = rows[-1]
        fast["meets_targets"] = (
            "yes"
            if float(fast["speedup_vs_reference"]) >= 20  # type: ignore[arg-type]
            and float(fast["spearman"]) >= 0.9  # type: ignore[arg-type]
            and abs(float(fast["d_mean_N_fg"])) <= 1  # type: ignore[arg-type]
            and abs(float(fast["d_mean_N_bg"])) <= 1  # type: ignore[arg-type]
            else "no"
        )
        rows[-2]["meets_targets"] = "-"
    return rows


def _agreement(h: object, ref: object, fg: object, metrics: object) -> dict[str, float]:
    """Mean per-input Spearman; mean |ΔN_fg|, |ΔN_bg| per input; difference of mean counts."""
    import numpy as np

    h, ref = np.asarray(h)[:, None], np.asarray(ref)[:, None]  # (I, 1, n): one checkpoint
    counts = []
    for e in (h, ref):
        pts = metrics.knowledge_points(e, metrics.background_level(e, fg))  # type: ignore[attr-defined]
        c = metrics.point_counts(pts, fg)  # type: ignore[attr-defined]
        counts.append((c["n_fg"][:, 0].astype(float), c["n_bg"][:, 0].astype(float)))
    (fa, ba), (fr, br) = counts
    rho = [metrics.spearman(a[0], b[0]) for a, b in zip(h, ref, strict=True)]  # type: ignore[attr-defined]
    return {
        "spearman": float(np.mean(rho)),
        "abs_dN_fg": float(np.abs(fa - fr).mean()),
        "abs_dN_bg": float(np.abs(ba - br).mean()),
        "d_mean_N_fg": float(fa.mean() - fr.mean()),
        "d_mean_N_bg": float(ba.mean() - br.mean()),
    }


@_benchmark("verdicts")
def bench_verdicts(studies: int = 4000) -> list[dict[str, object]]:
    """False-positive rate of the verdict intervals in simulated null studies for 2, 3, 5 and 10
    seeds and every data design the analyses produce, beside the nominal 5 %, and the power at
    a stated effect (:mod:`kdscope.null_studies`)."""
    from kdscope.null_studies import simulate

    return simulate(studies=studies)
