"""Restore measurements of an exact Gaussian-mixture prior with DMAP and DPS; compare with the exact posterior."""

import torch

from cse.operators import GaussianNoise, MatrixOperator, Measurement
from cse.priors import GaussianMixturePrior
from cse.samplers import DMAP, DPS, Ancestral
from cse.seeding import generators_from_seeds

g = torch.Generator().manual_seed(0)
prior = GaussianMixturePrior(2 * torch.randn(3, 16, generator=g), std=0.5)  # exact 16-D prior, 3 modes
A = MatrixOperator(torch.randn(6, 16, generator=g) / 4)  # 6 linear measurements
measurement = Measurement(A, GaussianNoise(0.05))  # y = A x + 0.05 n
x = prior.sample(8, g)
y = measurement(x, generators_from_seeds(range(100, 108)))  # one noise stream per image

seeds = range(8)  # one seed per sample
x_dmap = DMAP(zeta=0.5, num_steps=100, ascent_steps=3)(prior, A, y, seeds)
x_dps = DPS(zeta=0.5, num_steps=100)(prior, A, y, seeds)
x_exact = Ancestral(100)(prior.posterior(A.A, y, noise_std=0.05), None, None, seeds)  # the exact CSE
for name, x_hat in [("DMAP", x_dmap), ("DPS", x_dps), ("exact posterior", x_exact)]:
    print(f"{name:>16}: residual {(A(x_hat) - y).norm(dim=1).mean():.3f}, error {(x_hat - x).norm(dim=1).mean():.3f}")
