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

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdscope import io
from kdscope.config import ModelConfig, StudyConfig, TrainConfig
from kdscope.correlation import spearman
from kdscope.datasets import build as build_dataset
from kdscope.datasets.base import DataSplits
from kdscope.evaluation import accuracy_and_loss
from kdscope.knowledge_points import metrics as kp_metrics
from kdscope.methods import METHODS
from kdscope.models import build_model
from kdscope.trainer import RunPlan, load_checkpoint, lr_at, make_optimizer, train_run
from kdscope.trajectory import checkpoint_epochs

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


#: the most a kdscope training run may cost relative to a hand-written loop
#: (:func:`bench_training_overhead`)
HAND_LOOP_GATE = 1.10


@_benchmark("training-overhead")
def bench_training_overhead(repeats: int = 3) -> list[dict[str, object]]:
    """A student of the default study (``cnn_small`` width 16, 120 training images, batch 16,
    the default test split) trained by kdscope's trainer (every epoch: path lengths of three
    layers, test evaluation, metrics, trajectory and resume state written; the checkpoints of
    ``checkpoints: auto``) and by a hand-written PyTorch loop with the same model, data,
    optimiser, schedule and per-epoch test evaluation, alternately, ``repeats`` times each; the
    ratio of the medians passes when at most :data:`HAND_LOOP_GATE`."""
    full = build_dataset("shapes", n_train=2000, n_test=500, seed=0)
    data = DataSplits(full.train.subset(torch.arange(120)), full.test)
    train = TrainConfig(epochs=30, lr=0.02, batch_size=16)
    model = ModelConfig(name="cnn_small", width=16)
    epochs = checkpoint_epochs("auto", train.epochs)
    plan = RunPlan("bench", 0, model, "ce", {}, train, tuple(epochs), ("conv", "fc1", "fc2"))
    times: dict[str, list[float]] = {"kdscope train_run": [], "hand-written loop": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            t0 = time.perf_counter()
            train_run(plan, data, Path(tmp) / f"run{r}")
            times["kdscope train_run"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            hand_loop(model, train, data)
            times["hand-written loop"].append(time.perf_counter() - t0)
    hand = statistics.median(times["hand-written loop"])
    rows: list[dict[str, object]] = []
    for label, ts in times.items():
        ratio = statistics.median(ts) / hand
        gate = "" if label.startswith("hand") else ("pass" if ratio <= HAND_LOOP_GATE else "fail")
        rows.append(
            {"variant": label, "seconds": statistics.median(ts), "ratio": ratio, "gate": gate}
        )
    return rows


def hand_loop(model_cfg: ModelConfig, cfg: TrainConfig, data: DataSplits) -> float:
    """What a user would write: the model, SGD with the study's schedule, shuffled
    mini-batches, and the test accuracy after every epoch (no logging, no files). Returns
    the last test accuracy."""
    torch.manual_seed(0)
    model = model_cfg.build(data.num_classes)
    opt = make_optimizer(cfg, list(model.parameters()))
    acc = 0.0
    for epoch in range(cfg.epochs):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, epoch, cfg.epochs)
        model.train()
        gen = torch.Generator().manual_seed(epoch)
        for batch in data.train.batches(cfg.batch_size, gen):
            if len(batch) < 2:
                continue
            loss = F.cross_entropy(model(batch.input), batch.label)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc, _ = accuracy_and_loss(model, data.test)
    return acc


#: the least speed-up the process pool must give over one process at the same thread count
EXECUTOR_GATE = 1.6


@_benchmark("executor")
def bench_executor(repeats: int = 1, preset: str = "smoke") -> list[dict[str, object]]:
    """The ``preset`` study run whole (training and analyses) three ways in one run: in this
    process as it runs by default (torch's own thread count), in this process at one thread
    per job, and on a pool of one worker per core at one thread each. Prints each one's
    seconds and the pool's speed-up over it, and whether its ``summary.json`` equals the
    pool's. Gates: the pool at least :data:`EXECUTOR_GATE` times as fast as the default run,
    and bit-identical to the one-process run at its own thread count (a run at another count
    may differ in the last bits: docs/scaling.md)."""
    from kdscope.config import load_preset
    from kdscope.executor import default_workers

    cfg = load_preset(preset)
    workers = default_workers()
    variants = [
        (f"local, {torch.get_num_threads()} threads (torch's own)", cfg.executing("local")),
        ("local, 1 thread", cfg.executing("local", threads=1)),
        (f"processes, {workers} workers x 1 thread", cfg.executing("processes", workers)),
    ]
    times: dict[str, list[float]] = {label: [] for label, _ in variants}
    summaries: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for i, (label, study) in enumerate(variants):
                seconds_, summaries[label] = _timed_study(study, Path(tmp) / f"{i}-{r}")
                times[label].append(seconds_)
    seconds = {label: statistics.median(ts) for label, ts in times.items()}
    pool = variants[2][0]
    rows: list[dict[str, object]] = []
    for i, (label, _) in enumerate(variants):
        speedup = seconds[label] / seconds[pool]
        same = summaries[label] == summaries[pool]
        gate = ""
        if i == 0:
            gate = "pass" if speedup >= EXECUTOR_GATE else f"fail (< {EXECUTOR_GATE})"
        elif i == 1:
            gate = "pass" if same else "fail (summaries differ)"
        rows.append(
            {
                "variant": label,
                "seconds": seconds[label],
                "pool_speedup": speedup,
                "summary_as_pool": "yes" if same else "no",
                "gate": gate,
            }
        )
    return rows


def _timed_study(cfg: StudyConfig, out: Path) -> tuple[float, dict[str, Any]]:
    """Seconds to run study ``cfg`` whole into ``out``, and its ``summary.json`` without the
    ``environment`` (which names the executor and device, the things the benches vary)."""
    from kdscope.pipeline import run_study

    t0 = time.perf_counter()
    run_study(cfg, out, quiet=True)
    seconds = time.perf_counter() - t0
    summary = io.read_json(out / "summary.json")
    summary.pop("environment")
    return seconds, summary


#: the analyses ``kdscope bench device`` adds to its study: every property-transfer and
#: teacher-knowledge analysis, on few inputs (an analysis that does not apply to the study's data
#: is skipped, and named). Those that train models of their own (the foreign attack source, the
#: control teacher T* and its students, the accuracy-matched students) train them on the device.
DEVICE_ANALYSES: tuple[dict[str, Any], ...] = (
    {"name": "localisation", "n_inputs": 64},
    {"name": "representation_similarity", "n_inputs": 64},
    {"name": "adversarial", "n_inputs": 64, "calibration": 48},
    {"name": "accuracy_matched", "n_inputs": 64, "factors": [0.5]},
    {"name": "invariance", "n_inputs": 64},
    {"name": "decision_boundary", "triplets": 5, "resolution": 10},
    {"name": "domains"},
    {"name": "shape_bias"},
    {"name": "subgroups"},
    {"name": "property_claims"},
    {"name": "calibration"},
    {"name": "difficulty"},
    {"name": "soft_labels"},
    {"name": "rescaling"},
    {"name": "class_geometry", "permutations": 199},
    {"name": "teacher_check"},
    {"name": "three_levels"},
)

#: how far an analysis' number computed on the GPU may lie from the CPU's, on the same models:
#: |cuda − cpu| ≤ 0.05 · max(1, |cpu|); and the share of an analysis' numbers allowed beyond it
#: (an argmax that flips on a near-tie moves a rate by one input)
ANALYSIS_TOLERANCE = 0.05
ANALYSIS_GATE = 0.02


def device_study(preset: str = "smoke") -> StudyConfig:
    """The ``preset`` study with its analyses and :data:`DEVICE_ANALYSES`."""
    from kdscope.config import AnalysisConfig, load_preset

    cfg = load_preset(preset)
    named = {a.name for a in cfg.analyses}
    extra = tuple(AnalysisConfig(**a) for a in DEVICE_ANALYSES if a["name"] not in named)
    return cfg.model_copy(update={"analyses": (*cfg.analyses, *extra)})


@_benchmark("device")
def bench_device(repeats: int = 1, preset: str = "smoke") -> list[dict[str, object]]:
    """The GPU checks, where torch sees a CUDA GPU (else one row saying so): the ``preset``
    study with every property-transfer and teacher-knowledge analysis
    (:func:`device_study`) on the CPU and twice on ``cuda``, timed; whether the two CUDA runs
    are identical, analyses included (determinism on one GPU: docs/scaling.md); how far the
    CUDA study's test accuracies lie from the CPU's (different float rounding, so not
    bit-identical; the gate is 0.05); whether every analysis that ran on the CPU ran on CUDA;
    and, with the CPU's trained models analysed again on CUDA (a copy of the CPU's study folder,
    resumed: nothing retrains), how many of each analysis' numbers lie within
    :data:`ANALYSIS_TOLERANCE` of the CPU's (gate: at most :data:`ANALYSIS_GATE` of any
    analysis' numbers beyond it)."""
    if not torch.cuda.is_available():
        return [{"check": "cuda", "result": "skipped: torch sees no CUDA GPU on this machine"}]
    cfg = device_study(preset)
    summaries, seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, dev in (("cpu", "cpu"), ("cuda", "cuda"), ("cuda again", "cuda")):
            seconds[label], summaries[label] = _timed_study(
                cfg.executing(device=dev), Path(tmp) / label
            )
        reanalysed = Path(tmp) / "cpu models on cuda"
        shutil.copytree(Path(tmp) / "cpu", reanalysed)
        seconds["reanalysed"], summaries["reanalysed"] = _timed_study(
            cfg.executing(device="cuda"), reanalysed
        )
    gap = max(
        abs(a["test_acc"] - b["test_acc"])
        for name, group in summaries["cpu"]["models"].items()
        for seed, a in group["seeds"].items()
        for b in [summaries["cuda"]["models"][name]["seeds"][seed]]
    )
    same = summaries["cuda"] == summaries["cuda again"]
    ran = {label: _ran(summaries[label]["analyses"]) for label in ("cpu", "cuda")}
    skipped = sorted(set(summaries["cpu"]["analyses"]) - ran["cpu"])
    all_ran = ran["cpu"] == ran["cuda"]
    off = _analysis_deviations(summaries["cpu"]["analyses"], summaries["reanalysed"]["analyses"])
    worst = max(off, key=lambda name: off[name][0] / max(off[name][1], 1), default="-")
    bad, total, example = off.get(worst, (0, 0, ""))
    n_off, n = (sum(v[i] for v in off.values()) for i in (0, 1))
    within = all(bad <= ANALYSIS_GATE * total for bad, total, _ in off.values())
    return [
        {
            "check": "seconds on cpu / cuda",
            "result": f"{seconds['cpu']:.1f} / {seconds['cuda']:.1f}",
            "gate": "",
        },
        {
            "check": "cuda runs identical",
            "result": "yes" if same else "no",
            "gate": "pass" if same else "fail",
        },
        {
            "check": "max |test acc cuda - cpu|",
            "result": f"{gap:.4f}",
            "gate": "pass" if gap <= 0.05 else "fail",
        },
        {
            "check": "analyses run on cuda",
            "result": f"{len(ran['cuda'])} (skipped, not applicable: {', '.join(skipped) or '-'})",
            "gate": "pass"
            if all_ran
            else "fail (" + ", ".join(sorted(ran["cpu"] ^ ran["cuda"])) + ")",
        },
        {
            "check": "analyses of the cpu models on cuda: numbers off the cpu's",
            "result": f"{n_off} of {n}"
            + (f"; most in {worst}: {bad} of {total}, e.g. {example}" if bad else ""),
            "gate": "pass" if within else f"fail (> {ANALYSIS_GATE:.0%} of an analysis)",
        },
    ]


def _ran(analyses: dict[str, Any]) -> set[str]:
    """The analyses of a study's summary (its ``analyses``) that ran, not skipped."""
    return {name for name, r in analyses.items() if not (isinstance(r, dict) and "skipped" in r)}


def _numbers(tree: object, path: str = "") -> dict[str, float]:
    """Every number in a JSON tree (booleans aside), by its path."""
    if isinstance(tree, dict):
        return {
            k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{path}/{key}").items()
        }
    if isinstance(tree, list):
        return {
            k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{path}[{i}]").items()
        }
    if isinstance(tree, int | float) and not isinstance(tree, bool):
        return {path: float(tree)}
    return {}


def _analysis_deviations(
    cpu: dict[str, Any], cuda: dict[str, Any]
) -> dict[str, tuple[int, int, str]]:
    """Per analysis that ran on both: how many of its CPU numbers the CUDA run misses or has
    beyond :data:`ANALYSIS_TOLERANCE` (NaN matches NaN), how many numbers it has, and the
    first such number (its path and both values)."""

    def close(x: float, y: float | None) -> bool:
        if y is None:
            return False
        return bool(np.isnan(x) and np.isnan(y)) or abs(y - x) <= ANALYSIS_TOLERANCE * max(
            1.0, abs(x)
        )

    out = {}
    for name in sorted(_ran(cpu) & _ran(cuda)):
        a, b = _numbers(cpu[name]), _numbers(cuda[name])
        bad = [path for path, x in a.items() if not close(x, b.get(path))]
        example = f"{bad[0]}: {a[bad[0]]:.4g} -> {b.get(bad[0], float('nan')):.4g}" if bad else ""
        out[name] = (len(bad), len(a), example)
    return out


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
