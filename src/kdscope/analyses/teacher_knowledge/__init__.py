"""Three-levels analyses (Tang et al. 2020) on a study, one file per analysis, each named like the
file of :mod:`kdscope.teacher_knowledge` whose maths it runs: soft labels, calibration, class
geometry, gradient rescaling, difficulty, the teacher check and the claims table (three_levels)."""

from kdscope.analyses.teacher_knowledge.calibration import CalibrationAnalysis
from kdscope.analyses.teacher_knowledge.class_geometry import ClassGeometryAnalysis
from kdscope.analyses.teacher_knowledge.difficulty import DifficultyAnalysis
from kdscope.analyses.teacher_knowledge.rescaling import RescalingAnalysis
from kdscope.analyses.teacher_knowledge.soft_labels import SoftLabelAnalysis
from kdscope.analyses.teacher_knowledge.teacher_check import TeacherCheckAnalysis
from kdscope.analyses.teacher_knowledge.three_levels import ThreeLevelsAnalysis

__all__ = [
    "CalibrationAnalysis",
    "ClassGeometryAnalysis",
    "DifficultyAnalysis",
    "RescalingAnalysis",
    "SoftLabelAnalysis",
    "TeacherCheckAnalysis",
    "ThreeLevelsAnalysis",
]
