"""Benchmarks: costs measured side by side in one run, printed as ratios.

``kdscope bench training`` trains the same student, on the same data and machine, in variants
that isolate the cost of kdscope's own machinery: the per-step path-length logging of the
diagnosed layers (needed by the learning-speed metric) and the teacher-output cache (used when
students train without augmentation). Each variant is timed ``repeats`` times; the median counts.

``kdscope bench knowledge-points`` compares the ``fast`` knowledge-point estimator with the
``reference`` recipe input by input on a trained teacher, baseline and student at every
diagnosed layer, and prints whether each passes the agreement gate.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kdscope.config import ModelConfig, TrainConfig
from kdscope.correlation import spearman
from kdscope.datasets import build as build_dataset
from kdscope.datasets.base import DataSplits
from kdscope.knowledge_points import metrics as kp_metrics
from kdscope.methods import METHODS
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


#: The gate of ``kdscope bench knowledge-points``, per network and layer, on per-input
#: agreement of ``fast`` with ``reference`` (docs/knowledge_points.md, 'Bench: fast against
#: reference', read input by input).
KP_GATE = {"spearman_min": 0.9, "abs_dN_max": 1.0, "speedup_min": 20.0}


@_benchmark("knowledge-points")
def bench_knowledge_points(images: int = 6, repeats: int = 1) -> list[dict[str, object]]:
    """``fast`` against ``reference`` information discarding, input by input, on the same
    models, inputs and machine: a teacher, a baseline trained on labels and a KD student (all
    ``cnn_small``, 16×16 shapes, 8×8 cells), at the layers ``conv`` and ``fc1``.

    Per (network, layer): seconds per map, the speed-up, and the per-input agreement of the
    maps: the mean over inputs of Spearman(H_fast(x), H_ref(x)) (the rank agreement of the σ
    maps, since H = log σ + const), and the mean and largest |N_fast(x) − N_ref(x)| of
    foreground and background knowledge points (each estimator with its own background level
    over the inputs). A second reference run with another noise seed gives the ceiling a
    method can reach against a Monte Carlo reference. The gate (:data:`KP_GATE`) passes when
    the mean Spearman is ≥ 0.9, both mean |ΔN| are ≤ 1 and the speed-up is ≥ 20; a
    disagreement on one input therefore counts even if it cancels in the mean counts.
    """
    from kdscope.knowledge_points.diagnosis import image_units
    from kdscope.knowledge_points.estimator import EstimatorSettings, estimate

    data = build_dataset("shapes", n_train=512, n_test=128, size=16, seed=0)
    x = data.train.inputs_at(slice(0, images))
    networks = _kp_networks(data)
    units = image_units(networks["teacher"], x)
    fg = units.foreground(data.train.foreground[:images]).numpy()
    variants = {
        "reference": EstimatorSettings(mode="reference", seed=0),
        "reference, other noise seed": EstimatorSettings(mode="reference", seed=1),
        "fast": EstimatorSettings(mode="fast"),
    }
    rows: list[dict[str, object]] = []
    for net, model in networks.items():
        for layer in ("conv", "fc1"):
            estimate(model, layer, x[:2], units, variants["fast"])  # warm-up
            maps, seconds = {}, {}
            for label, settings in variants.items():
                times = []
                for _ in range(repeats if label == "fast" else 1):
                    t0 = time.perf_counter()
                    maps[label] = estimate(model, layer, x, units, settings).entropy.numpy()
                    times.append(time.perf_counter() - t0)
                seconds[label] = statistics.median(times)
            for label in ("reference, other noise seed", "fast"):
                speedup = seconds["reference"] / seconds[label]
                row = _agreement(maps[label], maps["reference"], fg)
                rows.append(
                    {
                        "network": net,
                        "layer": layer,
                        "variant": label,
                        "s_per_map": seconds[label] / images,
                        "speedup": speedup,
                        **row,
                        "gate": _gate(row, speedup) if label == "fast" else "-",
                    }
                )
    return rows


def _kp_networks(data: DataSplits) -> dict[str, torch.nn.Module]:
    """A teacher, a baseline (cross-entropy) and a KD student of the same small CNN, trained on
    ``data`` (seconds on 2 cores), in eval mode."""
    model = ModelConfig(name="cnn_small", width=8)
    recipe = TrainConfig(epochs=4, lr=0.05, batch_size=32)
    plans = {
        "teacher": RunPlan(
            "teacher", 0, model, "ce", {}, recipe.model_copy(update={"epochs": 8}), (8,)
        ),
        "baseline": RunPlan("baseline", 1, model, "ce", {}, recipe, (4,)),
        "kd student": RunPlan("kd", 1, model, "kd", {}, recipe, (4,)),
    }
    out: dict[str, torch.nn.Module] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, plan in plans.items():
            run_dir = Path(tmp) / name
            teacher = out.get("teacher") if METHODS.get(plan.method).needs_teacher else None
            train_run(plan, data, run_dir, teacher)
            epoch = plan.checkpoints[-1]
            ckpt = run_dir / "checkpoints" / f"epoch_{epoch:03d}.pt"
            out[name] = load_checkpoint(plan, data.num_classes, ckpt)
    return out


def _gate(row: dict[str, float], speedup: float) -> str:
    """The gate's outcome: pass, or fail with the measures outside :data:`KP_GATE`."""
    failed = [
        name
        for name, bad in (
            ("spearman", not row["spearman"] >= KP_GATE["spearman_min"]),
            ("N_fg", not row["abs_dN_fg"] <= KP_GATE["abs_dN_max"]),
            ("N_bg", not row["abs_dN_bg"] <= KP_GATE["abs_dN_max"]),
            ("speed", not speedup >= KP_GATE["speedup_min"]),
        )
        if bad
    ]
    return "fail: " + ", ".join(failed) if failed else "pass"


def _agreement(h: np.ndarray, ref: np.ndarray, fg: np.ndarray) -> dict[str, float]:
    """Per-input agreement of entropy maps h and ref (I, n) with foreground units fg (I, n).

    With N(x) the knowledge-point counts of input x (each map set with its own background level
    H̄ over the I inputs, b = 0.2):

        spearman  = mean_x Spearman(h(x), ref(x))
        abs_dN_fg = mean_x |N_fg^h(x) − N_fg^ref(x)|,  max_dN_fg = max_x of the same
        abs_dN_bg, max_dN_bg likewise for background points
    """
    counts = []
    for e in (np.asarray(h)[:, None], np.asarray(ref)[:, None]):  # (I, 1, n): one checkpoint
        pts = kp_metrics.knowledge_points(e, kp_metrics.background_level(e, fg))
        c = kp_metrics.point_counts(pts, fg)
        counts.append((c["n_fg"][:, 0].astype(float), c["n_bg"][:, 0].astype(float)))
    (fa, ba), (fr, br) = counts
    d_fg, d_bg = np.abs(fa - fr), np.abs(ba - br)
    rho = [spearman(a, b, missing="nan") for a, b in zip(h, ref, strict=True)]
    return {
        "spearman": float(np.mean(rho)),
        "abs_dN_fg": float(d_fg.mean()),
        "max_dN_fg": float(d_fg.max()),
        "abs_dN_bg": float(d_bg.mean()),
        "max_dN_bg": float(d_bg.max()),
    }


@_benchmark("verdicts")
def bench_verdicts(studies: int = 4000) -> list[dict[str, object]]:
    """False-positive rate of the verdict intervals in simulated null studies for 2, 3, 5 and 10
    seeds and every data design the analyses produce, beside the nominal 5 %, and the power at
    a stated effect (:mod:`kdscope.null_studies`)."""
    from kdscope.null_studies import simulate

    return simulate(studies=studies)
