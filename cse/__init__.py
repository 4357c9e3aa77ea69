"""cse: image inverse problems with diffusion priors and a conditional score estimator.

Implements Xu et al., "Rethinking Diffusion Posterior Sampling: From Conditional Score
Estimator to Maximizing a Posterior", ICLR 2025.
"""

from cse._torchvision_compat import ensure_torchvision_importable

ensure_torchvision_importable()

__version__ = "0.1.0"


def __getattr__(name: str):
    """``cse.Restorer`` (imported on first use: ``import cse`` stays light)."""
    if name == "Restorer":
        from cse.restorer import Restorer

        return Restorer
    raise AttributeError(f"module 'cse' has no attribute {name!r}")
