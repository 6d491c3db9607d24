"""Train a study: the teacher once, the baselines and every distilled student over all seeds
(:func:`train_study`). The analyses and ``summary.json`` / ``report.html`` come on top of it, in
:func:`kdscope.pipeline.run_study`.

Output layout (stable; other tools may read it)::

    DIR/study.yaml                          the resolved configuration
    DIR/models/<name>/seed<k>/...           one run directory per model and seed (see trainer)
    DIR/weight_search/...                   the distillation-weight search, when configured
    DIR/summary.json                        accuracy of every model and seed, one entry per analysis
    DIR/report.html                         self-contained report (figures embedded)
    DIR/.lock                               held while a study runs in DIR (one process at a time)
    DIR/study.previous.yaml                 the study DIR held before it grew into this one

Nothing is written outside DIR: every run folder is checked to lie inside it, and a finished run
is reused only if it was trained with the plan now asked of it. A study folder grows into a study
with other seeds, students or analyses (:func:`_grow`): its unchanged runs are reused, the others
trained; a change of the data or the teacher, or of a run's plan, is refused before anything is
written (docs/outputs.md, 'Growing a study').
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import Tensor, nn

from kdscope import device, io
from kdscope.config import (
    Given,
    ModelConfig,
    StudentConfig,
    StudyConfig,
    Subset,
    TrainConfig,
    parse_study,
)
from kdscope.datasets import DataSplits, TensorDataset
from kdscope.datasets import build as build_dataset
from kdscope.errors import KdscopeError
from kdscope.evaluation import predict_logits
from kdscope.executor import Executor, Job, LocalExecutor, pinned_threads
from kdscope.given import adopt, load_given, load_state
from kdscope.methods import METHODS
from kdscope.models import resolve_layer
from kdscope.progress import progress
from kdscope.runs import check_inside, check_plans, resume_run, writing
from kdscope.trainer import (
    Progress,
    RunPlan,
    check_model_io,
    describe_changes,
    load_checkpoint,
    read_metrics,
    read_trajectory,
    run_steps,
)
from kdscope.trajectory import checkpoint_epochs
from kdscope.weight_search import WeightSearchRun, search_data

Role = Literal["teacher", "baseline", "student"]
#: the study's execution settings: where its jobs run, not what they compute
EXECUTION_FIELDS = ("executor", "device")
LOCK_FILE = ".lock"
#: the study a grown folder held before (docs/outputs.md, 'Growing a study')
PREVIOUS_FILE = "study.previous.yaml"
#: the fields that define the data and the teacher, shared by every run of a study folder: a
#: folder grows into a study that differs elsewhere only
SHARED_FIELDS = (
    "dataset",
    "teacher",
    "teacher_seed",
    "teacher_subset",
    "student_subset",
    "transfer_size",
    "weight_search",
)


@dataclass
class Run:
    """One model (group and seed) in a study directory: trained by kdscope, or ``given``
    (trained elsewhere; :mod:`kdscope.given`), which has its final model only."""

    plan: RunPlan
    dir: Path
    num_classes: int
    result: dict[str, Any] = field(default_factory=dict)
    given: Given | None = None

    def checkpoint_path(self, epoch: int) -> Path:
        return self.dir / "checkpoints" / f"epoch_{epoch:03d}.pt"

    def load(self, epoch: int | None = None) -> nn.Module:
        """The model after ``epoch`` epochs (default: the final one), in eval mode, on this
        process's current device (:func:`kdscope.device.current`): the analyses compute on it
        (their helpers move inputs to the model's device and return results on the CPU)."""
        epoch = self.plan.train.epochs if epoch is None else epoch
        if epoch not in self.plan.checkpoints:
            raise KdscopeError(
                f"{self.plan.name} seed {self.plan.seed}: no checkpoint at epoch {epoch}"
            )
        if self.given is not None:
            model = load_given(self.given, self.plan.model, self.num_classes, epoch)
        else:
            model = load_checkpoint(self.plan, self.num_classes, self.checkpoint_path(epoch))
        return model.to(device.current())

    def metrics(self) -> list[dict[str, str]]:
        """The run's per-epoch rows, checked (:func:`kdscope.trainer.read_metrics`)."""
        self._trained("per-epoch metrics")
        return read_metrics(self.dir / "metrics.csv", self.plan.train.epochs)

    def trajectory(self) -> dict[str, Any]:
        """The run's checked ``trajectory.json`` (:func:`kdscope.trainer.read_trajectory`)."""
        self._trained("training trajectory")
        return read_trajectory(self.dir / "trajectory.json", self.plan)

    def _trained(self, what: str) -> None:
        """A user error naming ``what`` a given model lacks."""
        if self.given is not None:
            raise KdscopeError(
                f"{self.plan.name} seed {self.plan.seed} is a given model ({self.given.path}): "
                f"it has no {what}"
            )


@dataclass
class Group:
    """The runs of one model kind: the teacher, a baseline, or a distilled student's seeds."""

    name: str
    role: Role
    method: str
    model: ModelConfig | None  # None: a TorchScript teacher
    train: TrainConfig
    method_params: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None
    runs: dict[int, Run] = field(default_factory=dict)
    given: dict[int, Given] = field(default_factory=dict)

    @property
    def is_given(self) -> bool:
        """Whether the group's models were trained elsewhere (:mod:`kdscope.given`)."""
        return bool(self.given)


@dataclass
class StudyResult:
    """A study's configuration, data and trained models: what every analysis receives.

    ``data`` is the teacher's data (the whole dataset unless ``teacher_subset`` is set; always the
    whole test split); ``student_data`` the split the baselines and students trained on (fewer
    training examples with ``student_subset`` or ``transfer_size``).
    ``results`` holds the results of the analyses run so far, by name, for analyses that build
    on others (their ``requires``); ``weight_search`` the distillation-weight search's choice
    (:mod:`kdscope.weight_search`), when the study has one.
    """

    config: StudyConfig
    out_dir: Path
    data: DataSplits
    groups: dict[str, Group]
    student_data: DataSplits
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    weight_search: dict[str, Any] | None = None
    executor: Executor = field(default_factory=LocalExecutor, repr=False)
    _logits: dict[tuple[str, int, str, int | None], Tensor] = field(
        default_factory=dict, repr=False
    )

    @property
    def teacher(self) -> Group:
        return self.groups["teacher"]

    def by_role(self, role: Role) -> list[Group]:
        return [g for g in self.groups.values() if g.role == role]

    def given_groups(self) -> list[str]:
        """The names of the groups whose models were given, not trained."""
        return [g.name for g in self.groups.values() if g.is_given]

    @property
    def teacher_model(self) -> nn.Module:
        """The teacher (after its last epoch), loaded once (:func:`load_teacher`)."""
        return load_teacher(self.teacher.runs[self.config.teacher_seed])

    def logits(
        self,
        group: str,
        seed: int,
        split: Literal["train", "test"] = "test",
        epoch: int | None = None,
    ) -> Tensor:
        """Eval-mode logits of a model (default: after its last epoch) on the test split or on
        the data it was distilled on (``student_data.train``, no augmentation), computed once
        and kept: several analyses read the same predictions."""
        key = (group, seed, split, epoch)
        if key not in self._logits:
            data = self.student_data.train if split == "train" else self.data.test
            self._logits[key] = predict_logits(self.groups[group].runs[seed].load(epoch), data)
        return self._logits[key]


def plan_groups(cfg: StudyConfig) -> dict[str, Group]:
    """The model groups of a study: teacher, one baseline per distinct (model, recipe) of the
    students, and the distilled students (each pointing at its baseline). Given models (the
    teacher's ``checkpoint`` / ``torchscript``, ``baseline``, a student's ``given``) are
    recorded per seed in :attr:`Group.given`."""
    teacher = cfg.teacher
    groups = {"teacher": Group("teacher", "teacher", "ce", teacher.model, teacher.train)}
    if (given := teacher.given_model()) is not None:
        groups["teacher"].given = {cfg.teacher_seed: given}
    baselines: dict[str, str] = {}
    students = []
    for s in cfg.students:
        model, train = s.model or cfg.student.model, cfg.student_train(s)
        key = model.model_dump_json() + train.model_dump_json()
        if key not in baselines:
            name = "baseline" if not baselines else f"baseline-{s.label}"
            baselines[key] = name
            groups[name] = Group(name, "baseline", "ce", model, train)
        students.append(Group(s.label, "student", s.method, model, train, s.params, baselines[key]))
    groups.update((g.name, g) for g in students)
    for name, given in cfg.given_runs().items():
        groups[name].given = given
    return groups


def _plan(cfg: StudyConfig, g: Group, seed: int) -> RunPlan:
    """The run of group ``g`` and ``seed``. A given model has the epochs of its checkpoint
    series (its last one the end of training), or its final checkpoint only."""
    train, given = g.train, g.given.get(seed)
    if given is not None and given.series:
        train = train.model_copy(update={"epochs": given.epochs[-1]})
        checkpoints = given.epochs
    elif given is not None:
        checkpoints = (train.epochs,)
    else:
        checkpoints = tuple(checkpoint_epochs(cfg.checkpoints, train.epochs))
    return RunPlan(
        name=g.name,
        seed=seed,
        model=g.model,
        method=g.method,
        method_params=g.method_params,
        train=train,
        checkpoints=checkpoints,
        layers=cfg.layers,
    )


def _validate_models(cfg: StudyConfig, data: DataSplits, groups: dict[str, Group]) -> None:
    """Build every model once so bad model parameters or diagnosed layers fail before training."""
    seen: set[str] = set()
    for g in groups.values():
        if g.model is None:  # a TorchScript teacher: checked by _validate_given
            continue
        key = g.model.model_dump_json()
        if key in seen:
            continue
        seen.add(key)
        channels, wanted = data.train.channels, g.model.in_channels()
        if channels is not None and wanted is not None and channels != wanted:
            raise KdscopeError(
                f"model {g.model.label(params=False)!r} takes {wanted} input channels, dataset "
                f"{cfg.dataset.name!r} has {channels}; set in_channels: {channels} in its model"
            )
        model = g.model.build(data.num_classes)
        check_model_io(
            model,
            data.train.inputs_at(slice(0, 2)),
            data.num_classes,
            f"model {g.model.label(params=False)!r}",
        )
        for layer in (*cfg.layers, *(g.model.roles or {}).values()):
            resolve_layer(model, layer)
    _validate_given(cfg, data, groups)


def _validate_given(cfg: StudyConfig, data: DataSplits, groups: dict[str, Group]) -> None:
    """Load every given model once (:mod:`kdscope.given`) so that a file that does not hold the
    model, does not fit its architecture, or cannot process the data fails before anything is
    written."""
    example = data.train.batch(torch.arange(min(2, len(data.train)))).input
    for g in groups.values():
        for given in g.given.values():
            model = load_given(given, g.model, data.num_classes)
            check_model_io(model, example, data.num_classes, f"given model {given.path}")
            for _epoch, path in given.series[:-1]:  # the rest of its checkpoint series
                load_state(model, path, str(g.model.label() if g.model else g.name))
            if given.kind == "checkpoint":  # TorchScript layers cannot be read (models.hooks)
                for layer in cfg.layers:
                    resolve_layer(model, layer)


def bind_vocabulary(cfg: StudyConfig, data: DataSplits) -> StudyConfig:
    """The study with the dataset's vocabulary size given to every model that takes a
    ``vocab_size`` and was not given one (text models: the study file need not know how many
    words the training split holds). Other studies are returned unchanged."""
    size = len(data.train.vocab)
    if not size:
        return cfg
    raw = cfg.model_dump(mode="json")
    models = [raw["teacher"].get("model"), raw["student"]["model"]]
    models += [s["model"] for s in raw["students"] if s.get("model")]
    for m in filter(None, models):
        if ModelConfig.model_validate(m).takes_vocabulary():
            m["vocab_size"] = size
    return StudyConfig.model_validate(raw)


def _out_path(out_dir: str | Path) -> Path:
    """The output folder as a path; an empty name (which would mean the current folder) is a
    user error."""
    if not str(out_dir).strip():
        raise KdscopeError("--out is empty; name the folder to write the study into")
    return Path(out_dir)


def _make_out_dir(out_dir: Path) -> None:
    """Create the output folder and its parents; a user error if it is a file."""
    if out_dir.exists() and not out_dir.is_dir():
        raise KdscopeError(f"{out_dir} is a file, not a folder; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)


def _prepare_out_dir(cfg: StudyConfig, out_dir: Path, runs: list[tuple[Path, RunPlan]]) -> None:
    """Write ``study.yaml`` into the (locked) output folder. A folder that holds a study grows
    into this one (:func:`_grow`; ``runs``: the run folders and plans to check first); a user
    error if it holds other files."""
    resolved = cfg.to_yaml()
    existing = out_dir / "study.yaml"
    if existing.exists():
        _grow(cfg, out_dir, runs)
        return
    if any(p.name != LOCK_FILE for p in out_dir.iterdir()):
        raise KdscopeError(
            f"{out_dir} is not empty and holds no kdscope study; choose another --out"
        )
    io.write_text(existing, resolved)


def _grow(cfg: StudyConfig, out_dir: Path, runs: list[tuple[Path, RunPlan]]) -> None:
    """Make the study folder ``out_dir`` one of ``cfg`` (docs/outputs.md, 'Growing a study'). A
    user error, before anything is written, if its study differs in a field every run shares
    (:data:`SHARED_FIELDS`) or a folder of ``runs`` holds a run of another plan
    (:func:`kdscope.runs.check_plans`). Else ``study.yaml`` becomes ``cfg``, the previous one
    kept as ``study.previous.yaml``, and the runs the study no longer uses are named in a note."""
    path, resolved = out_dir / "study.yaml", cfg.to_yaml()
    previous = _read_text(path, out_dir)
    if previous != resolved:
        old = _read_study(previous, path, out_dir)
        change = _shared_change(old, cfg)
        if change is not None:
            raise KdscopeError(
                f"{out_dir} holds study {old.name!r} with another {change}; "
                f"choose another --out or remove {out_dir}"
            )
    check_plans(out_dir, runs)
    if previous != resolved:
        if _science(previous) != _science(resolved):
            io.write_text(out_dir / PREVIOUS_FILE, previous)
        io.write_text(path, resolved)
    _note_unused(cfg, out_dir)


def _science(text: str) -> Any:  # noqa: ANN401  (a YAML mapping)
    """A study file's settings but those of its execution (:data:`EXECUTION_FIELDS`), which
    change no result: a folder resumed on another executor keeps no previous study."""
    data = yaml.safe_load(text)
    return {k: v for k, v in data.items() if k not in EXECUTION_FIELDS}


def _read_text(path: Path, out_dir: Path) -> str:
    """The text of a study folder's ``study.yaml``; a user error if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _damaged(path, out_dir, e) from None


def _read_study(text: str, path: Path, out_dir: Path) -> StudyConfig:
    """The study a folder's ``study.yaml`` (``text``, read from ``path``) holds; a one-line user
    error if it is damaged or no longer a valid study."""
    try:
        return parse_study(yaml.safe_load(text), str(path))
    except (yaml.YAMLError, KdscopeError) as e:
        raise _damaged(path, out_dir, e) from None


def _damaged(path: Path, out_dir: Path, e: Exception) -> KdscopeError:
    """The user error for a study folder whose ``study.yaml`` cannot be read as a study."""
    cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return KdscopeError(
        f"{path} cannot be read as a study ({cause}); choose another --out or remove {out_dir}"
    )


def _shared_change(old: StudyConfig, new: StudyConfig) -> str | None:
    """The first field shared by every run (:data:`SHARED_FIELDS`) in which the studies
    differ, with its differing settings (``dataset (n_train: 256 → 512)``); None if none."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    for key in SHARED_FIELDS:
        if a.get(key) != b.get(key):
            return f"{key} ({_changes(a.get(key), b.get(key))})"
    return None


def _changes(old: Any, new: Any) -> str:
    """Up to three differing leaf settings of two values, ``key: old → new``; the values
    themselves when either is not a mapping."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return f"{_shown(old)} → {_shown(new)}"
    return describe_changes(old, new, lambda k, a, b: f"{k}: {_shown(a)} → {_shown(b)}", ", ")


def _shown(value: Any) -> str:
    """A setting as the messages show it: ``unset`` when absent, strings bare, else JSON."""
    if value is ...:
        return "unset"
    return value if isinstance(value, str) else json.dumps(value)


def _note_unused(cfg: StudyConfig, out_dir: Path) -> None:
    """Name on one stderr line the run folders of ``out_dir`` the study does not use (models
    or seeds a grown study dropped): they stay on disk, untouched."""
    used = {run_folder(out_dir, g.name, seed) for g, seed in iter_runs(cfg, plan_groups(cfg))}
    models = out_dir / "models"
    found = sorted(p for p in models.glob("*/*") if p.is_dir()) if models.is_dir() else []
    unused = [p.relative_to(out_dir).as_posix() for p in found if p not in used]
    if unused:
        print(f"kdscope: note: kept, not used: {', '.join(unused)}", file=sys.stderr)


def _known_plans(
    out_dir: Path, jobs: list[tuple[Group, int, RunPlan]], search: WeightSearchRun | None
) -> list[tuple[Path, RunPlan]]:
    """The runs (folder, plan) whose plans are known before anything trains, for
    :func:`kdscope.runs.check_plans`: the weight search's runs and the study's, but given
    models (adopted anew when they change) and the students whose weights the search chooses
    (their search runs, checked, hold their other settings)."""
    chosen: set[str] = set()
    if search is not None:
        chosen = {*search.study.config.searched_students(), *search.settings.share}
    runs = [
        (run_folder(out_dir, g.name, seed), plan)
        for g, seed, plan in jobs
        if seed not in g.given and g.name not in chosen
    ]
    return [(j.run_dir, j.plan) for j in search.jobs] + runs if search else runs


@contextmanager
def _study_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.lock`` (an exclusive ``flock``, this process's id written in) while a study
    runs in ``out_dir``, so that two processes never write one study folder. The system releases
    the lock of a process killed outright, so a stale file blocks nothing; the file is removed
    on exit."""
    path = out_dir / LOCK_FILE
    fd = _lock(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _lock(path: Path) -> int:
    """An open descriptor of ``path`` that holds its lock; a user error naming the holder's
    process id if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_lock(fd, path)
        except BaseException:
            os.close(fd)
            raise
        if locked:
            return fd
        os.close(fd)  # the holder removed the file as it finished: lock the new one


def _try_lock(fd: int, path: Path) -> bool:
    """Lock ``fd``, open on ``path``, and write this process's id into it; False if ``path`` no
    longer names the locked file (its previous holder removed it meanwhile)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        raise KdscopeError(
            f"{path.parent} is in use by another kdscope process (pid {holder})"
        ) from None
    try:
        if not os.path.samestat(os.fstat(fd), os.stat(path)):
            return False
    except FileNotFoundError:
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return True


def run_folder(out_dir: Path, group: str, seed: int) -> Path:
    """The run folder of a study's model group and seed."""
    return out_dir / "models" / group / f"seed{seed}"


def select_subset(data: TensorDataset, subset: Subset, role: str) -> TensorDataset:
    """The examples of ``data`` that ``subset`` keeps, in dataset order: those whose tag value is
    in ``keep``, or the first ``counts[v]`` of every tag value v."""
    if subset.tag not in data.tags:
        known = ", ".join(sorted(data.tags)) or "none"
        raise KdscopeError(
            f"{role}_subset: the dataset has no tag {subset.tag!r} (its tags: {known})"
        )
    values = data.tags[subset.tag].long()
    if subset.keep is not None:
        index = torch.isin(values, torch.tensor(subset.keep)).nonzero().flatten()
    else:
        parts = []
        for v, count in enumerate(subset.counts or ()):
            rows = (values == v).nonzero().flatten()
            if count > len(rows):
                raise KdscopeError(
                    f"{role}_subset: {count} examples asked of {subset.tag} {v}, the training "
                    f"data has {len(rows)}"
                )
            parts.append(rows[:count])
        index = torch.cat(parts).sort().values
    if len(index) < 2:
        raise KdscopeError(f"{role}_subset keeps {len(index)} training examples; it needs 2")
    return data.subset(index)


def teacher_data(cfg: StudyConfig, data: DataSplits) -> DataSplits:
    """The teacher's data: the training examples ``teacher_subset`` keeps (all by default) and
    the whole test split."""
    if cfg.teacher_subset is None:
        return data
    return DataSplits(select_subset(data.train, cfg.teacher_subset, "teacher"), data.test)


def transfer_data(cfg: StudyConfig, data: DataSplits) -> DataSplits:
    """The data baselines and students train on: the training examples ``student_subset`` keeps,
    then the first ``transfer_size`` of them (the generated datasets are already shuffled), or
    all of them; the same test split."""
    train = data.train
    if cfg.student_subset is not None:
        train = select_subset(train, cfg.student_subset, "student")
    if cfg.transfer_size is not None:
        if cfg.transfer_size > len(train):
            raise KdscopeError(
                f"transfer_size {cfg.transfer_size} exceeds the {len(train)} training examples "
                "the students may use"
            )
        train = train.subset(torch.arange(cfg.transfer_size))
    return DataSplits(train, data.test)


def iter_runs(cfg: StudyConfig, groups: dict[str, Group]) -> Iterator[tuple[Group, int]]:
    """(group, seed) in training order: the teacher first, then baselines, then students."""
    yield groups["teacher"], cfg.teacher_seed
    for role in ("baseline", "student"):
        for g in groups.values():
            if g.role == role:
                for seed in cfg.seeds:
                    yield g, seed


@dataclass(frozen=True)
class Variant:
    """A model an analysis trains beyond the study's own (a teacher zoo, a control teacher and
    its students): ``spec`` (its label, method and parameters), recipe ``train``, ``seed``,
    folder ``run_dir`` and ``model`` (default the spec's, else the students'). With no
    ``teacher`` it is teacher-like, trained on the teacher's data; else a student of that run
    (the study's teacher or another variant), trained on the students' data."""

    spec: StudentConfig
    train: TrainConfig
    seed: int
    run_dir: Path
    teacher: Run | None = None
    model: ModelConfig | None = None


def train_variants(study: StudyResult, variants: list[Variant], quiet: bool = False) -> list[Run]:
    """Train (or resume, or reuse) ``variants`` on the study's executor; their runs (final
    checkpoint only), whose :meth:`Run.load` gives each model in eval mode."""
    jobs, steps = [], 0
    for v in variants:
        plan = RunPlan(
            name=v.spec.label,
            seed=v.seed,
            model=v.model or v.spec.model or study.config.student.model,
            method=v.spec.method,
            method_params=v.spec.params,
            train=v.train,
            checkpoints=(v.train.epochs,),
        )
        role: Role = "teacher" if v.teacher is None else "student"
        jobs.append(training_job(study, role, plan, v.run_dir, teacher=v.teacher))
        steps += run_steps(plan, len(_role_data(study, role).train))
    bar = progress(total=steps, unit="step", disable=quiet)
    try:
        return study.executor.map(jobs, bar)
    finally:
        bar.close()


@dataclass(frozen=True)
class StudyData:
    """What a study's jobs read besides their plans: the study (its vocabulary bound), the
    teacher's data and the baselines' and students' data (:func:`study_data`)."""

    config: StudyConfig
    full: DataSplits
    teacher: DataSplits
    students: DataSplits


#: the studies' data built in this process (the whole dataset, the teacher's and the
#: students'), by :func:`_data_key` (a worker process builds each once, for all the jobs of a
#: study it runs)
_DATA: dict[str, tuple[DataSplits, DataSplits, DataSplits]] = {}
#: the teachers loaded in this process, by run folder and plan
_TEACHERS: dict[str, nn.Module] = {}


def _data_key(cfg: StudyConfig) -> str:
    """What determines a study's data: its dataset, subsets and transfer size."""
    return json.dumps(
        [cfg.model_dump(mode="json").get(k) for k in SHARED_FIELDS if k != "teacher"],
        sort_keys=True,
    )


def study_data(cfg: StudyConfig) -> StudyData:
    """The data of study ``cfg`` (:class:`StudyData`), built once per process."""
    key = _data_key(cfg)
    if key not in _DATA:
        full = build_dataset(cfg.dataset.name, **cfg.dataset.params)
        _DATA.clear()  # one study's data at a time
        _DATA[key] = (full, teacher_data(cfg, full), transfer_data(cfg, full))
    full, teacher, students = _DATA[key]
    return StudyData(bind_vocabulary(cfg, full), full, teacher, students)


def load_teacher(run: Run) -> nn.Module:
    """The teacher of a study, from its run (final epoch), loaded once per process (again
    when its file or the current device changes), on the current device (:meth:`Run.load`)."""
    path = run.given.path if run.given is not None else run.checkpoint_path(run.plan.train.epochs)
    stat = path.stat()
    key = json.dumps(
        [
            str(path.resolve()),
            stat.st_mtime_ns,
            stat.st_size,
            run.plan.fingerprint(),
            str(device.current()),
        ],
        sort_keys=True,
    )
    if key not in _TEACHERS:
        _TEACHERS.clear()
        _TEACHERS[key] = run.load()
    return _TEACHERS[key]


@dataclass(frozen=True)
class TrainJob:
    """One run of a study to train, resume or adopt (a picklable :class:`~kdscope.executor.Job`
    argument): its group's role, plan and folder, the given model it adopts if any, and the
    teacher's run for a baseline or student."""

    config: StudyConfig
    out_dir: Path
    role: Role | Literal["search"]
    plan: RunPlan
    run_dir: Path
    given: Given | None = None
    teacher: Run | None = None


def _role_data(study: StudyResult, role: Role | Literal["search"]) -> DataSplits:
    """The data a run of ``role`` trains on (a search run: a part of the students')."""
    return study.data if role == "teacher" else study.student_data


def training_job(
    study: StudyResult,
    role: Role | Literal["search"],
    plan: RunPlan,
    run_dir: Path,
    given: Given | None = None,
    teacher: Run | None = None,
) -> Job[Run]:
    """The executor's job that trains (or resumes, or adopts) ``plan`` in ``run_dir``
    (:func:`train_job`), its cost the examples it sees (the longest jobs start first)."""
    spec = TrainJob(study.config, study.out_dir, role, plan, run_dir, given, teacher)
    data = _role_data(study, role)
    cost = plan.train.epochs * (len(data.train) + len(data.test))
    return Job(f"{plan.name} seed {plan.seed}", train_job, (spec,), cost=cost)


def train_job(job: TrainJob, progress: Progress) -> Run:
    """Train (or resume, or adopt) the run of ``job``; its :class:`Run`. Runs in any process:
    it reads the study's data and its teacher from files (:func:`study_data`). A weight-search
    run (role ``search``) trains on the search's split (:func:`search_data`)."""
    data = study_data(job.config)
    splits = data.teacher if job.role == "teacher" else data.students
    if job.role == "search":
        assert job.config.weight_search is not None
        splits = search_data(splits, job.config.weight_search)
    plan, run_dir = job.plan, job.run_dir
    if job.given is not None:
        res = adopt(job.out_dir, plan, job.given, splits, run_dir)
        return Run(plan, run_dir, splits.num_classes, res, job.given)
    teacher = None if job.teacher is None else load_teacher(job.teacher)
    cache = job.config.cache_teacher
    res = resume_run(job.out_dir, plan, splits, run_dir, teacher, cache, progress)
    return Run(plan, run_dir, splits.num_classes, res)


def _train_models(
    result: StudyResult,
    jobs: list[tuple[Group, int, RunPlan]],
    search: WeightSearchRun | None,
    quiet: bool,
) -> None:
    """Train (or resume, or load) the study's runs on the study's executor: the teacher with
    the baselines (which need no teacher), then the weight search if any (it sets the
    students' weights), then the students."""
    cfg, out_dir = result.config, result.out_dir
    total = sum(
        run_steps(p, len(_role_data(result, g.role).train))
        for g, seed, p in jobs
        if seed not in g.given
    ) + (search.steps() if search else 0)
    bar = progress(total=total, unit="step", disable=quiet)

    def job(
        role: Role | Literal["search"], plan: RunPlan, run_dir: Path, given: Given | None
    ) -> Job[Run]:
        needs = role != "teacher" and METHODS.get(plan.method).needs_teacher
        teacher = result.teacher.runs[cfg.teacher_seed] if needs else None
        return training_job(result, role, plan, run_dir, given, teacher)

    def run(items: list[tuple[Group, int, RunPlan]]) -> None:
        specs = [
            job(g.role, plan, run_folder(out_dir, g.name, seed), g.given.get(seed))
            for g, seed, plan in items
        ]
        for (g, seed, _), trained in zip(items, result.executor.map(specs, bar), strict=True):
            g.runs[seed] = trained

    first = [j for j in jobs if j[0].role in ("teacher", "baseline")]
    rest = [j for j in jobs if j[0].role == "student"]
    try:
        run(first)  # every student needs the teacher
        if search is not None:  # choose the students' weights before they train
            specs = [job("search", j.plan, j.run_dir, None) for j in search.jobs]
            runs = result.executor.map(specs, bar)
            result.weight_search = search.finish([r.result for r in runs])
            rest = [(g, seed, _plan(cfg, g, seed)) for g, seed, _ in rest]
        run(rest)
    finally:
        bar.close()


def train_study(
    cfg: StudyConfig,
    out_dir: str | Path,
    quiet: bool = False,
    executor: Executor | None = None,
    teacher_only: bool = False,
    then: Callable[[StudyResult], None] | None = None,
) -> StudyResult:
    """Train (or resume) every model of the study (with ``teacher_only`` only the teacher, to
    check it before distilling), then call ``then`` on the result, still under the lock (the
    analyses and the report: :func:`kdscope.pipeline.run_study`). The output folder is locked
    while the study runs in it; a failed write is a one-line error."""
    out_dir = _out_path(out_dir)
    device.use(cfg.device)  # a CUDA device this machine lacks fails here, before any write
    data = study_data(cfg)
    cfg, full = data.config, data.full
    groups = plan_groups(cfg)
    _validate_models(cfg, full, groups)  # fail before anything is written
    result = StudyResult(cfg, out_dir, data.teacher, groups, data.students)
    if executor is not None:
        result.executor = executor
    jobs = [(g, seed, _plan(cfg, g, seed)) for g, seed in iter_runs(cfg, groups)]
    if teacher_only:
        jobs = jobs[:1]
    search = WeightSearchRun(result) if cfg.weight_search and not teacher_only else None
    search_dirs = [j.run_dir for j in search.jobs] if search else []
    for run_dir in [run_folder(out_dir, g.name, s) for g, s, _ in jobs] + search_dirs:
        check_inside(out_dir, run_dir)  # before anything is written
    known = _known_plans(out_dir, jobs, search)  # checked under the lock, before any training
    with writing(out_dir):
        _make_out_dir(out_dir)
        with _study_lock(out_dir):
            io.clean_orphans(out_dir)  # under the lock: no other process is writing here
            _prepare_out_dir(cfg, out_dir, known)
            # this process computes at the jobs' thread count too (the analyses it runs
            # itself): the study's numbers then depend on that count only, whatever executor
            with pinned_threads(result.executor.job_threads()):
                _train_models(result, jobs, search, quiet)
                if then is not None:
                    then(result)
    return result
