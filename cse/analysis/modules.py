"""The paper's Observations I and II as predict-time Lightning modules: ``python -m cse predict``
with a task file, an observation file and the task's ``reference.yaml`` (a CSE trained on the
full training split, attached to the prior), e.g.

    python -m cse predict --config configs/digits/sr4/task.yaml \\
        --config configs/observations/score_error.yaml --config configs/digits/sr4/reference.yaml

On a Gaussian-mixture prior the reference is the exact posterior instead. Records are written by
:class:`cse.callbacks.AnalysisWriter` (one line per image, resumable, DDP-ready), which ends with
``summary.json`` and ``plot.png``. Observation III (diversity) is a restoration with several samples
per image (``configs/observations/diversity.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from cse.analysis.scores import score_errors, score_means
from cse.operators import GaussianNoise, MatrixOperator, Measurement
from cse.priors import GaussianMixturePrior, Prior
from cse.records import Batch, is_empty
from cse.samplers.common import Denoiser, measurement_residual
from cse.seeding import PerSampleNoise, seed_from_key

matplotlib.use("Agg")


class ObservationModule(LightningModule):
    """What both observations share: the prior (with its reference CSE attached, or a Gaussian
    mixture), the measurement, the step sizes zeta at which DPS's implied score is probed, a seed."""

    def __init__(self, prior: Prior, measurement: Measurement, zetas: list[float], seed: int = 0) -> None:
        super().__init__()
        prior.check_measurement(measurement.describe())
        self.prior, self.measurement, self.zetas, self.seed = prior, measurement, list(zetas), seed

    def settings(self) -> dict:
        return {
            "observation": type(self).__name__,
            "prior": self.prior.describe(),
            "measurement": repr(self.measurement),
            "zetas": self.zetas,
            "seed": self.seed,
        }

    def denoisers(self, y: Tensor, control: Tensor, operator) -> tuple[Denoiser, Denoiser]:
        """The unconditional denoiser and the reference (conditional) one for measurements ``y``."""
        prior = self.prior
        if prior.has_cse:  # the CSE off, and on
            return prior.denoise, prior.conditioned(control).denoise
        if isinstance(prior, GaussianMixturePrior):
            noise = self.measurement.noise
            if not isinstance(operator, MatrixOperator) or not isinstance(noise, GaussianNoise):
                raise ValueError("the exact reference needs a MatrixOperator and GaussianNoise")
            return prior.denoise, prior.posterior(operator.A, y, noise.std).denoise
        raise ValueError(
            "the reference is a CSE attached to the prior (a task's reference.yaml: a CSE trained on the full "
            "training split), or the exact posterior of a GaussianMixturePrior"
        )

    def problem(self, batch: Batch, repeat: int = 1):
        """``y`` (each image's ``repeat`` times), the two denoisers, the residual and the state's shape.
        Measured as a restoration measures it (the same seeds), so both see the same ``y``."""
        images = batch["image"].repeat_interleave(repeat, 0)
        keys = [key for key in batch["key"] for _ in range(repeat)]
        y, measurement = self.measurement.measure_keys(images, keys, str(self.seed))
        uncond, reference = self.denoisers(y, measurement.lift(y), measurement.operator)
        residual = measurement_residual(self.prior, measurement.operator, y)
        return y, uncond, reference, residual, self.prior.state_shape(images.shape)


class ScoreErrorModule(ObservationModule):
    """Observation I (the paper's Fig. 1 and Table 1): along the reference's own trajectory, at every
    step, how far the unconditional score and DPS's implied score at each zeta are from the
    reference's. Two network evaluations per step (one back-propagated), whatever the zetas."""

    def __init__(
        self, prior: Prior, measurement: Measurement, zetas: list[float], num_steps: int = 50, seed: int = 0
    ) -> None:
        super().__init__(prior, measurement, zetas, seed)
        self.num_steps = num_steps

    def settings(self) -> dict:
        return {**super().settings(), "num_steps": self.num_steps}

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        if is_empty(batch):
            return []
        with torch.inference_mode(False):
            y, uncond, reference, residual, shape = self.problem({**batch, "image": batch["image"].clone()})
            seeds = [seed_from_key(k, f"observation:{self.seed}") for k in batch["key"]]
            noise = PerSampleNoise(seeds, shape, like=y)
            curves = score_errors(
                uncond, reference, residual, self.prior.schedule.sigmas(self.num_steps).tolist(), noise, self.zetas
            )
        sigma = curves.pop("sigma").tolist()
        return [
            {"key": key, "sigma": sigma, **{name: values[:, i].tolist() for name, values in curves.items()}}
            for i, key in enumerate(batch["key"])
        ]

    @staticmethod
    def summarise(rows: list[dict]) -> dict:
        """Mean and std over images of every curve, per step."""
        summary = {"count": len(rows), "sigma": rows[0]["sigma"] if rows else []}
        for name in [n for n in (rows[0] if rows else {}) if n not in ("key", "sigma")]:
            values = torch.tensor([row[name] for row in rows], dtype=torch.float64)
            summary[name] = {"mean": values.mean(0).tolist(), "std": values.std(0).tolist() if len(rows) > 1 else None}
        return summary

    @staticmethod
    def plot(summary: dict, folder: Path) -> None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, curve in summary.items():
            if not isinstance(curve, dict):
                continue
            label, style = {"uncond": ("unconditional", "k--"), "reference_norm": ("‖s_ref‖ (scale)", "k:")}.get(
                name, (f"DPS, ζ = {name[4:]}", "-")
            )
            ax.loglog(summary["sigma"], curve["mean"], style, label=label)
        ax.invert_xaxis()
        ax.set_xlabel("σ (sampling runs from left to right)")
        ax.set_ylabel("‖s − s_ref‖ (mean over images)")
        ax.set_title(f"score error along the reference's trajectory ({summary['count']} images)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "plot.png", dpi=110)
        plt.close(fig)


class ScoreMeanModule(ObservationModule):
    """Observation II (the paper's Table 2): at the first step, over ``draws`` independent x_T for
    each measurement (drawn anew for every draw), ``|E[s]|`` of the unconditional, the reference and
    DPS's implied score at each zeta, beside the value pure Monte-Carlo noise would give."""

    def __init__(
        self,
        prior: Prior,
        measurement: Measurement,
        zetas: list[float],
        draws: int = 64,
        num_steps: int = 50,
        seed: int = 0,
    ) -> None:
        super().__init__(prior, measurement, zetas, seed)
        self.draws, self.num_steps = draws, num_steps

    def settings(self) -> dict:
        return {**super().settings(), "draws": self.draws, "num_steps": self.num_steps}

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict]:
        rows = []
        sigmas = self.prior.schedule.sigmas(self.num_steps).tolist()
        for i, key in enumerate(batch["key"]):
            one = {"key": [key], "image": batch["image"][i : i + 1].clone()}
            with torch.inference_mode(False):
                y, uncond, reference, residual, shape = self.problem(one, repeat=self.draws)
                seeds = [seed_from_key(key, f"observation:{self.seed}:{j}") for j in range(self.draws)]
                u = sigmas[0] * PerSampleNoise(seeds, shape, like=y)()
                rows.append(
                    {"key": key, **score_means(uncond, reference, residual, sigmas[0], sigmas[1], u, self.zetas)}
                )
        return rows

    @staticmethod
    def summarise(rows: list[dict]) -> dict:
        """Per score: the mean over measurements of |E[s]| and of its noise floor."""
        names = [n for n in (rows[0] if rows else {}) if n != "key"]
        summary = {"count": len(rows)}
        for name in names:
            summary[name] = {k: sum(row[name][k] for row in rows) / len(rows) for k in ("abs_mean", "floor")}
        return summary

    @staticmethod
    def plot(summary: dict, folder: Path) -> None:
        (folder / "table.md").write_text(
            "| score | mean over measurements of abs(E[s]) | noise floor |\n|---|---|---|\n"
            + "".join(
                f"| {name} | {value['abs_mean']:.4g} | {value['floor']:.4g} |\n"
                for name, value in summary.items()
                if isinstance(value, dict)
            )
        )
        (folder / "plot.png").unlink(missing_ok=True)  # a table, not a plot
