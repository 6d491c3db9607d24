"""Property-transfer analyses (Ojha et al. 2023) on a study, one file per analysis, each named like
the file of :mod:`kdscope.property_transfer` whose maths it runs where there is one:
localisation, adversarial, representation similarity, decision boundaries, unseen domains,
invariance, shape bias, subgroups, accuracy-matched controls and the claims table."""

from kdscope.analyses.property_transfer.accuracy_matched import AccuracyMatchedAnalysis
from kdscope.analyses.property_transfer.adversarial import AdversarialAnalysis
from kdscope.analyses.property_transfer.decision_boundary import DecisionBoundaryAnalysis
from kdscope.analyses.property_transfer.domains import DomainsAnalysis
from kdscope.analyses.property_transfer.invariance import InvarianceAnalysis
from kdscope.analyses.property_transfer.localisation import LocalisationAnalysis
from kdscope.analyses.property_transfer.property_claims import PropertyClaimsAnalysis
from kdscope.analyses.property_transfer.representation_similarity import (
    RepresentationSimilarityAnalysis,
)
from kdscope.analyses.property_transfer.shape_bias import ShapeBiasAnalysis
from kdscope.analyses.property_transfer.subgroups import SubgroupsAnalysis

__all__ = [
    "AccuracyMatchedAnalysis",
    "AdversarialAnalysis",
    "DecisionBoundaryAnalysis",
    "DomainsAnalysis",
    "InvarianceAnalysis",
    "LocalisationAnalysis",
    "PropertyClaimsAnalysis",
    "RepresentationSimilarityAnalysis",
    "ShapeBiasAnalysis",
    "SubgroupsAnalysis",
]
