import pytest
import torch

from cse.operators import MatrixOperator
from cse.priors import GaussianMixturePrior


@pytest.fixture(scope="module")
def problem(float64_default):
    """A 3-mode 16-D mixture measured by 6 random linear measurements with noise std 0.05 (float64)."""
    g = torch.Generator().manual_seed(0)
    prior = GaussianMixturePrior(2 * torch.randn(3, 16, generator=g), std=0.5)
    A = MatrixOperator(torch.randn(6, 16, generator=g) / 4)
    x = prior.sample(32, g)
    y = A(x) + 0.05 * torch.randn(32, 6, generator=g)
    return prior, A, y
