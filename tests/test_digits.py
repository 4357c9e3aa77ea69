"""The embedded tier's pieces: digits data, prior training and export, classifier features."""

import pytest
import torch
from lightning.pytorch import Trainer
from safetensors.torch import save_file

from cse.data import ImageDataModule
from cse.digits import (
    ClassifierModule,
    DigitsClassifier,
    DigitsDataModule,
    DigitsFeatures,
    PriorModule,
    digit_images,
    split,
)
from cse.metrics import feature_distances
from cse.models import build_controlnet
from cse.priors.diffusers_prior import DiffusersPrior
from cse.samplers import Ancestral


def test_digits_split_and_images():
    images, labels = digit_images()
    train, test = split(len(images))
    assert images.shape == (1797, 16, 16) and images.dtype.name == "uint8"
    assert len(train) == 1597 and len(test) == 200 and not set(train) & set(test)
    assert split(len(images)) == (train, test)


def test_prior_training_exports_a_pixel_prior_that_samples_and_takes_a_cse(image_folder, tmp_path):
    module = PriorModule(block_out_channels=(16, 32), layers_per_block=1, export_dir=str(tmp_path / "prior"))
    data = ImageDataModule(train=image_folder, image_size=16, batch_size=4, num_workers=0, augment=False)
    Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(module, data)
    prior = DiffusersPrior.from_pretrained(tmp_path / "prior")
    assert prior.vae is None and prior.sample_shape == (3, 16, 16)
    torch.testing.assert_close(
        prior.unet.state_dict()["conv_in.weight"], module.ema.module.state_dict()["conv_in.weight"]
    )
    prior.controlnet = build_controlnet(prior)
    x = Ancestral(3)(prior, None, None, seeds=[0, 1], control=torch.zeros(2, 3, 16, 16))
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()


def test_classifier_trains_and_its_features_serve_fid(tmp_path):
    module = ClassifierModule(export_path=str(tmp_path / "classifier.safetensors"))
    Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=1).fit(
        module, DigitsDataModule(batch_size=32)
    )
    features = DigitsFeatures(str(tmp_path / "classifier.safetensors"))
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    assert features(uint8).shape == (8, 128)
    torch.testing.assert_close(features(uint8).norm(dim=1), torch.full((8,), 128**0.5))
    assert feature_distances(x, x, features)["fid"] == pytest.approx(0, abs=1e-3)


def test_missing_classifier_weights_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/digits/classifier.yaml"):
        DigitsFeatures(str(tmp_path / "none.safetensors"))
    save_file(DigitsClassifier().state_dict(), tmp_path / "ok.safetensors")
    assert DigitsFeatures(str(tmp_path / "ok.safetensors")).num_features == 128
