"""Seconds per network evaluation: our DPS against DeepInverse's DPS on the same network.

Both run DPS with the shipped digits prior's UNet as the denoiser, on the same SR x4 measurements,
with the same number of steps and the same batch; both evaluate the network once per step and
back-propagate through it. Only cost is compared (the two differ in schedule and step size).
DeepInverse is an optional extra, not a dependency of cse:

    pip install deepinv==0.5.0 -c constraints-cpu.txt
    python scripts/compare_deepinv.py --batch 32 --steps 50

DeepInverse's denoisers take images on [0, 1] with sigma on that scale; the wrapper converts at
the boundary (x on [-1, 1] is 2x - 1, its sigma 2 sigma).
"""

import argparse
import time
from pathlib import Path

import torch

import cse  # noqa: F401  (before deepinv imports torchvision)
from cse.operators import SuperResolution
from cse.priors import CountingPrior, DiffusersPrior
from cse.samplers import DPS

ROOT = Path(__file__).resolve().parents[1]


class OurDenoiser(torch.nn.Module):
    """The prior's denoiser as DeepInverse sees one: ``D(x, sigma)`` on [0, 1]."""

    def __init__(self, prior: CountingPrior) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype).flatten()
        sigma = sigma.expand(x.shape[0]) if sigma.numel() == 1 else sigma
        return (self.prior.denoise(2 * x - 1, 2 * sigma) + 1) / 2


def main() -> None:
    import deepinv

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    args = parser.parse_args()
    torch.manual_seed(0)
    prior = CountingPrior(DiffusersPrior.from_pretrained(ROOT / "checkpoints/digits/prior"))
    A = SuperResolution(4)
    x = torch.rand(args.batch, 3, 16, 16) * 2 - 1
    y = A(x)

    start = time.perf_counter()
    DPS(1.0, args.steps)(prior, A, y, seeds=range(args.batch))
    ours = (time.perf_counter() - start) / prior.evaluations

    prior.evaluations = 0
    physics = deepinv.physics.LinearPhysics(
        A=lambda v: (A(2 * v - 1) + 1) / 2, A_adjoint=lambda w: (A.adjoint(2 * w - 1) + 1) / 2
    )
    theirs_dps = deepinv.sampling.DPS(OurDenoiser(prior), schedule="ve", num_steps=args.steps, dtype=torch.float32)
    start = time.perf_counter()
    theirs_dps(physics.A((x + 1) / 2), physics)
    theirs = (time.perf_counter() - start) / prior.evaluations

    print(f"batch {args.batch}, {args.steps} steps, best of {args.repeats}, per network evaluation (one image):")
    print(f"  cse DPS:         {1e3 * ours:.2f} ms")
    print(f"  DeepInverse DPS: {1e3 * theirs:.2f} ms   (ratio cse / DeepInverse: {ours / theirs:.2f})")


if __name__ == "__main__":
    main()
