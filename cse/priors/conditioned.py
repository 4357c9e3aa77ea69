"""A CSE bound to its prior, and the record that says which measurement a CSE was trained for.

``prior.conditioned(control)`` wraps the prior so that ``denoise(u, sigma)`` runs with the CSE's
control image (k-diffusion's ``make_cond_model_fn``: conditioning wraps the denoiser, the sampler
loop does not change). A CSE only means something for the measurement it was trained on: the
export writes that measurement into ``cse.json`` beside the ControlNet's weights, and a prior
loading the folder refuses a run whose operator differs.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from cse.errors import CSEMismatchError
from cse.priors.base import Prior, PriorView

RECORD_FILE = "cse.json"
"""Beside a CSE's ``config.json``: ``{"measurement": Measurement.describe()}`` of its training."""


class ConditionedPrior(PriorView):
    """``prior`` with its CSE's control image bound: ``denoise(u, sigma)`` is the CSE-conditioned
    denoiser ``prior.denoise_controlled(u, sigma, control)``; everything else is ``prior``'s.

    Args:
        prior: a prior with a CSE attached and ``denoise_controlled(u, sigma, control)`` (e.g. a
            ``DiffusersPrior`` with a ControlNet).
        control: ``[B, C, H, W]`` control images ``measurement.lift(y)``, one per sample of the
            batches ``denoise`` will see.
    """

    def __init__(self, prior: Prior, control: Tensor) -> None:
        super().__init__(prior)
        self.register_buffer("control", control, persistent=False)

    def denoise(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        if u.shape[0] != self.control.shape[0]:
            raise ValueError(
                f"the CSE's control image is bound for {self.control.shape[0]} samples, got a batch of {u.shape[0]}"
            )
        return self.prior.denoise_controlled(u, sigma, self.control)

    @property
    def has_cse(self) -> bool:
        return True

    def conditioned(self, control: Tensor) -> Prior:
        """The underlying prior with ``control`` bound instead."""
        return self.prior.conditioned(control)


def write_cse_record(folder: str | os.PathLike, measurement: dict) -> Path:
    """Write ``cse.json`` into a CSE's folder: the ``describe()`` of the measurement it was trained with."""
    path = Path(folder) / RECORD_FILE
    path.write_text(json.dumps({"measurement": measurement}, indent=2) + "\n")
    return path


def read_cse_record(folder: str | os.PathLike) -> dict | None:
    """The measurement a CSE folder records (see :func:`write_cse_record`); None without a record."""
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text())["measurement"] if path.is_file() else None


def check_cse_record(record: dict | None, folder: str, measurement: dict) -> None:
    """Refuse a run's ``measurement`` (its ``describe()``) whose operator is not the one the CSE in
    ``folder`` was trained with (:class:`CSEMismatchError`); warn when only the noise differs, or
    when there is no record to check."""
    if record is None:
        warnings.warn(
            f"the CSE {folder} has no {RECORD_FILE} recording the measurement it was trained with, so it cannot "
            "be checked against this run's",
            stacklevel=3,
        )
        return
    trained, run = jsonable(record), jsonable(measurement)
    if trained["operator"] != run["operator"]:
        raise CSEMismatchError(
            f"{folder} was trained with {spelled(trained['operator'])}; this run's operator is "
            f"{spelled(run['operator'])}: attach the CSE trained for this task"
        )
    if trained.get("noise") != run.get("noise"):
        warnings.warn(
            f"{folder} was trained with noise {spelled(trained.get('noise'))}; this run's noise is "
            f"{spelled(run.get('noise'))}",
            stacklevel=3,
        )


def jsonable(description: dict) -> dict:
    """As it reads back from JSON (tuples become lists), so that a record and a live run compare."""
    return json.loads(json.dumps(description))


def spelled(description: dict | None) -> str:
    """``{"class": "SuperResolution", "factor": 4}`` -> ``SuperResolution(factor=4)``."""
    if description is None:
        return "unknown"
    settings = ", ".join(f"{k}={spelled_value(v)}" for k, v in description.items() if k != "class")
    return f"{description.get('class', '?')}({settings})"


def spelled_value(value: object) -> str:
    """Lists as tuples, as a config would give them."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"({', '.join(map(str, value))})"
    return str(value)
