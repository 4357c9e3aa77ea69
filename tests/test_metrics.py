"""cse.metrics against hand-computed values on fixed tensors."""

import math

import numpy as np
import pytest
import torch

from cse.features import PixelFeatures
from cse.images import heat_map
from cse.metrics import LPIPS, diversity, feature_distances, psnr, ssim


def test_psnr_of_a_known_error():
    reference = torch.zeros(2, 3, 8, 8)
    x = reference + torch.tensor([0.2, 0.02]).reshape(2, 1, 1, 1)  # [0, 1] errors 0.1 and 0.01
    torch.testing.assert_close(psnr(x, reference), torch.tensor([20.0, 40.0]))


def test_ssim_is_one_for_identical_and_lower_for_noisy_images():
    reference = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(ssim(reference, reference), torch.ones(2))
    assert (ssim(reference + 0.3 * torch.randn_like(reference), reference) < 0.9).all()


def test_diversity_is_the_per_pixel_std_on_the_papers_scale():
    """Images on [-1, 1] (the paper's units, not [0, 1]), the std averaged over channels."""
    samples = torch.stack([torch.full((3, 2, 2), -1.0), torch.full((3, 2, 2), 1.0)])
    torch.testing.assert_close(diversity(samples), torch.full((2, 2), math.sqrt(2.0)))  # unbiased std of {-1, 1}
    channels = torch.zeros(2, 3, 1, 1)
    channels[1, 0] = 1.0  # only the first channel varies
    torch.testing.assert_close(diversity(channels), torch.full((1, 1), math.sqrt(0.5) / 3))


def test_heat_map_runs_black_to_white():
    image = heat_map(torch.tensor([[0.0, 1.0]]))
    assert image.tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_lpips_reads_alexnet_weights_from_a_local_file(tmp_path):
    from torchvision.models import alexnet

    with pytest.raises(FileNotFoundError, match=r"put alexnet-owt-7be5be79.pth at .*metric_weights_dir"):
        LPIPS(tmp_path)
    torch.save(alexnet().state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")  # random weights: plumbing only
    metric = LPIPS(tmp_path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-6)
    assert (metric(x, -x) > 0).all()


def test_fid_and_kid_on_pixel_features():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 16, 16, generator=g) * 2 - 1
    same = feature_distances(real, real, PixelFeatures(4), kid_subset_size=32)
    shifted = feature_distances(real, (real + 0.5).clamp(-1, 1), PixelFeatures(4), kid_subset_size=32)
    assert abs(same["fid"]) < 1e-3 and abs(same["kid"]) < 1e-3
    assert shifted["fid"] > 1.0 and shifted["kid"] > same["kid"]
    assert shifted["kid_std"] > 0  # subsets of a fixed size smaller than the set: a real spread
    assert feature_distances(real, real, PixelFeatures(4), kid_subset_size=32) == same  # seeded subsets
    small = feature_distances(real[:10], real[:10], PixelFeatures(4), kid_subset_size=32)
    assert small["kid"] is None and small["fid"] is not None
    features = PixelFeatures(4)(((real[:1] + 1) * 127.5).round().to(torch.uint8))
    expected = ((real[:1] + 1) * 127.5).round() / 255
    np.testing.assert_allclose(
        features.numpy(), torch.nn.functional.avg_pool2d(expected, 4).flatten(1).numpy(), rtol=1e-6
    )


def test_missing_inception_weights_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth"):
        feature_distances(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), None, tmp_path)


def test_fid_and_kid_over_chunks_equal_the_whole_set():
    g = torch.Generator().manual_seed(1)
    real = torch.rand(90, 3, 16, 16, generator=g) * 2 - 1
    fake = (real + 0.3).clamp(-1, 1)
    whole = feature_distances(real, fake, PixelFeatures(4), kid_subset_size=50)
    parts = feature_distances(real.split(25), fake.split(25), PixelFeatures(4), kid_subset_size=50)
    assert parts["fid"] == pytest.approx(whole["fid"], rel=1e-5)
    assert parts["kid"] == pytest.approx(whole["kid"], rel=1e-3)
