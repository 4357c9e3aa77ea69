"""The diffusers prior on tiny random SD-like stacks built from config (nothing downloaded)."""

import json
import pickle

import pytest
import torch

from cse.operators import GaussianBlur, SuperResolution
from cse.priors import CountingPrior
from cse.priors.diffusers_prior import DiffusersPrior, build_controlnet
from cse.priors.loading import PretrainedNotFoundError
from cse.samplers import DMAP, DPS, DSG, Ancestral
from cse.seeding import generators_from_seeds, randn


@pytest.fixture(scope="module")
def latent(tiny_latent) -> DiffusersPrior:
    return DiffusersPrior.from_pretrained(tiny_latent)


def randomised_controlnet(prior: DiffusersPrior) -> torch.nn.Module:
    """A ControlNet whose zero-initialised output convolutions are given random weights, so
    that its residuals are not zero (as after training)."""
    controlnet = build_controlnet(prior)
    with torch.no_grad():
        for name, param in controlnet.named_parameters():
            if "zero_conv" in name or "controlnet_" in name:
                param.normal_(0, 0.05)
    return controlnet


def test_latent_and_pixel_priors_load_from_folders(latent, tiny_pixel_v):
    assert latent.sample_shape == (4, 8, 8) and latent.image_size == 16 and latent.latent_factor == 2
    assert latent.prompt_embeds.shape == (1, 16, 32) and not hasattr(latent, "text_encoder")
    pixel = DiffusersPrior.from_pretrained(tiny_pixel_v)
    assert pixel.sample_shape == (3, 16, 16) and pixel.vae is None and pixel.prediction_type == "v_prediction"
    assert not any(p.requires_grad for p in latent.parameters())


@pytest.mark.parametrize("stack", ["tiny_latent", "tiny_pixel_v"])
def test_the_loss_and_denoise_share_one_parameterisation(stack, request, monkeypatch):
    """A network that predicts the training target exactly has zero loss, and from the same
    output denoise returns x0: training (loss) and sampling (denoise) convert eps or v alike, and
    at integer timesteps sigma maps back to t."""
    prior = DiffusersPrior.from_pretrained(request.getfixturevalue(stack))
    x0 = torch.randn(3, *prior.sample_shape)
    t = torch.tensor([0, 400, 999])
    eps = torch.randn_like(x0)
    ab = prior.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps  # diffusers' add_noise
    target = eps if prior.prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
    seen = []
    monkeypatch.setattr(prior, "network", lambda x, t_, control=None: seen.append((x, t_)) or target)
    torch.testing.assert_close(prior.loss(x0, t, eps), torch.zeros(3))
    torch.testing.assert_close(seen[0][0], x_t)
    sigma = prior.schedule.train_sigmas[t].float()
    u = x_t * (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(prior.denoise(u, sigma), x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(seen[1][1], t.float(), atol=1e-3, rtol=0)


def test_encode_gives_the_vae_posterior_mean_or_a_draw_with_the_given_noise(latent):
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    noise = randn(generators_from_seeds([1, 2]), (4, 8, 8), like=images)
    posterior = latent.vae.encode(images).latent_dist
    scale = latent.vae.config.scaling_factor
    torch.testing.assert_close(latent.encode(images), posterior.mean * scale)
    torch.testing.assert_close(latent.encode(images, noise), (posterior.mean + posterior.std * noise) * scale)


@pytest.mark.parametrize(
    "sampler", [Ancestral(4), DPS(1.0, 4), DSG(0.1, 4), DMAP(1.0, 4, ascent_steps=2)], ids=lambda s: type(s).__name__
)
def test_samplers_run_on_the_latent_prior_with_and_without_a_cse(latent, sampler):
    A = SuperResolution(2)
    y = A(torch.rand(2, 3, 16, 16) * 2 - 1)
    plain = sampler(latent, A, y, seeds=[0, 1])
    assert plain.shape == (2, 3, 16, 16) and torch.isfinite(plain).all()
    latent.controlnet = randomised_controlnet(latent)
    try:
        with_cse = sampler(latent.conditioned(A.lift(y)), A, y, seeds=[0, 1])
    finally:
        latent.controlnet = None
    assert with_cse.shape == plain.shape and torch.isfinite(with_cse).all()
    assert not torch.allclose(with_cse, plain)


def test_guidance_flows_through_the_controlnet_and_the_vae_decoder(latent):
    latent.controlnet = randomised_controlnet(latent)
    try:
        A = GaussianBlur(5, 1.0)
        y = A(torch.rand(1, 3, 16, 16) * 2 - 1)
        u = torch.randn(1, *latent.sample_shape, requires_grad=True)
        residual = (A(latent.decode(latent.conditioned(A.lift(y)).denoise(u, 2.0))) - y).norm()
        residual.backward()
        assert u.grad is not None and u.grad.abs().sum() > 0
    finally:
        latent.controlnet = None


def test_a_steps_float_sigma_gives_the_same_numbers_as_per_sample_sigmas(latent):
    """``denoise(u, 2.0)`` reuses the noise level computed for 2.0 (made once per sigma); it must
    equal the per-sample-tensor path bit for bit, however the cache was first filled."""
    u = torch.randn(3, *latent.sample_shape)
    with torch.inference_mode():  # filling the cache where autograd is off ...
        latent.denoise(u.clone(), 2.0)
    u_grad = u.clone().requires_grad_(True)
    cached = latent.denoise(u_grad, 2.0)
    cached.sum().backward()  # ... leaves tensors autograd can still save
    per_sample = latent.denoise(u, torch.full((3,), 2.0))
    assert torch.equal(cached.detach(), per_sample)
    assert torch.equal(latent.denoise(u[:1], 2.0), latent.denoise(u[:1], torch.full((1,), 2.0)))  # batch 1, same entry
    assert not torch.equal(latent.denoise(u, 2.5), per_sample)


def test_resize_matrices_made_without_autograd_serve_gradients():
    x = torch.randn(1, 3, 24, 24)
    with torch.inference_mode():
        SuperResolution(factor=3)(x)
    x.requires_grad_(True)
    SuperResolution(factor=3)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients(tiny_latent):
    z = torch.randn(1, 4, 8, 8)

    def grad(prior):
        u = z.clone().requires_grad_(True)
        prior.decode(prior.denoise(u, 1.5)).square().sum().backward()
        return u.grad

    reference = grad(DiffusersPrior.from_pretrained(tiny_latent))
    checkpointed = DiffusersPrior.from_pretrained(tiny_latent, gradient_checkpointing=True)
    assert checkpointed.unet.is_gradient_checkpointing
    torch.testing.assert_close(grad(checkpointed), reference)


def test_network_evaluations_are_counted_by_a_wrapper(latent):
    A = SuperResolution(2)
    y = A(torch.rand(2, 3, 16, 16) * 2 - 1)
    counted = CountingPrior(latent)
    DMAP(1.0, 4, ascent_steps=2)(counted, A, y, seeds=[0, 1])
    assert counted.evaluations == 2 * (4 + 2 * 3) and counted.gradients == 2 * 2 * 3  # the last step has no ascent
    assert counted.describe() == latent.describe() and counted.schedule is latent.schedule
    # each ascent step back-propagates through the decoder once per sample; DECODES adds what else decodes
    assert counted.decoder_gradients == 2 * 2 * 3 and counted.decodes == counted.decoder_gradients + DECODES


DECODES = 2  # the final sample's decode, one per sample


def test_a_pixel_priors_decoder_is_not_counted(tiny_pixel_v):
    counted = CountingPrior(DiffusersPrior.from_pretrained(tiny_pixel_v))
    A = SuperResolution(2)
    DPS(1.0, 2)(counted, A, A(torch.zeros(1, *counted.sample_shape)), seeds=[0])
    assert counted.evaluations == 2 and counted.decodes == 0 and counted.decoder_gradients == 0


def test_a_sample_does_not_depend_on_its_batch(latent):
    A = SuperResolution(2)
    y = A(torch.rand(3, 3, 16, 16) * 2 - 1)
    together = DPS(1.0, 3)(latent, A, y, seeds=[5, 6, 7])
    alone = DPS(1.0, 3)(latent, A, y[1:2], seeds=[6])
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=1e-5)


# -- loading errors ------------------------------------------------------------------------------


def test_images_of_another_size_than_the_networks(latent):
    assert latent.state_shape((2, 3, 24, 32)) == (4, 12, 16)
    A = SuperResolution(2)
    y = A(torch.rand(1, 3, 24, 32) * 2 - 1)
    x = DPS(1.0, 2)(latent, A, y, seeds=[0], shape=latent.state_shape((24, 32)))
    assert x.shape == (1, 3, 24, 32)
    with pytest.raises(ValueError, match="divisible by the VAE factor 2"):
        latent.state_shape((3, 15, 16))


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedNotFoundError, match=r"no folder .*no-such-model.*pass DIR") as raised:
        DiffusersPrior.from_pretrained(tmp_path / "no-such-model")
    copy = pickle.loads(pickle.dumps(raised.value))  # as DDP passes it between processes
    assert str(copy) == str(raised.value) and copy.component == "diffusion prior"


def test_relative_folders_are_found_from_any_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped prior is named relative to the project checkout
    prior = DiffusersPrior.from_pretrained("checkpoints/digits/prior")
    assert prior.sample_shape == (3, 16, 16)
    with pytest.raises(PretrainedNotFoundError, match=rf"checkpoints/nothing \(looked in {tmp_path}"):
        DiffusersPrior.from_pretrained("checkpoints/nothing")


def test_a_hub_id_while_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        PretrainedNotFoundError, match=r"'stabilityai/stable-diffusion-2-base'.*not cached.*HF_HUB_OFFLINE.*hf download"
    ):
        DiffusersPrior.from_pretrained("stabilityai/stable-diffusion-2-base")


def test_a_hub_id_on_a_machine_without_network_is_a_clear_error_at_once(monkeypatch, tmp_path):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # a closed local port
    start = time.monotonic()
    with pytest.raises(
        PretrainedNotFoundError, match=r"not cached and the hub 127\.0\.0\.1:9 cannot be reached.*hf download"
    ):
        DiffusersPrior.from_pretrained("stabilityai/stable-diffusion-2-base")
    assert time.monotonic() - start < 10


def test_an_empty_tokenizer_is_a_clear_error(tiny_latent, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_latent, tmp_path / "broken")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(PretrainedNotFoundError, match="loaded empty"):
        DiffusersPrior.from_pretrained(folder)


def test_control_without_a_controlnet_is_an_error(latent):
    with pytest.raises(ValueError, match="no ControlNet attached"):
        latent.denoise_controlled(torch.randn(1, 4, 8, 8), 1.0, torch.zeros(1, 3, 16, 16))


def test_a_prior_without_a_cse_is_its_own_conditioned_prior(latent):
    assert not latent.has_cse and latent.conditioned(torch.zeros(2, 3, 16, 16)) is latent


def test_the_conditioned_prior_denoises_with_the_controlnets_residuals(latent):
    """``conditioned(control).denoise`` is the UNet with the ControlNet's residuals for ``control``
    (diffusers' ControlNet step, written out here), and differs from the prior alone."""
    latent.controlnet = randomised_controlnet(latent)
    try:
        u, sigma, control = torch.randn(2, *latent.sample_shape), 3.0, torch.rand(2, 3, 16, 16) * 2 - 1
        conditioned = latent.conditioned(control)
        assert latent.has_cse and conditioned.has_cse and conditioned.sample_shape == latent.sample_shape
        t, context = (
            latent.schedule.sigma_to_t(torch.tensor([sigma] * 2)).float(),
            latent.prompt_embeds.expand(2, -1, -1),
        )
        x_t = u / (1 + sigma**2) ** 0.5
        with torch.no_grad():
            down, mid = latent.controlnet(x_t, t, context, controlnet_cond=control, return_dict=False)
            eps = latent.unet(x_t, t, context, down_block_additional_residuals=down, mid_block_additional_residual=mid)
            expected = u - sigma * eps.sample
            torch.testing.assert_close(conditioned.denoise(u, sigma), expected, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(latent.denoise(u, sigma), expected, atol=1e-3)  # the CSE off
        with pytest.raises(ValueError, match="bound for 2 samples, got a batch of 3"):
            conditioned.denoise(torch.randn(3, *latent.sample_shape), sigma)
    finally:
        latent.controlnet = None
