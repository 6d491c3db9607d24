"""Knowledge points of every baseline and distilled student, and the papers' three hypotheses.

For each diagnosed layer and every network (baseline, students, optionally the teacher) and
seed, the entropy maps of seeded training candidates are estimated at every checkpoint
(:mod:`kdscope.knowledge_points`). Per network: N_fg, N_bg and quality at the final checkpoint,
the peak distance D_mean / D_std (and D_var), and stability ρ, on its effective inputs. Per
distilled student and seed: the paired difference student − baseline on the intersection of
their effective inputs, with a hierarchical bootstrap interval (seeds, then inputs; the
background level H̄ is held at its value on the full set). A metric *holds* when its interval
excludes 0 in the expected direction (spec §6), *does not hold* when it excludes 0 in the
opposite one, else it is *inconclusive*; a hypothesis holds when all its metrics hold.

Entropy maps are cached per network, seed and layer under
``DIR/analyses/knowledge_points/<name>/seed<k>/<layer>.npz``, so a killed analysis resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from kdscope import io
from kdscope.analyses import register_analysis
from kdscope.analyses.base import Analysis
from kdscope.errors import KdscopeError
from kdscope.knowledge_points.diagnosis import (
    EXPECTED,
    HYPOTHESES,
    UNIT_MODALITIES,
    EntropyTrajectory,
    compare,
    entropy_trajectory,
    input_units,
    network_metrics,
    per_input_table,
    statistic,
)
from kdscope.knowledge_points.estimator import EstimatorSettings
from kdscope.stats import summarise

if TYPE_CHECKING:
    from kdscope.datasets.base import TensorDataset
    from kdscope.study import Group, Run, StudyResult

PAPERS_SETTING = (
    "The papers' own setting is feature mimicking at the diagnosed layer with a student of the "
    "teacher's architecture; verdicts for logit KD, Hint, CRD and other methods are kdscope "
    "extensions."
)


def metric_verdict(ci: list[float], expected: str) -> str:
    """holds / does not hold / inconclusive for an interval of student − baseline."""
    lo, hi = ci
    if (lo > 0 and expected == "higher") or (hi < 0 and expected == "lower"):
        return "holds"
    if (hi < 0 and expected == "higher") or (lo > 0 and expected == "lower"):
        return "does not hold"
    return "inconclusive"


def hypothesis_verdict(verdicts: list[str]) -> str:
    """holds if every metric holds; does not hold if any contradicts; partly supported if some
    hold; inconclusive otherwise."""
    if all(v == "holds" for v in verdicts):
        return "holds"
    if any(v == "does not hold" for v in verdicts):
        return "does not hold"
    return "partly supported" if any(v == "holds" for v in verdicts) else "inconclusive"


@register_analysis
class KnowledgePointsAnalysis(Analysis):
    name = "knowledge_points"
    title = "Knowledge points: quantity, quality, learning speed and stability"

    def __init__(
        self,
        layers: tuple[str, ...] | list[str] | None = None,
        mode: Literal["fast", "reference"] = "fast",
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
        if mode not in ("fast", "reference"):
            raise KdscopeError(f"knowledge_points: mode must be fast or reference, not {mode!r}")
        if candidates < 1 or (target is not None and target < 1):
            raise KdscopeError("knowledge_points: candidates and target must be >= 1")
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
        if study.data.train.modality not in UNIT_MODALITIES:
            return f"the {study.data.train.modality} modality has no unit map yet"
        if not self._layers(study):
            return "the study diagnoses no layer (set 'layers', e.g. [conv, fc1])"
        if not study.by_role("student"):
            return "the study has no distilled student"
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
        return ([study.teacher] if self.include_teacher else []) + groups

    def run(self, study: StudyResult) -> dict[str, Any]:
        layers = self._layers(study)
        train = study.student_data.train
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(train), generator=gen)[: self.candidates]
        inputs = train.inputs[idx]
        foreground, counted = counted_units(train, idx, self.qa_count_question)
        networks = self._networks(study)
        total = sum(
            len(run.plan.checkpoints) * len(idx) for g in networks for run in g.runs.values()
        ) * len(layers)
        bar = tqdm(
            total=total, desc="knowledge points", unit="map", leave=False, disable=self.quiet
        )
        trajs: dict[tuple[str, int, str], EntropyTrajectory] = {}
        try:
            for g in networks:
                for seed, run in sorted(g.runs.items()):
                    for layer in layers:
                        bar.set_postfix_str(f"{g.name} seed {seed} {layer}")
                        trajs[g.name, seed, layer] = self._trajectory(
                            study, g, run, layer, inputs, foreground, counted, bar.update
                        )
        finally:
            bar.close()
        result: dict[str, Any] = {
            "settings": {
                **self.options,
                **next(iter(trajs.values())).info,
                "modality": train.modality,
            },
            "candidates": [int(i) for i in idx],
            "assumptions": assumptions(study, self.grid, self.qa_count_question),
            "note": PAPERS_SETTING,
            "layers": {},
        }
        for layer in layers:
            result["layers"][layer] = {
                "networks": {
                    g.name: self._network_summary(g, {s: trajs[g.name, s, layer] for s in g.runs})
                    for g in networks
                },
                "comparisons": {
                    g.name: self._comparison(g, trajs, layer) for g in study.by_role("student")
                },
            }
        return result

    def _metric_options(self) -> dict[str, Any]:
        return {
            "b": self.b,
            "per_input_level": self.per_input_level,
            "rho_include_initial": self.rho_include_initial,
        }

    def _fingerprint(self, run: Run, layer: str) -> str:
        return json.dumps(
            {
                "plan": run.plan.fingerprint(),
                "layer": layer,
                "options": self.options,
                "settings": self.settings.__dict__,
            },
            sort_keys=True,
        )

    def _trajectory(
        self,
        study: StudyResult,
        g: Group,
        run: Run,
        layer: str,
        inputs: torch.Tensor,
        foreground: torch.Tensor,
        counted: torch.Tensor | None,
        progress: Any,
    ) -> EntropyTrajectory:
        path = cache_path(study.out_dir, g.name, run.plan.seed, layer)
        fp = self._fingerprint(run, layer)
        epochs = list(run.plan.checkpoints)
        if path.exists():
            arrays = io.load_npz(path)
            info = json.loads(str(arrays.pop("info")))
            if str(arrays.pop("fingerprint")) == fp:
                progress(len(epochs) * len(inputs))
                return EntropyTrajectory.from_arrays(arrays, info)
        models = [run.load(e) for e in epochs]
        cumulative = run.trajectory()["layers"][layer]["cumulative_distance"]
        traj = entropy_trajectory(
            models,
            layer,
            inputs,
            foreground,
            input_units(study.data.train.modality, models[-1], inputs, self.grid),
            epochs,
            [cumulative[e] for e in epochs],
            self.settings,
            target=self.target if self.effective_filter else None,
            mask_rule=self.mask_rule,
            progress=progress,
            counted=counted,
        )
        skipped = (len(inputs) - len(traj.candidates)) * len(epochs)
        progress(skipped)
        io.save_npz(
            path,
            **traj.arrays(),
            fingerprint=np.array(fp),
            info=np.array(json.dumps(traj.info)),
        )
        return traj

    def _network_summary(self, g: Group, trajs: dict[int, EntropyTrajectory]) -> dict[str, Any]:
        own = {}  # seeds with at least one effective input
        for seed, t in trajs.items():
            chosen = t.rows(t.effective_candidates(self.effective_filter))
            if len(chosen.candidates):
                own[seed] = network_metrics(chosen, **self._metric_options())
        usable = {s: per_input_table(m) for s, m in own.items()}
        out: dict[str, Any] = {
            "role": g.role,
            "method": g.method,
            "inputs": {
                str(s): {
                    "analysed": len(t.candidates),
                    "effective": int(t.effective.sum()),
                    "uncalibrated_maps": int((~t.calibrated[t.effective]).sum()),
                    "dead_feature_inputs": int((t.sigma_f <= 0).any(1).sum()),
                }
                for s, t in trajs.items()
            },
            "metrics": {},
        }
        if usable:
            out["metrics"] = {m: summarise(usable, statistic=statistic(m)) for m in EXPECTED}
            out["metrics"]["d_var"] = summarise(usable, statistic=_d_var)
            first = next(iter(trajs.values()))
            out["curves"] = {
                "epochs": first.epochs.tolist(),
                "fraction": (first.epochs / max(1, first.epochs.max())).tolist(),
                "n_fg": np.mean([own[s]["curve_n_fg"] for s in usable], 0).tolist(),
                "n_bg": np.mean([own[s]["curve_n_bg"] for s in usable], 0).tolist(),
                "quality": np.mean([own[s]["curve_quality"] for s in usable], 0).tolist(),
                "distance": np.mean([trajs[s].distance for s in usable], 0).tolist(),
            }
            out["peak_distance"] = {str(s): own[s]["d"].tolist() for s in usable}
        return out

    def _comparison(
        self, g: Group, trajs: dict[tuple[str, int, str], EntropyTrajectory], layer: str
    ) -> dict[str, Any]:
        assert g.baseline is not None
        paired, sizes = {}, {}
        for seed in sorted(g.runs):
            base = trajs.get((g.baseline, seed, layer))
            if base is None:
                continue
            rows, common = compare(
                trajs[g.name, seed, layer], base, self.effective_filter, **self._metric_options()
            )
            sizes[str(seed)] = len(common)
            if len(common):
                paired[seed] = rows
        out: dict[str, Any] = {"baseline": g.baseline, "inputs_per_seed": sizes}
        if not paired:
            out["note"] = "no input is effective for both networks"
            return out
        per_metric = {}
        for m, expected in EXPECTED.items():
            diff = summarise(paired, statistic=statistic(m, paired=True))
            per_metric[m] = {
                **diff,
                "expected": expected,
                "verdict": metric_verdict(diff["ci95"], expected),
            }
        out["metrics"] = per_metric
        out["hypotheses"] = {
            h: {
                "verdict": hypothesis_verdict([per_metric[m]["verdict"] for m in ms]),
                "metrics": list(ms),
            }
            for h, ms in HYPOTHESES.items()
        }
        return out

    # -- report ----------------------------------------------------------------------------

    def report_section(self, result: dict[str, Any], study: StudyResult) -> str:
        from kdscope.analyses.knowledge_points_report import render

        return render(result, study)


#: where each modality's unit, exclusions and scale come from (spec §2.4, §2.5, §8)
_UNITS = {
    "image": (
        "a cell of the {grid} grid, σ shared over its pixels and channels",
        "none",
        "1 after the model's normaliser; else the pixel std of the diagnosed inputs",
        "spec §2.4",
    ),
    "points": (
        "one point, σ shared over x, y, z",
        "padding points (none in fixed-size clouds)",
        "the coordinate std of the diagnosed inputs (the spec says over the training set)",
        "spec §8.1 [assumption]",
    ),
    "text": (
        "one token, σ shared over its embedding dimensions; noise added to the output of the "
        "model's embedding",
        "padding and <sep>",
        "the RMS of the diagnosed inputs' real-token embeddings at each checkpoint (the spec "
        "says the embedding table without padding; rows of words absent from the inputs "
        "never enter them)",
        "spec §8.2 [assumption]",
    ),
}


def assumptions(study: StudyResult, grid: int | None, count_question: bool) -> list[dict[str, str]]:
    """The choices behind this study's knowledge points that the papers leave open (spec §8,
    §9), one row each: what, the choice used here, and where the choice comes from."""
    data = study.student_data.train
    unit, excluded, scale, source = _UNITS[data.modality]
    if data.task == "span":
        source = "spec §8.3 [assumption]"
    side = f"{grid}×{grid}" if grid else "default (2×2-pixel cells)"
    rows = [
        ("dataset", f"{study.config.dataset.name}", "study file"),
        ("foreground", data.annotation or "the dataset's foreground masks", source),
        ("unit", unit.format(grid=side), source),
        ("excluded units", excluded, "spec §2.4"),
        ("scale s", scale, "spec §2.5"),
        (
            "models",
            f"teacher {study.config.teacher.model.label()}, students "
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
                "spec §8.3 [assumption], option qa_count_question",
            ),
            (
                "prediction diagnosed",
                "the answer span: joint logits s_i + e_j over (start, end), so cross-entropy "
                "and KD are the sums of their start and end terms (twice the spec's mean)",
                "spec §8.3",
            ),
        ]
    return [{"what": w, "choice": c, "source": src} for w, c, src in rows]


def counted_units(
    data: TensorDataset, idx: torch.Tensor, count_question: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Foreground flags of the inputs at ``idx`` and the units counted as foreground or
    background (None: all). Span (QA) inputs count only context tokens
    (spec §8.3); with ``count_question`` their question tokens count too, as foreground."""
    foreground = data.foreground[idx]
    if data.task != "span":
        return foreground, None
    positions = torch.arange(data.inputs.shape[1])[None, :]
    question = positions < data.tags["context_start"][idx].long()[:, None]
    if count_question:
        return foreground | question, None
    return foreground, ~question


def _d_var(rows: np.ndarray) -> np.ndarray:
    return np.var(rows[..., 3], axis=-1)


def cache_path(out_dir: Path, name: str, seed: int, layer: str) -> Path:
    safe = layer.replace("/", "_")
    return Path(out_dir) / "analyses" / "knowledge_points" / name / f"seed{seed}" / f"{safe}.npz"
