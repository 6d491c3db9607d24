"""Knowledge-point analyses (Cheng et al. 2020; Zhang et al. 2022) on a study: the
``knowledge_points`` analysis over :mod:`kdscope.knowledge_points` and its report section."""

from kdscope.analyses.knowledge_points.knowledge_points import KnowledgePointsAnalysis

__all__ = ["KnowledgePointsAnalysis"]
