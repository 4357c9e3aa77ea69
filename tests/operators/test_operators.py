"""Property tests over every operator: shapes, adjointness, dtype/device, batch independence."""

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from cse.operators import (
    BoxInpainting,
    Convolution,
    GaussianBlur,
    GaussianNoise,
    MatrixOperator,
    Measurement,
    NonlinearBlur,
    PoissonNoise,
    SaturatedBlur,
    SuperResolution,
)
from cse.operators.blur import gaussian_kernel
from cse.operators.resize import imresize, resize_matrix
from cse.seeding import generators_from_seeds

# (operator factory, input shape, measurement shape)
OPERATORS = [
    pytest.param(lambda: MatrixOperator(torch.randn(5, 12)), (3, 12), (3, 5), id="matrix"),
    pytest.param(lambda: SuperResolution(4), (2, 3, 32, 32), (2, 3, 8, 8), id="sr4"),
    pytest.param(lambda: SuperResolution(8), (2, 3, 64, 48), (2, 3, 8, 6), id="sr8-rect"),
    pytest.param(lambda: GaussianBlur(61, 3.0), (2, 3, 40, 36), (2, 3, 40, 36), id="gblur-paper"),
    pytest.param(lambda: GaussianBlur(5, 0.8), (2, 1, 9, 11), (2, 1, 9, 11), id="gblur-small"),
    pytest.param(lambda: Convolution(torch.randn(5, 7)), (2, 3, 12, 10), (2, 3, 12, 10), id="conv-asymmetric"),
    pytest.param(lambda: BoxInpainting(8), (2, 3, 16, 20), (2, 3, 16, 20), id="inpaint"),
    pytest.param(lambda: BoxInpainting((8, 16)), (2, 3, 16, 16), (2, 3, 16, 16), id="inpaint-band"),
]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()


@pytest.mark.parametrize("make, x_shape, y_shape", OPERATORS)
def test_shapes_and_lift(make, x_shape, y_shape):
    A = make()
    x = torch.randn(x_shape)
    y = A(x)
    assert y.shape == y_shape
    assert A.lift(y).shape == x_shape


@pytest.mark.parametrize("make, x_shape, y_shape", OPERATORS)
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_adjointness(make, x_shape, y_shape, dtype, rtol):
    A = make()
    for _ in range(3):
        x, y = torch.randn(x_shape, dtype=dtype), torch.randn(y_shape, dtype=dtype)
        lhs, rhs = inner(A(x), y), inner(x, A.adjoint(y))
        assert torch.allclose(lhs, rhs, rtol=rtol, atol=0), (lhs.item(), rhs.item())


@pytest.mark.parametrize("make, x_shape, y_shape", OPERATORS)
def test_linearity(make, x_shape, y_shape):
    A = make()
    x1, x2 = torch.randn(x_shape, dtype=torch.float64), torch.randn(x_shape, dtype=torch.float64)
    assert torch.allclose(A(2 * x1 - 3 * x2), 2 * A(x1) - 3 * A(x2))


@pytest.mark.parametrize("make, x_shape, y_shape", OPERATORS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device(make, x_shape, y_shape, device, dtype):
    A = make().to(device)
    x = torch.randn(x_shape, dtype=dtype, device=device)
    for out in (A(x), A.adjoint(A(x)), A.lift(A(x))):
        assert out.dtype == dtype and out.device.type == device


@pytest.mark.parametrize("make, x_shape, y_shape", OPERATORS)
def test_batch_independence(make, x_shape, y_shape):
    A = make()
    x = torch.randn(x_shape)
    together = A(x)
    alone = torch.cat([A(x[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(together, alone)


@pytest.mark.parametrize("make, x_shape, y_shape", OPERATORS)
def test_differentiable(make, x_shape, y_shape):
    A = make()
    x = torch.randn(x_shape, requires_grad=True)
    (grad,) = torch.autograd.grad(A(x).square().sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_fixed_tensors_are_buffers():
    assert "kernel" in dict(GaussianBlur(9, 1.0).named_buffers())
    assert "A" in MatrixOperator(torch.randn(2, 3)).state_dict()


# -- against independent references -------------------------------------------------------------


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_sr_matches_reference_bicubic_away_from_borders(factor):
    """torch's antialiased bicubic (a = -0.5, PIL-style) equals MATLAB's imresize except at the
    borders, where MATLAB mirrors and PIL clips; the interior must agree to rounding."""
    x = torch.randn(1, 2, 16 * factor, 16 * factor, dtype=torch.float64)
    ours = SuperResolution(factor)(x)
    reference = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(ours[..., 2:-2, 2:-2], reference[..., 2:-2, 2:-2], atol=1e-12, rtol=0)


def test_sr_lifts():
    """ "bicubic" is exactly torch's bicubic up-sampling (Keys a = -0.75), unclamped, as the paper's
    research code makes it; "matlab" is MATLAB's bicubic (a = -0.5, torch's antialiased path away
    from the borders), clamped to [-1, 1]."""
    y = 1.5 * torch.randn(1, 1, 32, 32, dtype=torch.float64)
    torch_bicubic = F.interpolate(y, scale_factor=8, mode="bicubic", align_corners=False)
    torch.testing.assert_close(SuperResolution(8).lift(y), torch_bicubic, atol=0, rtol=0)
    assert SuperResolution(8).lift(y).abs().max() > 1
    matlab = SuperResolution(8, lift="matlab").lift(y)
    assert matlab.min() == -1 and matlab.max() == 1
    inside = F.interpolate(y, scale_factor=8, mode="bicubic", antialias=True, align_corners=False)[..., 16:-16, 16:-16]
    keep = inside.abs() < 1
    torch.testing.assert_close(matlab[..., 16:-16, 16:-16][keep], inside[keep], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="lift"):
        SuperResolution(8, lift="nearest")


def test_resize_rows_sum_to_one_and_identity_at_scale_one():
    assert np.allclose(resize_matrix(64, 8).sum(1), 1)
    assert np.allclose(resize_matrix(8, 64).sum(1), 1)
    assert np.allclose(resize_matrix(10, 10), np.eye(10))
    constant = torch.full((1, 1, 24, 24), 0.3, dtype=torch.float64)
    torch.testing.assert_close(imresize(constant, 3, 3), torch.full((1, 1, 3, 3), 0.3, dtype=torch.float64))


def test_gaussian_kernel_matches_scipy_filter_of_a_delta():
    """The paper builds its kernel as scipy.ndimage.gaussian_filter of a centred 61x61 delta."""
    delta = np.zeros((61, 61))
    delta[30, 30] = 1
    reference = scipy.ndimage.gaussian_filter(delta, sigma=3.0)
    ours = gaussian_kernel(61, 3.0).double().numpy()
    pad = (61 - ours.shape[0]) // 2
    assert np.abs(np.pad(ours, pad) - reference).max() < 1e-8


def test_gaussian_blur_equals_full_kernel_with_paper_padding():
    """Reflect-padding by 30 and correlating with the full 61x61 kernel, as the paper does."""
    delta = np.zeros((61, 61))
    delta[30, 30] = 1
    full = torch.from_numpy(scipy.ndimage.gaussian_filter(delta, sigma=3.0))
    x = torch.randn(1, 3, 48, 40, dtype=torch.float64)
    reference = F.conv2d(F.pad(x, (30, 30, 30, 30), mode="reflect"), full[None, None].expand(3, 1, -1, -1), groups=3)
    # the kernel buffer is float32, so agreement is to float32 precision
    torch.testing.assert_close(GaussianBlur(61, 3.0)(x), reference, atol=1e-6, rtol=0)


def test_inpainting_box_is_centred():
    mask = BoxInpainting(4).mask(torch.zeros(1, 1, 8, 10))
    assert mask.sum() == 80 - 16
    assert (mask[2:6, 3:7] == 0).all()
    band = BoxInpainting((8, 16)).mask(torch.zeros(1, 1, 16, 16))
    assert band.sum() == 128 and (band[4:12] == 0).all()  # half the image


# -- bad input -----------------------------------------------------------------------------------


def test_clear_errors_for_bad_shapes():
    with pytest.raises(ValueError, match="factor=8.*30x32"):
        SuperResolution(8)(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        SuperResolution(4)(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="size=128x128.* does not fit a 64x64"):
        BoxInpainting(128)(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="larger than 12"):
        GaussianBlur(61, 3.0)(torch.zeros(1, 3, 10, 10))
    with pytest.raises(ValueError, match="12 values per sample"):
        MatrixOperator(torch.randn(5, 12))(torch.zeros(2, 11))
    with pytest.raises(ValueError, match="odd"):
        GaussianBlur(60, 3.0)


# -- noise ---------------------------------------------------------------------------------------


def test_noise_is_per_sample_and_has_its_std():
    y = torch.zeros(4, 3, 64, 64)
    noisy = GaussianNoise(0.05)(y, generators_from_seeds([1, 2, 3, 4]))
    assert abs(noisy.std().item() - 0.05) < 2e-3
    alone = GaussianNoise(0.05)(y[2:3], generators_from_seeds([3]))
    torch.testing.assert_close(noisy[2:3], alone)
    assert GaussianNoise(0.0)(y, generators_from_seeds([1, 2, 3, 4])) is y


def test_poisson_noise_has_the_stated_mean_and_std_and_is_per_sample():
    y = torch.full((4, 1, 64, 64), 0.5)  # intensity 0.75 on [0, 1]
    noisy = PoissonNoise(photons=100)(y, generators_from_seeds([1, 2, 3, 4]))
    assert abs(noisy.mean().item() - 0.5) < 0.01
    assert abs(noisy.std().item() - 2 * (0.75 / 100) ** 0.5) < 0.005  # 0.173 on [-1, 1]
    alone = PoissonNoise(photons=100)(y[1:2], generators_from_seeds([2]))
    torch.testing.assert_close(noisy[1:2], alone)
    with pytest.raises(ValueError, match="photons"):
        PoissonNoise(0)


def test_a_measurement_is_noise_of_the_operator_and_lifts_through_it():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    A, noise = SuperResolution(4), GaussianNoise(0.1)
    measurement = Measurement(A, noise)
    y = measurement(x, generators_from_seeds([7, 8]))
    torch.testing.assert_close(y, noise(A(x), generators_from_seeds([7, 8])))
    torch.testing.assert_close(measurement.lift(y), A.lift(y))
    assert torch.equal(Measurement(A)(x, generators_from_seeds([7, 8])), A(x))  # noise-free by default
    assert "factor=4" in repr(measurement) and "std=0.1" in repr(measurement)


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_a_negative_or_nan_noise_level_is_rejected(bad):
    with pytest.raises(ValueError, match="noise std"):
        GaussianNoise(bad)


# -- nonlinear blurs: one kernel per image, drawn from its seed ----------------------------------

NONLINEAR = [
    pytest.param(
        lambda: NonlinearBlur(random_weights=True, width=8, front_blocks=1, back_blocks=1), 128, id="bkse-tiny"
    ),
    pytest.param(lambda: SaturatedBlur(), 16, id="saturated"),
]


@pytest.mark.parametrize("make, size", NONLINEAR)
def test_nonlinear_blurs_fix_one_kernel_per_image(make, size):
    A = make()
    x = torch.rand(3, 3, size, size) * 2 - 1
    with pytest.raises(ValueError, match="bind"):
        A(x)
    bound = A.bind([5, 6, 7], x.shape)
    y = bound(x)
    assert y.shape == x.shape and y.abs().max() <= 1 and bound.lift(y).shape == x.shape
    torch.testing.assert_close(A.bind([5, 6, 7], x.shape)(x), y)  # the same seeds, the same kernels
    torch.testing.assert_close(A.bind([6], x.shape)(x[1:2]), y[1:2])  # a sample's blur is its own
    assert not torch.allclose(A.bind([5, 9, 7], x.shape)(x)[1], y[1])
    torch.testing.assert_close(bound(x), y)  # the bound operator keeps its kernels between calls
    assert not torch.allclose(bound(0.5 * x), 0.5 * y, atol=1e-3)  # not linear
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(bound(xg).square().sum(), xg)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bound to 3 images"):
        bound(x[:2])


def test_a_measurement_binds_its_operator_per_image():
    measurement = Measurement(SaturatedBlur(), GaussianNoise(0.0))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    bound = measurement.bind([1, 2], x.shape)
    torch.testing.assert_close(bound(x, generators_from_seeds([0, 0])), bound.operator(x))
    assert Measurement(SuperResolution(2)).bind([1, 2], x.shape).operator.factor == 2  # deterministic: itself


def test_the_blur_kernel_network_loads_published_weights_by_name(tmp_path):
    from cse.operators.nonlinear_blur import KernelWizard, load_kernel_wizard

    with pytest.raises(FileNotFoundError, match=r"GOPRO_wVAE.pth.*blur-kernel-space-exploring"):
        NonlinearBlur(weights=str(tmp_path / "GOPRO_wVAE.pth"))
    state = KernelWizard().state_dict()
    assert sum(v.numel() for v in state.values()) == 23_662_531  # the published network without its encoder half
    assert {"feature_extractor.6.conv1.weight", "adapter.model.up.1.bias", "recon_trunk.28.weight"} <= set(state)
    published = {**state, "kernel_extractor.model.1.weight": torch.zeros(64, 128, 7, 7)}  # the half not used here
    torch.save(published, tmp_path / "GOPRO_wVAE.pth")
    loaded = load_kernel_wizard(str(tmp_path / "GOPRO_wVAE.pth"))
    torch.testing.assert_close(loaded.state_dict()["adapter.model.up.1.weight"], state["adapter.model.up.1.weight"])
    del published["recon_trunk.28.weight"]
    torch.save(published, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="recon_trunk.28.weight"):
        load_kernel_wizard(str(tmp_path / "broken.pth"))
