"""A study's configuration: one YAML file validated into typed, immutable settings.

Everything is checked when the study is read, before anything is written or trained; a problem
is one line naming the file and the key (``students[1].tau``). Dataset, model, method and
analysis parameters are checked against the registered constructors (keyword arguments,
required arguments, annotated types); methods and analyses are also built once, so that their
own checks of values run; a dataset must fit in the memory available; a model that reads token
ids needs a text dataset; student names must be safe folder names; per-student ``train``
overrides are checked like any recipe.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PydanticSchemaGenerationError,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from torch import nn

from kdscope.datasets import DATASETS, check_memory, traits
from kdscope.errors import ConfigError, KdscopeError
from kdscope.methods import METHODS
from kdscope.models import MODELS, build_factory, build_model, resolve_factory
from kdscope.plugins import check_module_name, import_modules, load_plugins
from kdscope.registry import ANALYSES, Registry

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_FINITE = ConfigDict(allow_inf_nan=False)
#: a student's name: a folder under ``models/`` and a label in figures (no mathtext ``$``)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
T = TypeVar("T")


def _registered(registry: Registry[T], name: str) -> T:
    """The entry ``name`` of ``registry``; an unknown name as a ValueError, for pydantic."""
    try:
        return registry.get(name)
    except KdscopeError as e:
        raise ValueError(str(e)) from None


def _type_hints(ctor: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of ``ctor``; none when they cannot be resolved (a plugin that
    imports the annotated types only for type checkers)."""
    try:
        return typing.get_type_hints(ctor)
    except (NameError, TypeError, AttributeError):
        return {}


def _check_type(hint: Any, key: str, value: Any, where: str) -> None:
    """Reject ``value`` unless it has, as written in the YAML file, the annotated type ``hint``:
    no coercion (``'4'`` is not a number, ``1`` not a bool) and finite numbers only."""
    try:
        adapter = TypeAdapter(hint, config=_FINITE)
    except PydanticSchemaGenerationError:  # a type pydantic cannot check: the constructor will
        return
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{where}: {key}: {value!r} is not a number, text, true/false, null, list or mapping"
        ) from None
    try:
        adapter.validate_json(text, strict=True)
    except ValidationError as e:
        raise ValueError(f"{where}: {key}: {e.errors()[0]['msg']}, got {value!r}") from None


def _check_params(
    ctor: Callable[..., Any],
    params: dict[str, Any],
    where: str,
    bound: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> None:
    """Reject keys that ``ctor`` does not take as keyword arguments (``bound``: those kdscope
    passes itself), required arguments left out (but ``optional`` ones, which kdscope may
    supply) and values not of the annotated types; raised as ValueError for pydantic."""
    sig = inspect.signature(ctor)
    named = {
        n: p
        for n, p in sig.parameters.items()
        if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        allowed = [n for n in named if n not in bound]
        for key in params:
            if key not in allowed:
                raise ValueError(
                    f"unknown parameter {key!r} for {where} (parameters: {', '.join(allowed)})"
                )
    missing = [
        n
        for n, p in named.items()
        if p.default is p.empty and n not in (*bound, *optional, *params)
    ]
    if missing:
        raise ValueError(f"{where} needs the parameter(s) {', '.join(missing)}")
    hints = _type_hints(ctor)
    for key, value in params.items():
        if key in hints:
            _check_type(hints[key], key, value, where)


def _build(ctor: Callable[..., Any], params: dict[str, Any], name: str, where: str) -> None:
    """Construct the object once, so that its own checks of values (bounds, combinations) run
    now; their error, on one line, as a ValueError naming ``where``."""
    try:
        ctor(**params)
    except (KdscopeError, TypeError, ValueError) as e:
        message = " ".join(str(e).split()).removeprefix(f"{name}: ")
        raise ValueError(f"{where}: {message}") from None


class _WithParams(BaseModel):
    """A config whose keys besides the declared fields are parameters of a registered object."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class _Named(_WithParams):
    """A registered name with parameters, also written as the bare name."""

    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v


_SOURCES = ("name", "factory")


class _OmitUnset(BaseModel):
    """A config whose optional keys in ``_omit`` are written only when set, so that a study
    file (and a run's recorded plan) that does not use them reads as before they existed."""

    _omit: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None or k not in self._omit}


class ModelConfig(_WithParams, _OmitUnset):
    """A model: a registered one and its constructor parameters (``{name: cnn_small, width:
    16}``, or just ``cnn_small``), or the user's own constructor named by import path
    (``{factory: "my_models:resnet18", depth: 18}``; it is given ``num_classes`` when it takes
    that argument). ``roles`` names the module paths of the roles methods and analyses address
    (``{penultimate: avgpool, logits: fc}``). Every other key is a parameter of the
    constructor."""

    name: str | None = None
    factory: str | None = None
    roles: dict[str, str] | None = Field(
        None,
        description="role → module path (penultimate: fc1, logits: fc2, ...), added to or "
        "overriding the roles the model declares; lets any nn.Module serve the methods and "
        "analyses that address layers by role",
    )
    _omit = (*_SOURCES, "roles")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        if (self.name is None) == (self.factory is None):
            raise ValueError("give a model either a registered 'name' or a 'factory'")
        _check_params(
            self.constructor(),
            self.params,
            f"model {self.label(params=False)!r}",
            bound=("num_classes",),
            optional=("vocab_size",),
        )
        return self

    def constructor(self) -> Callable[..., Any]:
        """The registered constructor, or the user's factory (imported); a ValueError naming
        it, for pydantic, when it cannot be found."""
        if self.name is not None:
            return _registered(MODELS, self.name)
        try:
            return resolve_factory(str(self.factory))
        except KdscopeError as e:
            raise ValueError(str(e)) from None

    def build(self, num_classes: int) -> nn.Module:
        """The model, constructed for ``num_classes`` classes; a user error naming the model if
        its constructor fails."""
        if self.name is not None:
            model = build_model(self.name, num_classes, **self.params)
        else:
            model = build_factory(str(self.factory), num_classes, **self.params)
        if self.roles:
            model.roles = {**getattr(model, "roles", {}), **self.roles}
        return model

    def in_channels(self) -> int | None:
        """The input channels the model is built for, when its constructor takes an
        ``in_channels`` (given, else its default); None otherwise."""
        param = inspect.signature(self.constructor()).parameters.get("in_channels")
        if param is None:
            return None
        value = self.params.get("in_channels", param.default)
        return value if isinstance(value, int) else None

    def takes_vocabulary(self) -> bool:
        """Whether the model embeds token ids and leaves its ``vocab_size`` to the dataset."""
        ctor = self.constructor()
        return (
            "vocab_size" in inspect.signature(ctor).parameters and "vocab_size" not in self.params
        )

    def label(self, params: bool = True) -> str:
        """``name(key=value,...)``; the factory's path in place of the name."""
        base = str(self.name or self.factory)
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{base}({extra})" if extra and params else base


class DatasetConfig(_WithParams):
    """A registered dataset and its parameters: ``{name: shapes, n_train: 3000}``."""

    name: str = "shapes"

    @model_validator(mode="after")
    def _known(self) -> DatasetConfig:
        _check_params(_registered(DATASETS, self.name), self.params, f"dataset {self.name!r}")
        return self

    @property
    def modality(self) -> str | None:
        """The kind of inputs the dataset holds, when its registration declares it."""
        return traits(self.name).modality


class AnalysisConfig(_Named):
    """A registered analysis and its parameters: ``accuracy`` or
    ``{name: knowledge_points, candidates: 32}``."""

    @model_validator(mode="after")
    def _known(self) -> AnalysisConfig:
        cls = _registered(ANALYSES, self.name)
        where = f"analysis {self.name!r}"
        _check_params(cls.__init__, self.params, where)
        _build(cls, self.params, self.name, where)
        return self


Augment = Literal["flip", "shift", "colour", "crop"]


class TrainConfig(BaseModel):
    """Optimisation recipe of one model: SGD or Adam, a per-epoch learning-rate schedule and
    on-the-fly augmentation. ``schedule``: ``log`` = lr·10^(−e/(E−1)) (the knowledge-point papers),
    ``cosine``, ``step`` (×0.1 at 50 % and 75 %) or ``constant``; it restarts in every phase of a
    multi-phase method."""

    model_config = _STRICT
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Literal["log", "cosine", "step", "constant"] = "cosine"
    augment: tuple[Augment, ...] = ()
    shift: int = Field(2, ge=0, description="maximum shift in pixels of the 'shift' augmentation")


class RoleConfig(BaseModel):
    """A model and its training recipe (the teacher, or the students' shared recipe)."""

    model_config = _STRICT
    model: ModelConfig
    train: TrainConfig = TrainConfig()


def _given_path(value: Any, info: ValidationInfo) -> Path:
    """A given model's file: a path relative to the study file's folder (the validation
    context's ``base``, else the current folder), made absolute; it must exist."""
    if not isinstance(value, (str, Path)):
        raise ValueError(f"expected a file path, got {type(value).__name__}")
    path = Path(value).expanduser()
    base = (info.context or {}).get("base")
    if not path.is_absolute():
        path = (Path(base) if base is not None else Path.cwd()) / path
    path = path.resolve()
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


GivenPath = Annotated[Path, BeforeValidator(_given_path)]
#: one file, or one file per seed
PerSeed = GivenPath | dict[int, GivenPath]


class TeacherConfig(RoleConfig, _OmitUnset):
    """The teacher: trained with ``train``, or given as a ``checkpoint`` (a state dict of
    ``model``) or a ``torchscript`` file (then ``model`` may be left out)."""

    model: ModelConfig | None = None  # type: ignore[assignment]  (optional with torchscript)
    checkpoint: GivenPath | None = None
    torchscript: GivenPath | None = None
    _omit = ("checkpoint", "torchscript")

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        if self.checkpoint is not None and self.torchscript is not None:
            raise ValueError("give the teacher either a 'checkpoint' or a 'torchscript' file")
        if self.model is None and self.torchscript is None:
            raise ValueError("the teacher needs a 'model' (or a 'torchscript' file)")
        return self

    def given_model(self) -> Given | None:
        """The teacher's file when it is given (:class:`Given`), None when it is trained."""
        if self.checkpoint is not None:
            return Given("checkpoint", self.checkpoint)
        return Given("torchscript", self.torchscript) if self.torchscript is not None else None

    def label(self) -> str:
        """The teacher's architecture (:meth:`ModelConfig.label`), or its TorchScript file."""
        if self.model is None:
            return f"TorchScript {Path(str(self.torchscript)).name}"
        return self.model.label()


@dataclass(frozen=True)
class Given:
    """A model trained elsewhere (:mod:`kdscope.given`): its final ``checkpoint`` (a state dict
    of the group's model) or ``torchscript`` file at ``path``; optionally the ``series`` of
    checkpoints of its training, (epoch, path) in order, ``path`` being the last, and the
    ``path_lengths`` its training logged (a ``trajectory.json`` of
    :class:`kdscope.knowledge_points.WeightPathLogger`)."""

    kind: Literal["checkpoint", "torchscript"]
    path: Path
    series: tuple[tuple[int, Path], ...] = ()
    path_lengths: Path | None = None

    @property
    def epochs(self) -> tuple[int, ...]:
        """The epochs of the checkpoint series (none without one)."""
        return tuple(e for e, _ in self.series)

    def identity(self) -> dict[str, Any]:
        """Every file of the model as recorded in its run's result: path, size and
        modification time (ns), so that a changed file is read again."""
        out: dict[str, Any] = {"kind": self.kind, **_stat(self.path)}
        if self.series:
            out["series"] = {str(e): _stat(p) for e, p in self.series}
        if self.path_lengths is not None:
            out["path_lengths"] = _stat(self.path_lengths)
        return out


def _stat(path: Path) -> dict[str, Any]:
    """A file's path, size and modification time; a user error if it cannot be read."""
    try:
        stat = path.stat()
    except OSError as e:
        raise KdscopeError(f"cannot read the given model {path}: {e.strerror}") from None
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class GivenRuns(BaseModel):
    """Models trained elsewhere, one per seed: ``checkpoint`` (state dicts of the group's
    model) or ``torchscript`` files, each one path (a study of one seed) or a mapping seed →
    path; or ``checkpoints``, a checkpoint series per seed (seed → epoch → path; the last is the
    final model; epoch 0, the initial weights, anchors the distances), with optionally the
    ``path_lengths`` its training logged (seed → ``trajectory.json``)."""

    model_config = _STRICT
    checkpoint: PerSeed | None = None
    torchscript: PerSeed | None = None
    checkpoints: dict[int, dict[int, GivenPath]] | None = None
    path_lengths: dict[int, GivenPath] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> GivenRuns:
        given = [k for k in ("checkpoint", "torchscript", "checkpoints") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give one of 'checkpoint', 'torchscript' and 'checkpoints'")
        if self.path_lengths is not None and self.checkpoints is None:
            raise ValueError("'path_lengths' go with a checkpoint series ('checkpoints')")
        for seed, series in (self.checkpoints or {}).items():
            if len(series) < 2 or any(e < 0 for e in series):
                raise ValueError(
                    f"checkpoints of seed {seed}: a series needs two or more epochs >= 0"
                )
        return self

    def files(self, seeds: tuple[int, ...], where: str) -> dict[int, Given]:
        """The given model of every seed; a ValueError naming ``where`` unless the files cover
        exactly ``seeds``."""
        if self.checkpoints is not None:
            _cover(set(self.checkpoints), seeds, where, "checkpoint series")
            if self.path_lengths is not None:
                _cover(set(self.path_lengths), seeds, where, "path_lengths")
            out = {}
            for seed in seeds:
                series = tuple(sorted(self.checkpoints[seed].items()))
                lengths = None if self.path_lengths is None else self.path_lengths[seed]
                out[seed] = Given("checkpoint", series[-1][1], series, lengths)
            return out
        kind = "checkpoint" if self.checkpoint is not None else "torchscript"
        value = self.checkpoint if self.checkpoint is not None else self.torchscript
        if isinstance(value, Path):
            if len(seeds) != 1:
                raise ValueError(
                    f"{where}: one {kind} file for {len(seeds)} seeds; map each seed to its file"
                )
            return {seeds[0]: Given(kind, value)}
        assert value is not None
        _cover(set(value), seeds, where, f"{kind} files")
        return {seed: Given(kind, value[seed]) for seed in seeds}


def _cover(given: set[int], seeds: tuple[int, ...], where: str, what: str) -> None:
    """A ValueError unless ``given`` (seeds with files) is exactly ``seeds``."""
    if given != set(seeds):
        raise ValueError(
            f"{where}: {what} for seeds {sorted(given)}, the study has seeds {list(seeds)}"
        )


class StudentConfig(_WithParams, _OmitUnset):
    """One distilled student: a method with its hyper-parameters, optionally its own model and
    recipe overrides, or ``given``: the student trained elsewhere (``method`` then says how, for
    the analyses). Every key besides ``method``, ``name``, ``model``, ``train`` and ``given`` is
    a hyper-parameter of the method."""

    method: str
    name: str | None = None
    model: ModelConfig | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    given: GivenRuns | None = None
    _omit = ("given",)

    @property
    def label(self) -> str:
        return self.name or self.method

    @field_validator("train")
    @classmethod
    def _valid_overrides(cls, v: dict[str, Any]) -> dict[str, Any]:
        """The overrides are kept as written (they go into study.yaml) but checked like a whole
        recipe: known settings with valid values."""
        unknown = sorted(set(v) - set(TrainConfig.model_fields))
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown} in 'train'")
        try:
            TrainConfig.model_validate(v)
        except ValidationError as e:
            raise ValueError(_describe(e)) from None
        return v

    @model_validator(mode="after")
    def _known(self) -> StudentConfig:
        cls = _registered(METHODS, self.method)
        where = f"method {self.method!r}"
        _check_params(cls.__init__, self.params, where)
        _build(cls, self.params, self.method, where)
        return self


class Subset(BaseModel):
    """Which training examples a role trains on, chosen by an integer tag of the dataset
    (``domain``, ``group``, ...): ``keep`` the examples whose tag value is listed, or take the
    first ``counts[v]`` examples of every tag value v (0 drops the value). Exactly one of the two.
    E.g. ``{tag: domain, keep: [0]}`` (students see one domain) or
    ``{tag: group, counts: [400, 400, 0, 400]}`` (a teacher that never sees group 2)."""

    model_config = _STRICT
    tag: str
    keep: tuple[int, ...] | None = Field(None, min_length=1)
    counts: tuple[Annotated[int, Field(ge=0)], ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_rule(self) -> Subset:
        if (self.keep is None) == (self.counts is None):
            raise ValueError("give exactly one of 'keep' and 'counts'")
        if self.counts is not None and sum(self.counts) < 2:
            raise ValueError("'counts' must keep at least 2 examples")
        return self


class WeightSearch(BaseModel):
    """Pick each distilled student's distillation weight on a validation split (property-transfer
    docs/study_file.md, 'Weight search'): the students' training data loses a stratified
    ``validation`` fraction; on the rest the independent student and every searched student, its
    weight multiplied by each of ``factors``, train with the ``seeds``; the factor with the highest
    mean validation accuracy wins (ties: the factor nearest 1). ``students``: the labels searched
    (default every student whose method has a distillation weight, except those in ``share``);
    ``share`` maps a student to the one whose chosen factor it takes (the soft-label control keeps
    the KD student's weights, docs/property_transfer.md)."""

    model_config = _STRICT
    factors: tuple[Annotated[float, Field(gt=0)], ...] = Field((0.25, 0.5, 1.0, 2.0), min_length=1)
    validation: float = Field(0.2, gt=0, lt=1)
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    students: tuple[str, ...] | None = None
    share: dict[str, str] = Field(default_factory=dict)


class ExecutorConfig(BaseModel):
    """Where the study's jobs run (docs/scaling.md): ``local`` (in this process, one after
    another), ``processes`` (a pool of ``workers`` local processes, default one per core) or
    ``ray`` (a Ray cluster at ``address``; a local Ray instance when unset). ``threads``: torch's
    threads per job (default 1 in workers; in this process, torch's own choice). ``gpus``: the
    GPUs Ray gives each job on a CUDA device. The executor never changes a result."""

    model_config = _STRICT
    name: Literal["local", "processes", "ray"] = "local"
    workers: int | None = Field(None, ge=1, description="processes: worker processes")
    threads: int | None = Field(None, ge=1, description="torch threads per job")
    address: str | None = Field(None, description="ray: the cluster's address ('auto')")
    gpus: float = Field(1.0, gt=0, description="ray: GPUs per job when the device is CUDA")

    @model_validator(mode="after")
    def _fits(self) -> ExecutorConfig:
        if self.workers is not None and self.name != "processes":
            raise ValueError(f"'workers' is a setting of executor 'processes', not {self.name!r}")
        if self.address is not None and self.name != "ray":
            raise ValueError(f"'address' is a setting of executor 'ray', not {self.name!r}")
        return self


#: the devices a study may name: ``auto`` (CUDA when available, else the CPU), ``cpu``,
#: ``cuda`` (the current CUDA device) or ``cuda:N``
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(name: str | None) -> str | None:
    """``name`` if it names a device (:data:`DEVICE`) or is None; else a ValueError."""
    if name is not None and not DEVICE.fullmatch(name):
        raise ValueError(f"device {name!r}: use auto, cpu, cuda or cuda:N")
    return name


class StudyConfig(_OmitUnset):
    """A whole study: data, teacher, the students' recipe, the distilled students, seeds,
    diagnosed layers, checkpoint epochs and analyses."""

    model_config = _STRICT
    _omit = ("baseline", "executor", "device")
    name: str = "study"
    imports: tuple[str, ...] = Field(
        (),
        description="the user's modules (dotted names) imported before the study is checked, so "
        "that the datasets, models, methods and analyses they register can be named; the study "
        "file's folder is first on sys.path",
    )
    dataset: DatasetConfig = DatasetConfig()
    teacher: TeacherConfig
    teacher_seed: int = 0
    student: RoleConfig
    baseline: GivenRuns | None = Field(
        None, description="the baseline (the students' model trained on labels) given, per seed"
    )
    students: tuple[StudentConfig, ...] = Field(min_length=1)
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    layers: tuple[str, ...] = ()
    checkpoints: Literal["auto"] | tuple[int, ...] = "auto"
    analyses: tuple[AnalysisConfig, ...] = Field(
        default_factory=lambda: (AnalysisConfig(name="accuracy"),)
    )
    cache_teacher: bool = True
    transfer_size: int | None = Field(
        None,
        ge=2,
        description="baselines and students train on the first N training examples (a transfer "
        "set smaller than the teacher's training data); None: the whole training set",
    )
    teacher_subset: Subset | None = Field(
        None, description="the teacher trains only on these training examples (by tag)"
    )
    student_subset: Subset | None = Field(
        None,
        description="baselines and students train only on these training examples (by tag), "
        "before transfer_size is applied",
    )
    weight_search: WeightSearch | None = Field(
        None, description="choose the students' distillation weights on a validation split"
    )
    executor: ExecutorConfig | None = Field(
        None, description="where the jobs run: local (default), processes or ray"
    )
    device: str | None = Field(
        None, description="auto (default: CUDA when available), cpu, cuda or cuda:N"
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str | None) -> str | None:
        return check_device(v)

    @field_validator("imports")
    @classmethod
    def _module_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            try:
                check_module_name(name)
            except ConfigError as e:
                raise ValueError(str(e).removeprefix("imports: ")) from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        self._check_student_names()
        self._check_inputs()
        if self.checkpoints != "auto" and any(e < 0 for e in self.checkpoints):
            raise ValueError("checkpoint epochs must be >= 0")
        if self.weight_search is not None:
            self.searched_students()  # raises on unknown or weightless students
        self.given_runs()  # raises on given files that do not cover the seeds
        return self

    def given_runs(self) -> dict[str, dict[int, Given]]:
        """The baseline's and the students' given models: group name → seed → :class:`Given`."""
        out = {}
        if self.baseline is not None:
            out["baseline"] = self.baseline.files(self.seeds, "baseline")
        for i, s in enumerate(self.students):
            if s.given is not None:
                out[s.label] = s.given.files(self.seeds, f"students[{i}] ({s.label})")
        if self.weight_search is not None and out:
            raise ValueError("weight_search trains the students; it cannot go with given models")
        return out

    def _check_student_names(self) -> None:
        """Student names are safe folder and figure-label names, not reserved, and unique."""
        labels = [s.label for s in self.students]
        for label in labels:
            if not _SAFE_NAME.fullmatch(label):
                raise ValueError(
                    f"student name {label!r}: use 1 to 64 letters, digits, '_', '-' or '.', "
                    "starting with a letter or digit"
                )
            if label == "teacher" or label.startswith("baseline"):  # the runner's own names
                raise ValueError(f"student name {label!r} is reserved; give the student a 'name'")
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(
                f"student names must be unique; give 'name' to tell apart {sorted(dup)}"
            )

    def _check_inputs(self) -> None:
        """Reject a model that reads token ids (its ``vocab_size`` left to the dataset) on a
        dataset declared to hold other inputs."""
        modality = self.dataset.modality
        if modality in (None, "text"):
            return
        models = {"teacher": self.teacher.model, "student": self.student.model}
        models.update((f"students[{i}]", s.model) for i, s in enumerate(self.students) if s.model)
        for role, model in models.items():
            if model is not None and model.takes_vocabulary():
                raise ValueError(
                    f"{role}: model {model.label(params=False)!r} reads token ids (it takes a vocab_size), but "
                    f"dataset {self.dataset.name!r} holds {modality} inputs"
                )

    def searched_students(self) -> dict[str, StudentConfig]:
        """The students the weight search tunes, by label (none without a search)."""
        ws = self.weight_search
        if ws is None:
            return {}
        by_label = {s.label: s for s in self.students}
        weighted = {k for k, s in by_label.items() if METHODS.get(s.method).distill_weight}
        names = ws.students if ws.students is not None else sorted(weighted - set(ws.share))
        for name in [*names, *ws.share, *ws.share.values()]:
            if name not in by_label:
                raise ValueError(f"weight_search: no student is called {name!r}")
            if name not in weighted:
                raise ValueError(
                    f"weight_search: student {name!r} (method {by_label[name].method!r}) has no "
                    "distillation weight to scale"
                )
        for name, source in ws.share.items():
            if source not in names or name in names:
                raise ValueError(
                    f"weight_search: share {name!r} -> {source!r} needs {source!r} searched and "
                    f"{name!r} not"
                )
        return {k: by_label[k] for k in names}

    def student_train(self, s: StudentConfig) -> TrainConfig:
        """Student ``s``'s recipe: the students' shared one with its ``train`` overrides."""
        return TrainConfig.model_validate({**self.student.train.model_dump(), **s.train})

    def executing(
        self,
        executor: str | None = None,
        workers: int | None = None,
        threads: int | None = None,
        device: str | None = None,
    ) -> StudyConfig:
        """The study run with these execution settings (the command line's ``--executor``,
        ``--workers``, ``--threads`` and ``--device``) in place of its own; ``workers`` alone
        asks for the ``processes`` executor. A one-line :class:`ConfigError` when they do not
        fit together. They never change a result but through ``threads`` (docs/scaling.md)."""
        raw = (self.executor or ExecutorConfig()).model_dump(exclude_defaults=True)
        if executor is not None:
            raw = raw if executor == raw.get("name", "local") else {}
            raw["name"] = executor
        if workers is not None:
            raw.setdefault("name", "processes")
            raw["workers"] = workers
        if threads is not None:
            raw["threads"] = threads
        try:
            settings = ExecutorConfig.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"--executor: {_describe(e)}") from None
        try:
            checked = check_device(device)
        except ValueError as e:
            raise ConfigError(f"--device: {e}") from None
        update: dict[str, Any] = {"executor": settings if settings != ExecutorConfig() else None}
        if checked is not None:
            update["device"] = checked
        return self.model_copy(update=update)

    def to_yaml(self) -> str:
        raw = self.model_dump(mode="json")
        if not raw["imports"]:  # a study without imports is written as before they existed
            del raw["imports"]
        return yaml.safe_dump(raw, sort_keys=False)


def _inside(loc: tuple[int | str, ...], container: tuple[int | str, ...]) -> bool:
    """Whether the error location ``loc`` lies strictly inside ``container``."""
    return len(loc) > len(container) and loc[: len(container)] == container


def _describe(e: ValidationError) -> str:
    """The first error of ``e`` on one line, ``key.path: message`` (just the message when it
    concerns no one key), saying how many more there are. An error of a container that holds
    another error (a list left too short by an invalid item) is that error's consequence and
    not counted."""
    everything = e.errors()
    errors = [x for x in everything if not any(_inside(o["loc"], x["loc"]) for o in everything)]
    err = errors[0]
    loc = ""
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


def parse_study(data: Any, source: str = "study", base: Path | None = None) -> StudyConfig:
    """Validate a mapping into a :class:`StudyConfig`; errors name the offending key. The
    dataset must also fit in the memory available now (checked here, not in the model, so that
    a study validated again while its dataset is held in memory stays valid). Relative paths of
    given models are relative to ``base`` (the study file's folder; default: the current
    folder) and are resolved to absolute ones.

    The installed plugins are loaded first (:func:`kdscope.plugins.load_plugins`), then the
    modules of the study's ``imports`` (dotted names; ``base`` first on ``sys.path`` when
    given), so that the names they register are known when the study is checked."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study must be a YAML mapping, got {type(data).__name__}")
    load_plugins()
    _import_listed(data.get("imports", ()), source, base)
    try:
        cfg = StudyConfig.model_validate(data, context={"base": base})
    except ValidationError as e:
        raise ConfigError(f"{source}: {_describe(e)}") from None
    try:
        check_memory(cfg.dataset.name, cfg.dataset.params)
    except KdscopeError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def _import_listed(names: Any, source: str, base: Path | None) -> None:  # noqa: ANN401
    """Import the study's ``imports`` (a list of module names) before it is validated."""
    if not isinstance(names, (list, tuple)):
        raise ConfigError(
            f"{source}: imports: give a list of module names, like [my_package.my_module]"
        )
    try:
        import_modules(names, base)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


class _StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader made stricter and closer to YAML 1.2: a key given twice in one
    mapping is an error (PyYAML keeps the last value), and ``1e-3`` is a number (PyYAML reads a
    float without a dot, or with an unsigned exponent, as text)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base`` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: the safe loader reports it
                continue
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice (first at line {seen})",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


_StudyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """Where in ``text`` the YAML error ``e`` is and what it is, as the end of one line."""
    if isinstance(e, yaml.reader.ReaderError):
        line = text.count("\n", 0, e.position) + 1
        return f" at line {line}: character #x{e.character:x} is not allowed"
    mark = getattr(e, "problem_mark", None)
    where = f" at line {mark.line + 1}" if mark else ""
    return f"{where}: {' '.join(str(getattr(e, 'problem', None) or e).split())}"


def _read_yaml(path: Path) -> Any:
    """The YAML document in ``path``; a one-line ConfigError for a file that cannot be read, is
    not UTF-8 text or not valid YAML, or gives a key twice."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the study file ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at line {line}); save the file "
            "as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_StudyLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML{_yaml_problem(e, text)}") from None


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    return parse_study(_read_yaml(path), str(path), base=path.parent)


PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    """The names of the embedded studies."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """The file of the embedded study ``name``: only a name :func:`preset_names` lists is
    accepted, never a path."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r} (presets: {', '.join(names)})")
    return PRESET_DIR / f"{name}.yaml"


def load_preset(name: str) -> StudyConfig:
    """Read and validate the embedded study ``name``."""
    return load_study(preset_path(name))
