"""The noise estimators against noise of known std (cse.operators.noise_estimate)."""

import pytest
import torch

from cse.operators.noise_estimate import ESTIMATORS, immerkaer_sigma


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("std", [0.02, 0.1])
def test_white_noise_on_a_smooth_image_is_measured_within_five_percent(name, std):
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-1, 1, 96).expand(2, 3, 96, 96)  # planar content: invisible to both estimators
    noisy = ramp + std * torch.randn(ramp.shape, generator=generator)
    estimate = ESTIMATORS[name](noisy)
    assert estimate.shape == (2,)
    assert torch.allclose(estimate, torch.full((2,), std), rtol=0.05)


def test_each_image_is_estimated_on_its_own():
    noisy = torch.cat([0.01 * torch.randn(1, 1, 32, 32), 0.2 * torch.randn(1, 1, 32, 32)])
    alone = immerkaer_sigma(noisy[1:])
    assert torch.allclose(immerkaer_sigma(noisy)[1:], alone) and immerkaer_sigma(noisy)[0] < 0.05


def test_too_small_a_measurement_is_refused():
    with pytest.raises(ValueError, match="at least 3x3"):
        immerkaer_sigma(torch.zeros(1, 1, 2, 8))
