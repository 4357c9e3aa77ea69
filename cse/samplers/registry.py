"""One registry of the methods a run can name (``method: dps`` in ``configs/samplers/dps.yaml``).

Each entry is the sampler class, the settings every run of the method has, the names of the
settings a tier's step table gives per task (``configs/<tier>/steps.yaml``), a label for tables,
and what the method needs: a task whose operator lacks a need has no cell for the method, and says
why. Adding a method: a sampler file, an entry here, its cells in the step tables, a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any

from cse.operators.base import LinearOperator
from cse.operators.svd import has_svd
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
from cse.samplers.resample import ReSample


class Need(Enum):
    """What a method needs of a task."""

    LINEAR_OPERATOR = "a linear operator with an exact adjoint"
    GRADIENTS = "gradients through the prior's network (and decoder)"
    SVD = "a linear operator with an SVD (super-resolution, a separable blur, inpainting, a matrix)"
    PIXEL_PRIOR = "a pixel prior (the operator's SVD is of images, not of latents through a decoder)"


@dataclass(frozen=True)
class Method:
    """A method as configs and tables name it: a sampler class with some settings fixed."""

    name: str
    sampler: type[Sampler]
    label: str
    tuned: tuple[str, ...] = ()
    """Settings the step table gives per task (a tuned step size)."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Settings every run of the method has."""
    steps_factor: float = 1.0
    """The fraction of the tier's step count the method runs (DMAP (same): half)."""
    needs: frozenset[Need] = frozenset({Need.GRADIENTS})

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed", MappingProxyType(dict(self.fixed)))

    @property
    def class_path(self) -> str:
        return f"{self.sampler.__module__.rsplit('.', 1)[0]}.{self.sampler.__name__}"

    def unmet(self, operator: type | None, pixel_prior: bool = True) -> str | None:
        """Why the method is not defined for a task with this operator class and prior (None: it is)."""
        linear = not isinstance(operator, type) or issubclass(operator, LinearOperator)
        if Need.LINEAR_OPERATOR in self.needs and not linear:
            return f"{self.label} needs {Need.LINEAR_OPERATOR.value}; {operator.__name__} is not one"
        if Need.SVD in self.needs and isinstance(operator, type) and not has_svd(operator):
            return f"{self.label} needs {Need.SVD.value}; {operator.__name__} has none"
        if Need.PIXEL_PRIOR in self.needs and not pixel_prior:
            return f"{self.label} needs {Need.PIXEL_PRIOR.value}"
        return None

    def settings(self, num_steps: int, tuned: Mapping[str, Any]) -> dict[str, Any]:
        """The sampler's ``init_args`` at a tier's step count and a task's tuned settings."""
        return {"num_steps": max(1, int(num_steps * self.steps_factor)), **tuned, **self.fixed}


SPECTRAL = frozenset({Need.LINEAR_OPERATOR, Need.SVD, Need.PIXEL_PRIOR})
"""What the methods working in the operator's SVD need (no gradients through the network)."""
DAPS_FIXED = {"langevin_steps": 20, "ode_steps": 2, "tau": 0.01, "lr_min_ratio": 0.01}
RESAMPLE_AS_THE_PAPER = {  # the paper's research code (eqs. 37-39): see configs/samplers/resample.yaml
    "every": 0.1,
    "until": 0.2,
    "space": "latent",
    "optimizer": "adamw",
    "lr": 5.0e-3,
    "max_iters": 200,
    "tolerance": 1.0e-6,
}
_LISTED = (
    Method("ancestral", Ancestral, "Ancestral", needs=frozenset()),
    Method("dps", DPS, "DPS", ("zeta",)),
    Method("dps_ddim", DPS, "DPS (DDIM)", ("zeta",), {"eta": 0.0}),
    Method("dps_scaled", DPS, "DPS, step ∝ σ² − σ'²", ("zeta",), {"step_scaling": "noise_level"}),
    Method("dsg", DSG, "DSG", ("guidance_rate",)),
    Method("dmap_full", DMAP, "DMAP (full)", ("zeta",), {"ascent_steps": 3}),
    Method("dmap_same", DMAP, "DMAP (same)", ("zeta",), {"ascent_steps": 2}, steps_factor=0.5),
    Method(
        "dmap_full_scaled",
        DMAP,
        "DMAP (full), step ∝ σ² − σ'²",
        ("zeta",),
        {"ascent_steps": 3, "step_scaling": "noise_level"},
    ),
    # gamma: the paper's gluing weight, not tuned (only each method's step size is)
    Method("psld", PSLD, "PSLD", ("zeta",), {"gamma": 0.002}, needs=frozenset({Need.LINEAR_OPERATOR, Need.GRADIENTS})),
    Method("freedom", FreeDoM, "FreeDoM", ("zeta",), {"repeats": 2, "travel": [0.05, 0.1]}),
    Method("resample", ReSample, "ReSample", ("zeta",), RESAMPLE_AS_THE_PAPER),
    # eta 0.85, eta_b 1: the paper's defaults; nothing tuned (sigma_y is the measurement's)
    Method("ddrm", DDRM, "DDRM", (), {"eta": 0.85, "eta_b": 1.0}, needs=SPECTRAL),
    # zeta (the noise share of each step) tuned: on noise-free measurements lambda has no effect (the
    # noise floor makes the data step a hard constraint; scripts/tune_digits.py found lambda 1-8 equal),
    # so it stays at DeepInverse's default 7. Closed-form prox where A has an SVD, an iterative one
    # (gradients through the operator and decoder only) elsewhere: defined everywhere
    Method("diffpir", DiffPIR, "DiffPIR", ("zeta",), {"lambda_": 7.0}, needs=frozenset()),
    # zeta: the guidance weight on the paper's likelihood (1 = eq. 8 as it stands), tuned as a step size
    Method("pigdm", PiGDM, "ΠGDM", ("zeta",), needs=SPECTRAL | {Need.GRADIENTS}),
    # lr 0.5: the official runs' Adam step; gradients through the operator and decoder, not the network
    Method("reddiff", REDDiff, "RED-diff", ("lambda_",), {"lr": 0.5}, needs=frozenset()),
    # 2 ODE steps per level: 2 network evaluations a step, as DPS's forward and backward pass; 20
    # Langevin steps (the official 100 at 5 times the cost); on a latent prior it is LatentDAPS
    Method("daps", DAPS, "DAPS", ("langevin_lr",), DAPS_FIXED, needs=frozenset()),
)
METHODS: Mapping[str, Method] = MappingProxyType({m.name: m for m in _LISTED})
"""Every method, by the name configs and step tables use."""
TABLE4 = ("dps", "psld", "resample", "freedom", "dsg", "dmap_same", "dmap_full")
"""The methods of the paper's Table 4, in its order (the results' and the benchmark's rows)."""
NEWER = ("ddrm", "diffpir", "pigdm", "reddiff", "daps")
"""The field's solvers that came after the paper's baselines, each with a likelihood step of its own."""


def method(name: str) -> Method:
    """The registry's entry for ``name``; a KeyError naming the known ones otherwise."""
    if name not in METHODS:
        raise KeyError(f"no method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]
