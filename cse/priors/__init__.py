"""Diffusion priors behind one contract (DESIGN §1, §3)."""

from cse.priors.base import Prior
from cse.priors.gmm import GaussianMixturePrior
from cse.priors.schedule import DiscreteSchedule

__all__ = ["DiscreteSchedule", "GaussianMixturePrior", "Prior"]
