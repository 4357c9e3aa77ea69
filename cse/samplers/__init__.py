"""Samplers: ``sampler(prior, operator, y, seeds, control=None) -> x0`` (DESIGN §3)."""

from cse.samplers.ancestral import Ancestral
from cse.samplers.common import Sampler
from cse.samplers.dmap import DMAP
from cse.samplers.dps import DPS
from cse.samplers.dsg import DSG

SAMPLERS: tuple[type[Sampler], ...] = (Ancestral, DPS, DSG, DMAP)

__all__ = ["DMAP", "DPS", "DSG", "SAMPLERS", "Ancestral", "Sampler"]
