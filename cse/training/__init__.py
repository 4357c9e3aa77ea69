"""Training: the CSE (a ControlNet beside a frozen prior), a diffusion prior from scratch (pixel or
latent) and its autoencoder, and the small classifier whose features serve FID/KID on digits.
``python -m cse fit --config ...``; one trainer per module, their shared pieces in ``common``.

Every random draw of training is seeded by (seed, epoch, sample id) — timesteps, diffusion noise,
measurement noise, latent samples and augmentation — so a run resumed mid-epoch continues exactly
as an uninterrupted one (the data loader's position is saved in the checkpoint, see cse.data).
"""

from cse.training.autoencoder import AutoencoderModule
from cse.training.classifier import ClassifierModule
from cse.training.common import generators, seeded_loss, skips_empty_batches
from cse.training.cse_module import CSEModule
from cse.training.exports import ExportsWhenDone
from cse.training.prior import PriorModule, load_vae

__all__ = [
    "AutoencoderModule",
    "CSEModule",
    "ClassifierModule",
    "ExportsWhenDone",
    "PriorModule",
    "generators",
    "load_vae",
    "seeded_loss",
    "skips_empty_batches",
]
