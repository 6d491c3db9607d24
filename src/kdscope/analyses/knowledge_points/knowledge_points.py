"""Knowledge points of every baseline and distilled student, and the papers' three hypotheses.

For each diagnosed layer and every network (baseline, students, optionally the teacher) and
seed, the entropy maps of seeded training candidates are estimated at every checkpoint
(:mod:`kdscope.knowledge_points`). Per network: N_fg, N_bg and quality at the final checkpoint,
the peak distance D_mean / D_std (and D_var), and stability ρ, on its effective inputs. Per
distilled student and seed: the paired difference student − baseline on the intersection of
their effective inputs, with an interval over seeds (:func:`kdscope.stats.summarise`). A metric
*holds* when its interval excludes 0 in the expected direction (Zhang et al. 2022), *does not hold*
when it excludes 0 in the opposite one, else it is *inconclusive*; a hypothesis holds when all its
metrics hold.

Learning speed is measured in two forms from each run's ``trajectory.json``: the per-step path
length of the layer's own weights (the verdict basis, kdscope's choice) and the per-epoch
displacement (the papers' printed formula), reported beside it. A feature-mimicking student is
diagnosed for verdicts only at the layer it mimics (the papers train one such student per
layer): at other layers its first phase moves no weight above the mimicked layer, so "learns
faster" would hold by construction; those pairs are computed and shown, never a verdict.

Entropy maps are cached per network, seed and layer under
``DIR/analyses/knowledge_points/<name>/seed<k>/<layer>.npz``, so a killed analysis resumes. A
cache is used only if its fingerprint (settings and run plan), its content digest and its
arrays' dtypes, shapes and values are what the analysis computes; otherwise the maps are
recomputed, with a warning naming a damaged file (:func:`read_cache`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from kdscope import io
from kdscope import verdicts as verdicts_
from kdscope.analyses.base import Analysis, register_analysis
from kdscope.analyses.knowledge_points.cache import cache_arrays, cache_path, read_cache
from kdscope.analyses.knowledge_points.report import render
from kdscope.analyses.study_views import pair_at_chance
from kdscope.errors import KdscopeError
from kdscope.executor import Job
from kdscope.given import unwrap_state_dict
from kdscope.knowledge_points.diagnosis import (
    COLUMNS,
    DISPLACEMENT,
    EXPECTED,
    HYPOTHESES,
    EntropyTrajectory,
    compare,
    entropy_trajectory,
    input_units,
    network_metrics,
    per_input_table,
    statistic,
)
from kdscope.knowledge_points.estimator import ESTIMATOR_VERSION, EstimatorSettings, Mode
from kdscope.knowledge_points.modalities import UNIT_MAPS
from kdscope.knowledge_points.weight_path import from_checkpoints, read_distances
from kdscope.methods.feature_mimic import FeatureMimic
from kdscope.models.hooks import resolve_layer
from kdscope.progress import progress
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.datasets.base import TensorDataset
    from kdscope.study import Group, Run, StudyResult

PAPERS_SETTING = (
    "The papers' own setting is feature mimicking at the diagnosed layer with a student of the "
    "teacher's architecture, one student per layer: a feature_mimic student gets verdicts only "
    "at the layer it mimics. Verdicts for logit KD, Hint, CRD and other methods are kdscope "
    "extensions."
)
#: What the hypothesis verdicts on learning speed use (docs/knowledge_points.md, 'Formulas').
VERDICT_DISTANCE = "per-step path length"
MODES = ("fast", "reference", "optimum")


@register_analysis
class KnowledgePointsAnalysis(Analysis):
    """Knowledge points (Cheng et al. 2020; Zhang et al. 2022) of every network at its diagnosed
    layers: the per-unit information discarding σ on the diagnosed inputs at each checkpoint,
    the foreground and background knowledge points, their ratio (quality), learning speed D_mean
    and stability ρ, and the hypotheses that distillation adds foreground points, drops background
    ones, learns faster and more stably, each a verdict over seeds (docs/knowledge_points.md).
    """

    name = "knowledge_points"
    title = "Knowledge points: quantity, quality, learning speed and stability"

    def __init__(
        self,
        layers: tuple[str, ...] | list[str] | None = None,
        mode: Mode = "fast",
        candidates: int = 64,
        target: int | None = 32,
        b: float = 0.2,
        grid: int | None = None,
        lam: float | None = None,
        projections: int = 128,
        feature_transform: Literal["relu", "identity"] = "relu",
        background_level: Literal["network", "per_input"] = "network",
        mask_rule: Literal["majority", "center_sample"] = "majority",
        effective_filter: bool = True,
        rho_include_initial: bool = True,
        include_teacher: bool = True,
        qa_count_question: bool = False,
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise KdscopeError(
                f"knowledge_points: mode must be one of {', '.join(MODES)}, not {mode!r}"
            )
        if candidates < 1 or (target is not None and target < 1):
            raise KdscopeError("knowledge_points: candidates and target must be >= 1")
        if projections < 1 or (grid is not None and grid < 1):
            raise KdscopeError("knowledge_points: projections and grid must be >= 1")
        if not b >= 0 or (lam is not None and not lam > 0):
            raise KdscopeError("knowledge_points: b must be >= 0 and lam > 0")
        self.layers = tuple(layers) if layers is not None else None
        self.settings = EstimatorSettings(
            mode=mode,
            lam=lam,
            projections=projections,
            feature_transform=feature_transform,
            seed=seed,
        )
        self.candidates, self.target, self.b, self.grid = candidates, target, b, grid
        self.per_input_level = background_level == "per_input"
        self.mask_rule, self.effective_filter = mask_rule, effective_filter
        self.rho_include_initial, self.include_teacher, self.seed = (
            rho_include_initial,
            include_teacher,
            seed,
        )
        self.qa_count_question = qa_count_question
        self.options = {
            "mode": mode,
            "candidates": candidates,
            "target_effective": target if effective_filter else None,
            "b": b,
            "grid": grid,
            "background_level": background_level,
            "mask_rule": mask_rule,
            "effective_filter": effective_filter,
            "rho_include_initial": rho_include_initial,
            "qa_count_question": qa_count_question,
            "late_fraction": 4 / 15,
            "seed": seed,
        }

    # -- applicability ---------------------------------------------------------------------

    def applies_to(self, study: StudyResult) -> str | None:
        if study.data.train.modality not in UNIT_MAPS:
            return f"the {study.data.train.modality} modality has no unit map yet"
        if not self._layers(study):
            return "the study diagnoses no layer (set 'layers', e.g. [conv, fc1])"
        if not study.by_role("student"):
            return "the study has no distilled student"
        if not study.student_data.train.has_foreground:
            return "the dataset has no object masks: foreground and background points need them"
        return None

    def _layers(self, study: StudyResult) -> tuple[str, ...]:
        layers = self.layers if self.layers is not None else study.config.layers
        missing = [x for x in layers if x not in study.config.layers]
        if missing:
            raise KdscopeError(
                f"knowledge_points: layer(s) {missing} have no logged trajectory; add them to "
                "the study's 'layers'"
            )
        return tuple(layers)

    # -- computation -----------------------------------------------------------------------

    def _networks(self, study: StudyResult) -> list[Group]:
        groups = [g for g in study.groups.values() if g.role != "teacher"]
        teacher = self.include_teacher and study.config.teacher.torchscript is None
        return ([study.teacher] if teacher else []) + groups  # TorchScript: no layer to read

    def run(self, study: StudyResult) -> dict[str, Any]:
        layers = self._layers(study)
        train = study.student_data.train
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(train), generator=gen)[: self.candidates]
        inputs = train.inputs_at(idx)
        foreground, counted = counted_units(train, idx, self.qa_count_question)
        networks = self._networks(study)
        total = sum(
            len(run.plan.checkpoints) * len(idx) for g in networks for run in g.runs.values()
        ) * len(layers)
        bar = progress(total=total, desc="knowledge points", unit="map", disable=self.quiet)
        keys = [(g, seed, layer) for g in networks for seed in sorted(g.runs) for layer in layers]
        size = {g.name: parameter_count(g, study.data.num_classes) for g in networks}
        jobs = [
            Job(
                f"knowledge points: {g.name} seed {seed} {layer}",
                _trajectory,
                (
                    self,
                    study.out_dir,
                    g.name,
                    g.runs[seed],
                    layer,
                    inputs,
                    foreground,
                    counted,
                    train.modality,
                ),
                cost=len(g.runs[seed].plan.checkpoints) * size[g.name],
            )
            for g, seed, layer in keys
        ]
        try:
            maps = study.executor.map(jobs, bar)
        finally:
            bar.close()
        trajs = {(g.name, seed, layer): t for (g, seed, layer), t in zip(keys, maps, strict=True)}
        result: dict[str, Any] = {
            "settings": {
                **self.options,
                **next(iter(trajs.values())).info,
                "modality": train.modality,
                "distance_for_verdicts": verdict_distance(networks),
            },
            "candidates": [int(i) for i in idx],
            "assumptions": assumptions(study, self.grid, self.qa_count_question, self.options),
            "note": PAPERS_SETTING,
            "layers": {},
        }
        students = study.by_role("student")
        mimics = {g.name: mimicked_layer(g) for g in students}
        chance = {g.name: pair_at_chance(study, g.name) for g in students}
        for layer in layers:
            result["layers"][layer] = {
                "networks": {
                    g.name: self._network_summary(g, {s: trajs[g.name, s, layer] for s in g.runs})
                    for g in networks
                },
                "comparisons": {
                    g.name: self._comparison(
                        g, trajs, layer, not_a_verdict(g, mimics[g.name], layer), chance[g.name]
                    )
                    for g in students
                },
            }
        return result

    def _metric_options(self) -> dict[str, Any]:
        return {
            "b": self.b,
            "per_input_level": self.per_input_level,
            "rho_include_initial": self.rho_include_initial,
        }

    def cache_fingerprint(self, run: Run, layer: str) -> str:
        """What the cached maps of ``run`` at ``layer`` depend on: a cache computed otherwise
        (or by an estimator whose numbers differ, :data:`ESTIMATOR_VERSION`) is recomputed."""
        return json.dumps(
            {
                "estimator": ESTIMATOR_VERSION,
                "plan": run.plan.fingerprint(),
                "given": run.result.get("given"),  # a given model's file: path, size, time
                "layer": layer,
                "options": self.options,
                "settings": self.settings.__dict__,
            },
            sort_keys=True,
        )

    def _network_summary(self, g: Group, trajs: dict[int, EntropyTrajectory]) -> dict[str, Any]:
        own = {}  # seeds with at least one effective input
        for seed, t in trajs.items():
            chosen = t.rows(t.effective_candidates(self.effective_filter))
            if len(chosen.candidates):
                own[seed] = network_metrics(chosen, **self._metric_options())
        usable = {s: per_input_table(m) for s, m in own.items()}
        calibrates = self.settings.mode != "optimum"  # the optimum has no calibration step
        out: dict[str, Any] = {
            "role": g.role,
            "method": g.method,
            "inputs": {
                str(s): {
                    "analysed": len(t.candidates),
                    "effective": int(t.effective.sum()),
                    "uncalibrated_maps": (
                        int((~t.calibrated[t.effective]).sum()) if calibrates else None
                    ),
                    "dead_feature_inputs": int((t.sigma_f <= 0).any(1).sum()),
                }
                for s, t in trajs.items()
            },
            "metrics": {},
        }
        if usable:
            out["metrics"] = {
                m: summarise(usable, statistic=statistic(m)) for m in (*EXPECTED, *DISPLACEMENT)
            }
            out["metrics"]["d_var"] = summarise(usable, statistic=_variance("d_mean"))
            out["metrics"]["d_epoch_var"] = summarise(usable, statistic=_variance("d_epoch_mean"))
            first = next(iter(trajs.values()))
            out["curves"] = {
                "epochs": first.epochs.tolist(),
                "fraction": (first.epochs / max(1, first.epochs.max())).tolist(),
                "n_fg": np.mean([own[s]["curve_n_fg"] for s in usable], 0).tolist(),
                "n_bg": np.mean([own[s]["curve_n_bg"] for s in usable], 0).tolist(),
                "quality": np.mean([own[s]["curve_quality"] for s in usable], 0).tolist(),
                "distance": np.mean([trajs[s].distance for s in usable], 0).tolist(),
                "displacement": np.mean([trajs[s].displacement for s in usable], 0).tolist(),
            }
            out["peak_distance"] = {str(s): own[s]["d"].tolist() for s in usable}
            out["peak_displacement"] = {str(s): own[s]["d_epoch"].tolist() for s in usable}
        return out

    def _comparison(
        self,
        g: Group,
        trajs: dict[tuple[str, int, str], EntropyTrajectory],
        layer: str,
        why_not: str | None,
        at_chance: dict[str, list[int]],
    ) -> dict[str, Any]:
        """Paired differences student − baseline at ``layer``: verdicts on the hypotheses'
        metrics (none when ``why_not`` says why the pair is shown but not a verdict; "model at
        chance" for every verdict when ``at_chance`` names seeds of the student or its baseline
        at chance level), and the per-epoch displacement metrics beside them, never a verdict."""
        assert g.baseline is not None
        paired, sizes = {}, {}
        no_series: set[str] = set()  # networks with one checkpoint: no speed, no stability
        for seed in sorted(g.runs):
            base = trajs.get((g.baseline, seed, layer))
            if base is None:
                continue
            for name, traj in ((g.name, trajs[g.name, seed, layer]), (g.baseline, base)):
                if len(traj.epochs) < 2:
                    no_series.add(name)
            rows, common = compare(
                trajs[g.name, seed, layer], base, self.effective_filter, **self._metric_options()
            )
            sizes[str(seed)] = len(common)
            if len(common):
                paired[seed] = rows
        out: dict[str, Any] = {
            "baseline": g.baseline,
            "inputs_per_seed": sizes,
            "for_verdicts": why_not is None,
        }
        if why_not is not None:
            out["not_a_verdict"] = why_not
        if not paired:
            out["note"] = "no input is effective for both networks"
            return out
        per_metric = {}
        for m, expected in {**EXPECTED, **DISPLACEMENT}.items():
            diff = summarise(paired, statistic=statistic(m, paired=True))
            per_metric[m] = {**diff, "expected": expected}
            if no_series and m in TRAJECTORY_METRICS:
                per_metric[m]["not_measured"] = not_measured(sorted(no_series))
                if why_not is None and m in EXPECTED:  # a pair shown, not a verdict, gets none
                    per_metric[m]["verdict"] = verdicts_.NOT_MEASURED
            elif why_not is None and m in EXPECTED:
                per_metric[m]["verdict"] = verdicts_.chance_guard(
                    verdicts_.directional(diff, expected), at_chance
                )
        out["metrics"] = per_metric
        if why_not is not None:
            return out
        if at_chance:
            out["at_chance"] = at_chance
        out["hypotheses"] = {
            h: {
                "verdict": verdicts_.hypothesis([per_metric[m]["verdict"] for m in ms]),
                "metrics": list(ms),
            }
            for h, ms in HYPOTHESES.items()
        }
        return out

    # -- report ----------------------------------------------------------------------------

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        return render(result, study)


def _trajectory(
    analysis: KnowledgePointsAnalysis,
    out_dir: Path,
    name: str,
    run: Run,
    layer: str,
    inputs: torch.Tensor,
    foreground: torch.Tensor,
    counted: torch.Tensor | None,
    modality: str,
    progress: Callable[[int], None],
) -> EntropyTrajectory:
    """The entropy maps of network ``name``'s ``run`` at ``layer`` over its checkpoints (a job
    of the executor): read from the cache when it holds what ``analysis`` computes, else
    computed and cached."""
    path = cache_path(out_dir, name, run.plan.seed, layer)
    fp = analysis.cache_fingerprint(run, layer)
    epochs = list(run.plan.checkpoints)
    if run.given is None:
        distance, displacement = run_distances(run, layer, epochs)
    else:
        distance, displacement = given_distances(run, layer, epochs)
    cached = read_cache(path, fp, epochs, len(inputs))
    if cached is not None:
        progress(len(epochs) * len(inputs))
        return EntropyTrajectory.from_arrays(*cached, distance, displacement)
    models = [run.load(e) for e in epochs]  # on the current device (Run.load)
    traj = entropy_trajectory(
        models,
        layer,
        inputs,
        foreground,
        input_units(modality, models[-1], inputs, analysis.grid),
        epochs,
        distance,
        analysis.settings,
        target=analysis.target if analysis.effective_filter else None,
        mask_rule=analysis.mask_rule,
        progress=progress,
        counted=counted,
        displacement=displacement,
    )
    skipped = (len(inputs) - len(traj.candidates)) * len(epochs)
    progress(skipped)
    io.save_npz(path, **cache_arrays(traj, fp))
    return traj


def parameter_count(g: Group, num_classes: int) -> int:
    """The parameters of the group's model (1 for a TorchScript one): the cost of its maps, for
    the executor's order of jobs (the costliest first)."""
    if g.model is None:
        return 1
    return sum(p.numel() for p in g.model.build(num_classes).parameters())


def assumptions(
    study: StudyResult, grid: int | None, count_question: bool, options: dict[str, Any]
) -> list[dict[str, str]]:
    """The choices behind this study's knowledge points that the papers leave open
    (docs/knowledge_points.md), one row each: what, the choice used here, and where the choice comes
    from; ``options`` are the analysis' own (its ``mode``)."""
    data = study.student_data.train
    # where each modality's unit, exclusions and scale come from (docs/knowledge_points.md)
    units = UNIT_MAPS.get(data.modality)
    unit, excluded, scale, source = units.unit, units.excluded, units.scale, units.source
    if data.task == "span":
        source = "kdscope's choice (docs/knowledge_points.md)"
    side = f"{grid}×{grid}" if grid else "default (2×2-pixel cells)"
    rows = [
        ("dataset", f"{study.config.dataset.name}", "study file"),
        ("foreground", data.annotation or "the dataset's foreground masks", source),
        ("unit", unit.format(grid=side), source),
        ("excluded units", excluded, "kdscope's choice (docs/knowledge_points.md)"),
        ("scale s", scale, "kdscope's choice (docs/knowledge_points.md)"),
        (
            "models",
            f"teacher {study.config.teacher.label()}, students "
            f"{study.config.student.model.label()}",
            source if data.modality != "image" else "study file",
        ),
    ]
    if data.task == "span":
        rows += [
            (
                "counted units",
                "context and question tokens (question tokens as foreground)"
                if count_question
                else "context tokens; question tokens are perturbed and enter the mean "
                "entropy but are not counted",
                "kdscope's choice (docs/knowledge_points.md), option qa_count_question",
            ),
            (
                "prediction diagnosed",
                "the answer span: joint logits s_i + e_j over (start, end), so cross-entropy "
                "and KD are the sums of their start and end terms",
                "kdscope's choice (docs/knowledge_points.md)",
            ),
        ]
    rows += [
        (
            "estimator mode",
            _MODES[options["mode"]],
            "kdscope (docs/knowledge_points.md, 'Estimator modes')",
        ),
        (
            "weights of the distance D",
            "the diagnosed layer's own conv / linear (or recurrent, attention) weights, "
            "concatenated; never biases nor BatchNorm / LayerNorm γ (a conv+BN layer: the conv "
            "kernel); a layer without weights (activation, pooling) takes those of the last "
            "module with weights that runs before it; trajectory.json lists them",
            "kdscope's choice (docs/knowledge_points.md)",
        ),
        (
            "distance D",
            f"{VERDICT_DISTANCE} Σ_steps ‖ΔW‖ / ‖W₀‖ for the verdicts; the per-epoch "
            "displacement Σ_e ‖W_e − W_(e−1)‖ / ‖W₀‖ is reported beside it (D_epoch), same "
            "peak checkpoint",
            "kdscope's choice (verdicts); the papers' formula (D_epoch); docs/knowledge_points.md",
        ),
        (
            "feature-mimicking students",
            "diagnosed for verdicts only at the layer they mimic; at other layers their "
            "numbers are shown, not a verdict",
            "the papers (one student per layer)",
        ),
    ]
    return [{"what": w, "choice": c, "source": src} for w, c, src in rows]


_MODES = {
    "fast": "fast: the calibrated snapshot of the reference dynamics, in expectation under "
    "the layer's linearisation",
    "reference": "reference: the authors' recipe (Monte Carlo SGD on σ, calibrated snapshot)",
    "optimum": "optimum (ablation): the minimiser of the relaxed loss at fixed λ, no "
    "calibration to the target entropy; a different estimand from the papers' calibrated "
    "snapshot, not comparable with fast or reference numbers",
}


#: the metrics measured along a training trajectory (learning speed and stability)
TRAJECTORY_METRICS = frozenset(
    (*HYPOTHESES["learning_speed"], *HYPOTHESES["stability"], *DISPLACEMENT)
)


def not_measured(networks: list[str]) -> str:
    """Why learning speed and stability are not measured for a pair including ``networks``."""
    return (
        f"{', '.join(networks)}: one checkpoint only (a given model without a checkpoint "
        "series): learning speed and stability need a series"
    )


def mimicked_layer(g: Group) -> str | None:
    """The layer a feature-mimicking student mimics (its method's ``layer`` parameter, or the
    method's default), None for any other method."""
    if g.method != "feature_mimic":
        return None
    return FeatureMimic(**g.method_params).layer


def not_a_verdict(g: Group, mimics: str | None, layer: str) -> str | None:
    """Why the pair (student ``g``, ``layer``) is shown but kept out of the verdicts, or None
    when it counts: a student that mimics another layer than ``layer`` (names compared as the
    module paths they resolve to on the student's model, so a role such as ``last_conv``
    matches the layer ``conv``)."""
    if mimics is None:
        return None
    model = next(iter(g.runs.values())).load()
    if resolve_layer(model, mimics) == resolve_layer(model, layer):
        return None
    return f"mimics {mimics}; diagnosed at {layer}: shown, not a verdict"


def run_distances(run: Run, layer: str, epochs: list[int]) -> tuple[list[float], list[float]]:
    """The layer's cumulative normalised per-step path length and per-epoch displacement at
    ``epochs``, from the run's ``trajectory.json``. A run trained by an older kdscope (no
    displacement logged, and D measured on every weight inside the layer) is an error that
    says how to retrain it."""
    file = run.dir / "trajectory.json"
    logged = run.trajectory()["layers"].get(layer)
    if logged is None:
        raise KdscopeError(f"{file} has no trajectory of layer {layer!r}")
    if "cumulative_displacement" not in logged or "weights" not in logged:
        raise KdscopeError(
            f"{run.plan.name} seed {run.plan.seed}: {file} was written by an older kdscope (no "
            f"per-epoch displacement of layer {layer!r}, and its distance counted normalisation "
            f"weights); delete {run.dir} and run the study again to retrain it"
        )
    step, epoch = logged["cumulative_distance"], logged["cumulative_displacement"]
    return [step[e] for e in epochs], [epoch[e] for e in epochs]


def verdict_distance(networks: list[Group]) -> str:
    """The distance learning speed is measured with: the per-step path length, except for
    given models with a checkpoint series and no logged path length (named)."""
    bounded = sorted(
        g.name
        for g in networks
        for run in g.runs.values()
        if run.given is not None and len(run.given.series) > 1 and run.given.path_lengths is None
    )
    if not bounded:
        return VERDICT_DISTANCE
    return (
        f"{VERDICT_DISTANCE}; for the given {', '.join(dict.fromkeys(bounded))}: the "
        "displacement between their checkpoints (no path length logged; a lower bound)"
    )


def given_distances(run: Run, layer: str, epochs: list[int]) -> tuple[list[float], list[float]]:
    """The distances of a given model's layer at ``epochs``: from the ``path_lengths`` its
    training logged (:class:`~kdscope.knowledge_points.WeightPathLogger`, under the study's
    layer name); else, from its checkpoint series, the displacement between consecutive
    checkpoints (:func:`~kdscope.knowledge_points.from_checkpoints`, a lower bound of the path
    length) for both; NaN without a series (one checkpoint: no learning speed)."""
    given = run.given
    assert given is not None
    if given.path_lengths is not None:
        return read_distances(given.path_lengths, layer, epochs)
    if len(given.series) < 2:
        return [math.nan] * len(epochs), [math.nan] * len(epochs)
    model = run.load()
    series = [unwrap_state_dict(io.load_torch(path), path) for _, path in given.series]
    moved = from_checkpoints(series, [resolve_layer(model, layer)], model)
    cumulative = next(iter(moved.values()))["cumulative_displacement"]
    at = dict(zip(given.epochs, cumulative, strict=True))
    return [at[e] for e in epochs], [at[e] for e in epochs]


def counted_units(
    data: TensorDataset, idx: torch.Tensor, count_question: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Foreground flags of the inputs at ``idx`` and the units counted as foreground or
    background (None: all). Span (QA) inputs count only context tokens
    (docs/knowledge_points.md); with ``count_question`` their question tokens count too, as
    foreground."""
    foreground = data.foreground[idx]
    if data.task != "span":
        return foreground, None
    positions = torch.arange(data.inputs.shape[1])[None, :]
    question = positions < data.tags["context_start"][idx].long()[:, None]
    if count_question:
        return foreground | question, None
    return foreground, ~question


def _variance(metric: str) -> Callable[[np.ndarray], np.ndarray]:
    """Population variance over inputs of the metric's column (D_var, D_epoch_var)."""
    col = COLUMNS[metric]

    def var(rows: np.ndarray) -> np.ndarray:
        return np.var(rows[..., col], axis=-1)

    return var
