"""The DeepInverse bridge (cse.bridges.deepinv): operators both ways, the SVD physics, the denoiser.

Skipped without deepinv (the ``compare`` extra); CI does not install it.
"""

import pytest
import torch

import cse  # noqa: F401  (before deepinv imports torchvision)

dinv = pytest.importorskip("deepinv")

from cse.bridges.deepinv import (  # noqa: E402
    SVDPhysics,
    from_physics,
    measurement_from_unit,
    measurement_to_unit,
    to_denoiser,
    to_physics,
)
from cse.operators import BoxInpainting, GaussianBlur, MatrixOperator, SaturatedBlur, SuperResolution  # noqa: E402
from cse.priors import DiffusersPrior  # noqa: E402

IMAGE = (3, 16, 16)
OPERATORS = {
    "sr4": (lambda: SuperResolution(4), IMAGE),
    "gblur": (lambda: GaussianBlur(9, 1.5), IMAGE),
    "inpaint": (lambda: BoxInpainting(6), IMAGE),
    "matrix": (lambda: MatrixOperator(torch.randn(5, 12, generator=torch.Generator().manual_seed(1))), (12,)),
}


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.double() * b.double()).flatten(1).sum(1)


@pytest.fixture(params=list(OPERATORS))
def operator_case(request):
    make, shape = OPERATORS[request.param]
    return make(), shape


def test_to_physics_measures_the_converted_image(operator_case):
    operator, shape = operator_case
    x = torch.rand(4, *shape) * 2 - 1
    physics = to_physics(operator)
    y01 = physics.A((x + 1) / 2)
    torch.testing.assert_close(y01, measurement_to_unit(operator, operator(x), shape), atol=1e-6, rtol=0)
    torch.testing.assert_close(measurement_from_unit(operator, y01, shape), operator(x), atol=1e-6, rtol=0)


def test_to_physics_adjoint_is_exact(operator_case):
    operator, shape = operator_case
    physics = to_physics(operator)
    x = torch.rand(3, *shape)
    y = torch.randn_like(physics.A(x))
    torch.testing.assert_close(inner(physics.A(x), y), inner(x, physics.A_adjoint(y)), atol=1e-5, rtol=1e-5)


def test_round_trip_equals_the_operator(operator_case):
    operator, shape = operator_case
    back = from_physics(to_physics(operator))
    x = torch.rand(3, *shape) * 2 - 1
    y = torch.randn_like(operator(x))
    torch.testing.assert_close(back(x), operator(x), atol=0, rtol=0)
    torch.testing.assert_close(back.adjoint(y), operator.adjoint(y), atol=0, rtol=0)


def test_svd_physics_is_the_same_matrix(operator_case):
    operator, shape = operator_case
    physics = SVDPhysics(operator, shape)
    x = torch.rand(3, *shape)
    y = torch.randn_like(operator(x))
    torch.testing.assert_close(physics.A(x), operator(x), atol=2e-5, rtol=0)
    torch.testing.assert_close(physics.A_adjoint(y), operator.adjoint(y), atol=2e-5, rtol=0)
    torch.testing.assert_close(physics.V_adjoint(physics.V(x)), x, atol=2e-5, rtol=0)  # V orthogonal
    assert physics.mask.shape == (1, *shape)


def test_svd_physics_refuses_more_measurements_than_pixels():
    with pytest.raises(ValueError, match="at most as many measurements"):
        SVDPhysics(MatrixOperator(torch.randn(9, 4)), (4,))


@pytest.mark.parametrize(
    "physics",
    [
        lambda: dinv.physics.BlurFFT(img_size=IMAGE, filter=dinv.physics.functional.blur.gaussian_blur(sigma=1.0)),
        lambda: dinv.physics.Inpainting(img_size=IMAGE, mask=0.6),
        lambda: dinv.physics.Downsampling(img_size=IMAGE, factor=2, filter="bicubic"),
    ],
    ids=["blur_fft", "inpainting", "downsampling"],
)
def test_from_physics_keeps_deepinv_operators_and_their_adjoints(physics):
    torch.manual_seed(0)
    physics = physics()
    operator = from_physics(physics)
    x01 = torch.rand(3, *IMAGE)
    y01 = physics.A(x01)
    torch.testing.assert_close(measurement_from_unit(operator, y01, IMAGE), operator(2 * x01 - 1), atol=1e-5, rtol=0)
    y = torch.randn_like(y01)
    torch.testing.assert_close(inner(operator(x01), y), inner(x01, operator.adjoint(y)), atol=1e-4, rtol=1e-5)


def test_from_physics_refuses_nonlinear_physics():
    with pytest.raises(TypeError, match="LinearPhysics"):
        from_physics(dinv.physics.Physics(A=lambda x: x**2))


def test_nonlinear_operator_becomes_forward_only_physics():
    operator = SaturatedBlur().bind([0, 1], (2, *IMAGE))
    physics = to_physics(operator)
    assert not isinstance(physics, dinv.physics.LinearPhysics)
    x = torch.rand(2, *IMAGE) * 2 - 1
    torch.testing.assert_close(physics.A((x + 1) / 2), (operator(x) + 1) / 2)


def test_noise_std_is_halved_on_the_unit_scale():
    assert float(to_physics(SuperResolution(4), noise_std=0.1).noise_model.sigma) == pytest.approx(0.05)


@pytest.fixture(scope="module")
def pixel_prior(tiny_pixel_v):
    return DiffusersPrior.from_pretrained(tiny_pixel_v)


def test_denoiser_is_the_prior_denoiser_after_conversion(pixel_prior):
    denoiser = to_denoiser(pixel_prior)
    assert isinstance(denoiser, dinv.models.Denoiser)
    u = torch.randn(3, *IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(2 * denoiser((u + 1) / 2, 0.4) - 1, pixel_prior.denoise(u, 0.8), atol=1e-5, rtol=0)
        sigmas = torch.tensor([0.1, 0.5, 2.0])  # one per image, on [0, 1]
        batched = 2 * denoiser((u + 1) / 2, sigmas) - 1
        one_by_one = torch.cat([pixel_prior.denoise(u[i : i + 1], 2 * float(s)) for i, s in enumerate(sigmas)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)


def test_deepinv_ddrm_and_diffpir_run_on_the_bridge(pixel_prior):
    import numpy as np

    operator = SuperResolution(4)
    x = torch.rand(2, *IMAGE) * 2 - 1
    y01 = measurement_to_unit(operator, operator(x), IMAGE)
    denoiser = to_denoiser(pixel_prior)
    ddrm = dinv.sampling.DDRM(denoiser, sigmas=np.linspace(1, 0, 4))
    diffpir = dinv.sampling.DiffPIR(denoiser, dinv.optim.data_fidelity.L2(), max_iter=3)
    for out in (ddrm(y01, SVDPhysics(operator, IMAGE)), diffpir(y01, SVDPhysics(operator, IMAGE, noise_std=0.02))):
        assert out.shape == x.shape and out.isfinite().all()


def test_deepinv_matlab_downsampling_is_our_super_resolution():
    ours, theirs = SuperResolution(4), from_physics(dinv.physics.DownsamplingMatlab(factor=4, img_size=IMAGE))
    x = torch.rand(3, *IMAGE) * 2 - 1
    torch.testing.assert_close(theirs(x), ours(x), atol=1e-6, rtol=0)
    y = torch.randn_like(ours(x))
    torch.testing.assert_close(theirs.adjoint(y), ours.adjoint(y), atol=1e-5, rtol=0)
