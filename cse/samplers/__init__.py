"""Samplers: ``sampler(prior, operator, y, seeds) -> x0`` (for "+CSE", a prior with its CSE's
control image bound: ``prior.conditioned(measurement.lift(y))``).

``SAMPLERS`` lists every sampler class, from the registry of methods (``cse.samplers.registry``);
the property tests run over it, so a sampler given a registry entry is covered without editing any test.
"""

from cse.samplers.ancestral import Ancestral
from cse.samplers.common import Sampler
from cse.samplers.daps import DAPS
from cse.samplers.ddrm import DDRM
from cse.samplers.diffpir import DiffPIR
from cse.samplers.dmap import DMAP
from cse.samplers.dps import DPS
from cse.samplers.dsg import DSG
from cse.samplers.freedom import FreeDoM
from cse.samplers.pigdm import PiGDM
from cse.samplers.psld import PSLD
from cse.samplers.reddiff import REDDiff
from cse.samplers.registry import METHODS
from cse.samplers.resample import ReSample

SAMPLERS: tuple[type[Sampler], ...] = tuple(dict.fromkeys(m.sampler for m in METHODS.values()))

__all__ = [
    "DAPS",
    "Ancestral",
    "DDRM",
    "DMAP",
    "DPS",
    "DSG",
    "DiffPIR",
    "FreeDoM",
    "PSLD",
    "PiGDM",
    "REDDiff",
    "ReSample",
    "SAMPLERS",
    "Sampler",
]
