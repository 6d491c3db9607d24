"""kdscope: explain knowledge distillation.

Public API (everything else may move):

* studies: :func:`load_study`, :func:`load_preset`, :func:`parse_study`, :func:`run_study`,
  :class:`StudyConfig`, :class:`StudyResult`;
* registries: :func:`register_model`, :func:`build_model`, :func:`list_models`,
  :func:`register_method`, :func:`build_method`, :func:`register_dataset`,
  :func:`build_dataset`, :func:`register_analysis`;
* layers: :func:`capture` (context-managed forward hooks by module path);
* data contract: :class:`Sample`, :class:`Batch`, :class:`TensorDataset`, :class:`DataSplits`;
* knowledge points: the :mod:`kdscope.knowledge_points` module (estimator and metrics for any
  ``nn.Module``);
* three levels of teacher knowledge: :func:`check_teacher` (the teacher check on any
  ``nn.Module``) and the :mod:`kdscope.teacher_knowledge` module (calibration, rescaling factor,
  class geometry, soft-label structure, on arrays);
* errors: :class:`KdscopeError`.
"""

from kdscope import knowledge_points, teacher_knowledge
from kdscope.analyses import register_analysis
from kdscope.analyses.teacher_knowledge.teacher_check import check_teacher
from kdscope.config import StudyConfig, load_preset, load_study, parse_study
from kdscope.datasets import Batch, DataSplits, Sample, TensorDataset, register_dataset
from kdscope.datasets import build as build_dataset
from kdscope.errors import KdscopeError
from kdscope.methods import Method, build_method, register_method
from kdscope.models import build_model, capture, list_models, register_model
from kdscope.pipeline import run_study
from kdscope.study import StudyResult
from kdscope.version import __version__

__all__ = [
    "Batch",
    "DataSplits",
    "KdscopeError",
    "Method",
    "Sample",
    "StudyConfig",
    "StudyResult",
    "TensorDataset",
    "__version__",
    "build_dataset",
    "build_method",
    "build_model",
    "capture",
    "check_teacher",
    "knowledge_points",
    "list_models",
    "load_preset",
    "load_study",
    "parse_study",
    "register_analysis",
    "register_dataset",
    "register_method",
    "register_model",
    "run_study",
    "teacher_knowledge",
]
