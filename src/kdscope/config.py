"""A study's configuration: one YAML file validated into typed, immutable settings.

Unknown keys and bad values are rejected with a message naming the key (``students[1].tau``).
Dataset, model and method parameters are checked against the registered constructors'
signatures, so a misspelt hyper-parameter is caught before any training starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdscope.errors import ConfigError, KdscopeError

_STRICT = ConfigDict(extra="forbid", frozen=True)


def _check_params(
    lookup: Callable[[], Callable[..., Any]],
    params: dict[str, Any],
    where: str,
    skip: tuple[str, ...],
) -> None:
    """Reject an unknown registered name (``lookup`` raises) and keys that the constructor it
    returns does not accept as keyword arguments; raised as ValueError for pydantic."""
    try:
        ctor = lookup()
    except KdscopeError as e:
        raise ValueError(str(e)) from None
    sig = inspect.signature(ctor)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    allowed = [n for n in sig.parameters if n not in skip and n != "self"]
    for key in params:
        if key not in allowed:
            raise ValueError(
                f"unknown parameter {key!r} for {where} (parameters: {', '.join(allowed)})"
            )


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


class ModelConfig(_Named):
    """A registered model and its constructor parameters: ``{name: cnn_small, width: 16}``."""

    @model_validator(mode="after")
    def _known(self) -> ModelConfig:
        from kdscope.models import MODELS

        _check_params(
            lambda: MODELS.get(self.name), self.params, f"model {self.name!r}", ("num_classes",)
        )
        return self

    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({extra})" if extra else self.name


class DatasetConfig(_WithParams):
    """A registered dataset and its parameters: ``{name: shapes, n_train: 3000}``."""

    name: str = "shapes"

    @model_validator(mode="after")
    def _known(self) -> DatasetConfig:
        from kdscope.datasets import DATASETS

        _check_params(lambda: DATASETS.get(self.name), self.params, f"dataset {self.name!r}", ())
        return self


class AnalysisConfig(_Named):
    """A registered analysis and its parameters: ``accuracy`` or
    ``{name: knowledge_points, candidates: 32}``."""

    @model_validator(mode="after")
    def _known(self) -> AnalysisConfig:
        from kdscope.analyses import ANALYSES

        _check_params(
            lambda: ANALYSES.get(self.name).__init__,
            self.params,
            f"analysis {self.name!r}",
            (),
        )
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


class StudentConfig(_WithParams):
    """One distilled student: a method with its hyper-parameters, optionally its own model and
    recipe overrides. Every key besides ``method``, ``name``, ``model`` and ``train`` is a
    hyper-parameter of the method."""

    method: str
    name: str | None = None
    model: ModelConfig | None = None
    train: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.method

    @model_validator(mode="after")
    def _known(self) -> StudentConfig:
        from kdscope.methods import METHODS

        _check_params(
            lambda: METHODS.get(self.method).__init__, self.params, f"method {self.method!r}", ()
        )
        unknown = set(self.train) - set(TrainConfig.model_fields)
        if unknown:
            raise ValueError(f"unknown training setting(s) {sorted(unknown)} in 'train'")
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
    spec §2.5): the students' training data loses a stratified ``validation`` fraction; on the
    rest the independent student and every searched student, its weight multiplied by each of
    ``factors``, train with the ``seeds``; the factor with the highest mean validation accuracy
    wins (ties: the factor nearest 1). ``students``: the labels searched (default every student
    whose method has a distillation weight, except those in ``share``); ``share`` maps a student
    to the one whose chosen factor it takes (the soft-label control keeps the KD student's
    weights, spec §3.11)."""

    model_config = _STRICT
    factors: tuple[Annotated[float, Field(gt=0)], ...] = Field((0.25, 0.5, 1.0, 2.0), min_length=1)
    validation: float = Field(0.2, gt=0, lt=1)
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    students: tuple[str, ...] | None = None
    share: dict[str, str] = Field(default_factory=dict)


class StudyConfig(BaseModel):
    """A whole study: data, teacher, the students' recipe, the distilled students, seeds,
    diagnosed layers, checkpoint epochs and analyses."""

    model_config = _STRICT
    name: str = "study"
    dataset: DatasetConfig = DatasetConfig()
    teacher: RoleConfig
    teacher_seed: int = 0
    student: RoleConfig
    students: tuple[StudentConfig, ...] = Field(min_length=1)
    seeds: tuple[int, ...] = Field((0,), min_length=1)
    layers: tuple[str, ...] = ()
    checkpoints: Literal["auto"] | tuple[int, ...] = "auto"
    analyses: tuple[AnalysisConfig, ...] = (AnalysisConfig(name="accuracy"),)
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

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        labels = [s.label for s in self.students]
        for label in labels:  # the teacher and the automatic baselines own these names
            if label == "teacher" or label.startswith("baseline"):
                raise ValueError(f"student name {label!r} is reserved; give the student a 'name'")
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValueError(
                f"student names must be unique; give 'name' to tell apart {sorted(dup)}"
            )
        if self.checkpoints != "auto" and any(e < 0 for e in self.checkpoints):
            raise ValueError("checkpoint epochs must be >= 0")
        if self.weight_search is not None:
            self.searched_students()  # raises on unknown or weightless students
        return self

    def searched_students(self) -> dict[str, StudentConfig]:
        """The students the weight search tunes, by label (none without a search)."""
        from kdscope.methods import METHODS

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
        return self.student.train.model_copy(update=s.train) if s.train else self.student.train

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_error(e: ValidationError, source: str) -> str:
    err = e.errors()[0]
    loc = ""
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{source}: {loc or 'study'}: {msg}{more}"


def parse_study(data: Any, source: str = "study") -> StudyConfig:
    """Validate a mapping into a :class:`StudyConfig`; errors name the offending key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study must be a YAML mapping, got {type(data).__name__}")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return parse_study(data, str(path))


PRESET_DIR = Path(__file__).parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> StudyConfig:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset {name!r} (presets: {', '.join(preset_names())})")
    return load_study(path)
