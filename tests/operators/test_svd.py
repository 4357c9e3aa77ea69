"""The SVDs of the linear operators (cse.operators.svd): A = U S V^T exactly, and the proximal solve."""

import pytest
import torch

from cse.operators import BoxInpainting, Convolution, GaussianBlur, MatrixOperator, NonlinearBlur, SuperResolution
from cse.operators.svd import conjugate_gradients, has_svd, solve_prox, svd_of

pytestmark = pytest.mark.usefixtures("float64_default")

OPERATORS = {
    "sr4": (SuperResolution(4), (2, 3, 16, 16)),
    "sr2-rect": (SuperResolution(2), (2, 1, 8, 12)),
    "gblur": (GaussianBlur(13, 1.5), (2, 3, 16, 16)),
    "gblur-rect": (GaussianBlur(61, 3.0), (2, 1, 20, 28)),
    "inpaint": (BoxInpainting((8, 16)), (2, 1, 16, 16)),
    "matrix-wide": (MatrixOperator(torch.randn(6, 16, generator=torch.Generator().manual_seed(0))), (2, 16)),
    "matrix-tall": (MatrixOperator(torch.randn(20, 16, generator=torch.Generator().manual_seed(1))), (2, 16)),
}


@pytest.mark.parametrize("name", list(OPERATORS))
def test_the_svd_reconstructs_a_and_its_adjoint(name):
    operator, shape = OPERATORS[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randn(*operator(x).shape, generator=g, dtype=torch.float64)
    svd = svd_of(operator, x)
    torch.testing.assert_close(svd.forward(x), operator(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(svd.adjoint(y, x), operator.adjoint(y), rtol=0, atol=1e-5)
    torch.testing.assert_close(svd.v(svd.vt(x)), x, rtol=0, atol=1e-10)  # V is orthogonal
    assert (svd.singulars(x) >= 0).all()


def test_operators_without_an_svd_are_refused_clearly():
    x = torch.zeros(1, 1, 16, 16)
    assert not has_svd(NonlinearBlur)
    with pytest.raises(TypeError, match="NonlinearBlur has no SVD"):
        svd_of(NonlinearBlur(random_weights=True), x)
    not_separable = Convolution(torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]))
    with pytest.raises(TypeError, match="not separable"):
        svd_of(not_separable, x)


@pytest.mark.parametrize("name", ["sr4", "gblur", "inpaint", "matrix-wide"])
def test_solve_prox_solves_the_normal_equations(name):
    operator, shape = OPERATORS[name]
    g = torch.Generator().manual_seed(4)
    rhs = torch.randn(*shape, generator=g, dtype=torch.float64)
    rho = torch.tensor([0.5, 2.0])
    x = solve_prox(operator, rhs, rho)
    back = operator.adjoint(operator(x)) + rho.reshape(-1, *[1] * (x.ndim - 1)) * x
    torch.testing.assert_close(back, rhs, rtol=0, atol=1e-8)


def test_conjugate_gradients_is_the_fallback_and_per_sample():
    operator = Convolution(torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]) / 5)
    rhs = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    x = solve_prox(operator, rhs, 0.3, cg_steps=100)
    torch.testing.assert_close(operator.adjoint(operator(x)) + 0.3 * x, rhs, rtol=0, atol=1e-8)
    alone = conjugate_gradients(lambda v: operator.adjoint(operator(v)) + 0.3 * v, rhs[1:2], 100)
    torch.testing.assert_close(alone, x[1:2], rtol=0, atol=1e-10)


def test_the_pseudo_inverse_of_a_noise_free_blur_stays_on_the_image_scale():
    """The digits' 13-px blur has singular values down to ~1e-9: S^+ of a measurement known to float32
    precision (perturbed here by 1e-6) is hundreds. To the numerical rank (RANK_FLOOR), A^+ y is x's
    measured part, to that precision over the kept singular values."""
    from cse.operators.svd import RANK_FLOOR, spectral_measurement

    g = torch.Generator().manual_seed(0)
    op, x = GaussianBlur(kernel_size=13, std=1.5), torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    y = op(x) + 1e-6 * torch.randn(x.shape, generator=g)
    svd = svd_of(op, x)
    s = svd.singulars(x)
    assert s.min() < 1e-6 * s.max()  # the problem the floor is for
    yb, kept = spectral_measurement(svd, y, x)
    assert torch.equal(kept > 0, s >= RANK_FLOOR * s.max()) and (kept > 0).any()
    recovered = svd.v(yb)  # A^+ y, as DDRM and RED-diff's start use it
    measured_part = svd.v(torch.where(kept > 0, svd.vt(x), 0.0))
    assert torch.allclose(recovered, measured_part, atol=1e-2)
    assert svd.v(svd.ut(y, x) / s).abs().max() > 100  # without the floor
