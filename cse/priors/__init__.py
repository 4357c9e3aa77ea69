"""Diffusion priors behind one contract.

``DiffusersPrior`` (and ``build_controlnet``) are imported on first use, so that the exact tier
does not pay for importing diffusers.
"""

from cse.priors.base import Prior, PriorView
from cse.priors.conditioned import ConditionedPrior
from cse.priors.counting import CountingPrior
from cse.priors.gmm import GaussianMixturePrior
from cse.priors.schedule import DiscreteSchedule, KarrasSchedule

__all__ = [
    "ConditionedPrior",
    "CountingPrior",
    "DiffusersPrior",
    "DiscreteSchedule",
    "GaussianMixturePrior",
    "KarrasSchedule",
    "Prior",
    "PriorView",
    "build_controlnet",
]


def __getattr__(name: str):
    if name in ("DiffusersPrior", "build_controlnet"):
        from cse.priors import diffusers_prior

        return getattr(diffusers_prior, name)
    raise AttributeError(f"module 'cse.priors' has no attribute {name!r}")
