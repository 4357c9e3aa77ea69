"""A prior over a diffusers ``UNet2DConditionModel``: pixel or latent (``AutoencoderKL``), eps or v.

The network is fed the VP state ``x_t = u / sqrt(1 + sigma^2)`` at the (fractional) timestep
of ``sigma``; an attached ControlNet (the CSE), once its control image is bound with
:meth:`DiffusersPrior.conditioned`, adds its residuals at every evaluation, which turns any sampler
into its "+CSE" variant. The training loss of the parameterisation (eps or v) lives
here too (:meth:`DiffusersPrior.loss`), beside the sampling-time conversion in :meth:`denoise`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
from torch import Tensor

from cse.digest import folder_digest
from cse.priors.base import Prior
from cse.priors.conditioned import RECORD_FILE, ConditionedPrior, check_cse_record, read_cse_record
from cse.priors.loading import (
    PretrainedSource,
    empty_prompt_embedding,
    load_or_explain,
    model_components,
    resolve_pretrained,
)
from cse.priors.schedule import DiscreteSchedule

SD_CONDITIONING_CHANNELS = (16, 32, 96, 256)  # ControlNet's default, for a VAE that shrinks 8x


CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
DecoderAttention = Literal["sdpa", "matmul"]


def widest_decoder_activation(block_out_channels: Sequence[int], latent_pixels: int) -> int:
    """Elements per image of the widest tensor an ``AutoencoderKL`` decoder makes (or its backward
    pass receives), for latents of ``latent_pixels`` = h * w. Up block i works at 2**i times the
    latent size on ``channels[i - 1] -> channels[i]`` (channels reversed), then up-samples ``channels[i]``
    to twice that size (all but the last block); SD2 at 512²: 256 x 512 x 512."""
    channels = list(reversed(block_out_channels))
    widest = channels[0] * latent_pixels
    for i, width in enumerate(channels):
        inputs = channels[max(i - 1, 0)]
        widest = max(widest, max(inputs, width) * latent_pixels * 4**i)
        if i < len(channels) - 1:
            widest = max(widest, width * latent_pixels * 4 ** (i + 1))
    return widest


def load_pipeline(
    source: PretrainedSource, revision: str | None, torch_dtype: torch.dtype
) -> tuple[DDPMScheduler, UNet2DConditionModel, AutoencoderKL | None, Tensor]:
    """A pipeline folder's scheduler, UNet, VAE (None for pixel priors) and the empty prompt's
    embedding (a single zero token for unconditional networks)."""
    components = model_components(source, revision)
    common = {"revision": revision}
    scheduler = load_or_explain(DDPMScheduler.from_pretrained, source, "scheduler", subfolder="scheduler", **common)
    common["torch_dtype"] = torch_dtype
    unet = load_or_explain(UNet2DConditionModel.from_pretrained, source, "UNet", subfolder="unet", **common)
    vae = None
    if "vae" in components:
        vae = load_or_explain(AutoencoderKL.from_pretrained, source, "VAE", subfolder="vae", **common)
    if "text_encoder" in components:
        prompt_embeds = empty_prompt_embedding(source, revision)
    else:
        prompt_embeds = torch.zeros(1, 1, unet.config.cross_attention_dim)
    return scheduler, unet, vae, prompt_embeds


class DiffusersPrior(Prior):
    """Args:
    unet: the denoiser network (frozen here; the ControlNet is what trains).
    schedule: its training schedule.
    prompt_embeds: ``[1, L, cross_attention_dim]`` conditioning, the empty prompt's.
    prediction_type: ``"epsilon"`` or ``"v_prediction"``.
    vae: latent priors' autoencoder; None for pixel-space priors.
    controlnet: the CSE, or None.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        schedule: DiscreteSchedule,
        prompt_embeds: Tensor,
        prediction_type: str = "epsilon",
        vae: AutoencoderKL | None = None,
        controlnet: ControlNetModel | None = None,
    ) -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        self.unet, self.vae, self.controlnet = unet, vae, controlnet
        self.schedule, self.prediction_type = schedule, prediction_type
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        self.register_buffer("alphas_cumprod", schedule.alphas_cumprod.float(), persistent=False)
        for module in (unet, vae, controlnet):  # frozen: a trainer unfreezes what it trains
            if module is not None:
                module.requires_grad_(False).eval()
        self.origin: dict = {}  # where the weights came from (set by from_pretrained)
        self.cse_record: dict | None = None  # the measurement the CSE was trained with (its cse.json) ...
        self.cse_folder: str | None = None  # ... and where it was loaded from, as given
        self.memory_format = torch.contiguous_format
        self.max_decode_batch: int | None = None  # see decode_chunk
        self._noise_levels: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}  # see noise_level

    @classmethod
    def from_pretrained(
        cls,
        id_or_path: str | os.PathLike = "stabilityai/stable-diffusion-2-base",
        controlnet: str | os.PathLike | ControlNetModel | None = None,
        torch_dtype: str | torch.dtype = "float32",
        revision: str | None = None,
        gradient_checkpointing: bool = False,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        decoder_attention: DecoderAttention = "sdpa",
        max_decode_batch: int | None = None,
    ) -> DiffusersPrior:
        """Load a diffusers pipeline folder or hub id (unet, scheduler, optional vae / text encoder).

        Args:
            id_or_path: a local diffusers folder (relative paths are also looked up in the project's
                checkout) or a hub id (read from the Hugging Face cache when present).
            controlnet: a trained CSE to attach (folder or hub id); the ``cse.json`` in its folder
                says which measurement it was trained with (see :meth:`check_measurement`); None:
                the prior alone.
            torch_dtype: the networks' dtype, e.g. ``"float32"``, ``"bfloat16"``.
            gradient_checkpointing: recompute activations in backward passes (VAE decoder, UNet,
                ControlNet) to save memory.
            channels_last, compile, compile_mode, decoder_attention: speed options, see :meth:`optimize`.
            max_decode_batch: the most latents the VAE decodes at once (None: the most whose
                widest activation stays under 2**31 elements, see :meth:`decode_chunk`).

        A missing folder, or a hub id that is neither cached nor reachable, raises
        :class:`~cse.priors.loading.PretrainedNotFoundError` naming what was looked for.
        """
        torch_dtype = getattr(torch, torch_dtype) if isinstance(torch_dtype, str) else torch_dtype
        source = resolve_pretrained(id_or_path, revision)
        scheduler, unet, vae, prompt_embeds = load_pipeline(source, revision, torch_dtype)
        cse = load_cse(controlnet, torch_dtype)
        prior = cls(
            unet,
            DiscreteSchedule(scheduler.alphas_cumprod),
            prompt_embeds.to(torch_dtype),
            scheduler.config.prediction_type,
            vae,
            cse.controlnet,
        )
        if gradient_checkpointing:
            prior.enable_gradient_checkpointing()
        if max_decode_batch is not None and max_decode_batch < 1:
            raise ValueError(f"max_decode_batch must be >= 1 (or None), got {max_decode_batch}")
        prior.max_decode_batch = max_decode_batch
        prior.optimize(channels_last, compile, compile_mode, decoder_attention)
        prior.cse_record, prior.cse_folder = cse.record, cse.folder
        prior.origin = {
            "pretrained": source.path,
            "pretrained_digest": local_digest(source.path),
            "controlnet": cse.origin,
            "controlnet_digest": local_digest(cse.origin),
            "dtype": str(torch_dtype),
        }
        return prior

    def describe(self) -> dict:
        return {"class": type(self).__name__, **self.origin, "prediction_type": self.prediction_type}

    def attach_controlnet(self, controlnet: ControlNetModel | None = None) -> ControlNetModel:
        """Attach a CSE: ``controlnet``, or a new one copied from the UNet (see :func:`build_controlnet`).
        What it was trained for is then unknown (``cse_record`` None)."""
        self.controlnet = (controlnet if controlnet is not None else build_controlnet(self)).requires_grad_(False)
        self.cse_record = self.cse_folder = None
        return self.controlnet

    # -- the CSE ---------------------------------------------------------------------------------

    @property
    def has_cse(self) -> bool:
        return self.controlnet is not None

    def conditioned(self, control: Tensor) -> Prior:
        """With a ControlNet: this prior with ``control`` ``[B, C, H, W]`` (``measurement.lift(y)``)
        bound, a :class:`ConditionedPrior`; without: this prior."""
        return self if self.controlnet is None else ConditionedPrior(self, control)

    def check_measurement(self, measurement: dict) -> None:
        """Refuse a measurement the attached CSE was not trained with (see :func:`check_cse_record`)."""
        if self.controlnet is not None:
            check_cse_record(self.cse_record, self.cse_folder or "(given as a module)", measurement)

    # -- shapes and the autoencoder --------------------------------------------------------------

    @property
    def latent_factor(self) -> int:
        """Image pixels per latent pixel along a side (1 for pixel priors)."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        size = self.unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, *size)

    @property
    def image_size(self) -> int:
        return self.sample_shape[-1] * self.latent_factor

    @property
    def size_multiple(self) -> int:
        """The VAE factor times the UNet's down-sampling (every down block but the last halves)."""
        return self.latent_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def state_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one diffusion state for images of ``[..., H, W]`` (any size the VAE divides)."""
        height, width = image_shape[-2:]
        f = self.latent_factor
        if height % f or width % f:
            raise ValueError(f"image size {height}x{width} must be divisible by the VAE factor {f}")
        return (self.sample_shape[0], height // f, width // f)

    def encode(self, images: Tensor, noise: Tensor | None = None) -> Tensor:
        """Scaled latents of images on [-1, 1]: the posterior mean, or with standard-normal ``noise``
        the draw ``mean + std * noise`` (diffusers' ``latent_dist.sample()`` with the caller's noise)."""
        if self.vae is None:
            return images
        posterior = self.vae.encode(images.to(self.vae.dtype).contiguous(memory_format=self.memory_format)).latent_dist
        latents = posterior.mean if noise is None else posterior.mean + posterior.std * noise.to(posterior.mean)
        return (latents * self.vae.config.scaling_factor).to(images.dtype)

    def decode(self, latents: Tensor) -> Tensor:
        """Latents to images, in chunks of :meth:`decode_chunk` latents (each chunk its own autograd
        graph, so the guidance's backward pass through the decoder is chunked too)."""
        if self.vae is None:
            return latents
        chunk = self.decode_chunk(latents.shape)
        if latents.shape[0] <= chunk:
            return self.decode_at_once(latents)
        return torch.cat([self.decode_at_once(part) for part in latents.split(chunk)])

    def decode_chunk(self, latent_shape: Sequence[int]) -> int:
        """The most latents of ``latent_shape`` (``[B, C, h, w]``) decoded at once: ``max_decode_batch``
        if set, else the most whose widest decoder activation stays under 2**31 elements. PyTorch's
        upsampling kernels refuse larger tensors (SD2 at 512², batch 32: ``upsample_nearest_nhwc only
        supports grad_output tensors with less than INT_MAX elements``)."""
        if self.max_decode_batch is not None:
            return self.max_decode_batch
        widest = widest_decoder_activation(self.vae.config.block_out_channels, latent_shape[-2] * latent_shape[-1])
        return max(1, (2**31 - 1) // widest)

    def decode_at_once(self, latents: Tensor) -> Tensor:
        latents = (latents / self.vae.config.scaling_factor).to(self.vae.dtype)
        images = self.vae.decode(latents.contiguous(memory_format=self.memory_format)).sample
        return images.to(latents.dtype)

    def optimize(
        self,
        channels_last: bool = False,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        decoder_attention: DecoderAttention = "sdpa",
    ) -> DiffusersPrior:
        """Speed options that keep the numbers (up to floating-point order, measured in the tests):
        ``channels_last`` stores the networks' weights and inputs NHWC (faster convolutions on
        GPUs); ``compile`` wraps the forward of the UNet, the ControlNet and the VAE decoder and
        encoder in ``torch.compile`` with ``compile_mode`` (``"reduce-overhead"``: CUDA graphs of
        the fixed-shape step) — the guidance's backward pass is compiled with them;
        ``decoder_attention="matmul"`` runs the VAE's single-head attention as plain matrix products
        (diffusers' ``AttnProcessor``) instead of PyTorch's SDPA kernels. Module names and state
        dicts are unchanged."""
        if decoder_attention not in ("sdpa", "matmul"):
            raise ValueError(f"decoder_attention must be 'sdpa' or 'matmul', got {decoder_attention!r}")
        if decoder_attention == "matmul" and self.vae is not None:
            from diffusers.models.attention_processor import AttnProcessor

            self.vae.set_attn_processor(AttnProcessor())
        networks = [m for m in (self.unet, self.controlnet, self.vae) if m is not None]
        if channels_last:
            self.memory_format = torch.channels_last
            for module in networks:
                module.to(memory_format=torch.channels_last)
        if compile:
            parts = [
                self.unet,
                self.controlnet,
                *([self.vae.decoder, self.vae.encoder] if self.vae is not None else []),
            ]
            for module in filter(None, parts):
                module.forward = torch.compile(module.forward, mode=compile_mode)
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass: VAE decoder, UNet and ControlNet."""
        for module in (self.vae, self.unet, self.controlnet):
            if module is not None:
                module.enable_gradient_checkpointing()

    # -- the network -----------------------------------------------------------------------------

    def network(self, x_t: Tensor, t: Tensor, control: Tensor | None = None) -> Tensor:
        """The UNet's raw output (eps or v) on the VP state ``x_t`` at timesteps ``t`` ``[B]``,
        with the ControlNet's residuals added when ``control`` is given."""
        if control is not None and self.controlnet is None:
            raise ValueError("control was given but this prior has no ControlNet attached")
        dtype = self.unet.dtype
        x_t, t = x_t.to(dtype).contiguous(memory_format=self.memory_format), t.to(x_t.device)
        context = self.prompt_embeds.to(dtype).expand(x_t.shape[0], -1, -1)
        residuals = {}
        if control is not None:
            down, mid = self.controlnet(
                x_t, t, encoder_hidden_states=context, controlnet_cond=control.to(dtype), return_dict=False
            )
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(x_t, t, encoder_hidden_states=context, **residuals).sample

    def denoise(self, u: Tensor, sigma: Tensor | float) -> Tensor:
        """``x0_hat`` of the prior alone (an attached CSE off; :meth:`conditioned` turns it on)."""
        return self.denoise_controlled(u, sigma, None)

    def denoise_controlled(self, u: Tensor, sigma: Tensor | float, control: Tensor | None) -> Tensor:
        """``x0_hat`` from the network, with the ControlNet's residuals for ``control`` (None: without):
        ``u - sigma eps`` (eps) or ``u / (1 + s^2) - s v / sqrt(1 + s^2)`` (v)."""
        t, sigma, c_in = self.noise_level(u, sigma)
        output = self.network(u * c_in, t, control).to(u.dtype)
        if self.prediction_type == "epsilon":
            return u - sigma * output
        return c_in**2 * u - sigma * c_in * output

    def noise_level(self, u: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """The UNet's timesteps ``[B]`` (float32), and ``sigma`` and ``c_in = 1 / sqrt(1 + sigma^2)``
        broadcastable against ``u``. A sampler's steps share one float sigma across the batch: those
        are computed once per (sigma, dtype, device, schedule) and reused, the same numbers without the ~40
        small tensor operations per step that dominate a small prior's step at batch 1."""
        if not isinstance(sigma, float | int):
            return self._noise_level(u, torch.as_tensor(sigma, dtype=torch.float64).expand(u.shape[0]))
        key = (float(sigma), u.dtype, u.device, u.ndim, id(self.schedule))  # a schedule set later makes new entries
        if key not in self._noise_levels:
            if len(self._noise_levels) > 4096:  # many schedules in one process
                self._noise_levels.clear()
            with torch.inference_mode(False):  # ordinary tensors, usable by autograd wherever first made
                level = self._noise_level(u, torch.tensor([float(sigma)], dtype=torch.float64))
            self._noise_levels[key] = level
        t, sigma_b, c_in = self._noise_levels[key]
        return t.expand(u.shape[0]), sigma_b, c_in

    def _noise_level(self, u: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t = self.schedule.sigma_to_t(sigma).to(device=u.device, dtype=torch.float32)
        sigma = sigma.to(device=u.device, dtype=u.dtype).reshape(-1, *[1] * (u.ndim - 1))
        return t, sigma, (1 + sigma**2).rsqrt()

    def loss(self, x0: Tensor, t: Tensor, eps: Tensor, control: Tensor | None = None) -> Tensor:
        """The diffusion training loss per sample ``[B]``: MSE of the network (with the ControlNet's
        residuals when ``control`` is given) to its target at integer timesteps ``t`` ``[B]``, the
        target being eps or ``v = sqrt(ab) eps - sqrt(1 - ab) x0`` as the network predicts (diffusers'
        ``add_noise`` / ``get_velocity``)."""
        ab = self.alphas_cumprod.to(x0.device)[t].to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        target = eps if self.prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
        error = self.network(x_t, t, control).float() - target.float()
        return error.square().flatten(1).mean(1)


@dataclass
class LoadedCSE:
    """A ControlNet as ``from_pretrained`` attaches it: the module, where its weights came from (a
    resolved folder, ``"given as a module"`` or None), the folder as the user named it, and the
    measurement its ``cse.json`` records (None without one)."""

    controlnet: ControlNetModel | None = None
    origin: str | None = None
    folder: str | None = None
    record: dict | None = None


def load_cse(controlnet: str | os.PathLike | ControlNetModel | None, torch_dtype: torch.dtype) -> LoadedCSE:
    """Load the CSE given to ``from_pretrained`` (a folder or hub id), with the record beside it."""
    if controlnet is None:
        return LoadedCSE()
    if isinstance(controlnet, ControlNetModel):
        return LoadedCSE(controlnet, "given as a module")
    what = "ControlNet (CSE)"
    source = resolve_pretrained(controlnet, None, what=what)
    module = load_or_explain(ControlNetModel.from_pretrained, source, what, torch_dtype=torch_dtype)
    return LoadedCSE(module, source.path, str(controlnet), read_cse_record(source.path))


def build_controlnet(prior: DiffusersPrior, conditioning_channels: int = 3) -> ControlNetModel:
    """A CSE for ``prior``: ``ControlNetModel.from_unet`` with the prior's weights, and a control
    embedding that takes image-sized ``[B, conditioning_channels, H, W]`` inputs down to the
    network's resolution (one stride-2 stage per factor of 2 of the VAE; none for pixel priors)."""
    stages = int(math.log2(prior.latent_factor))
    if stages >= len(SD_CONDITIONING_CHANNELS):
        raise ValueError(f"no ControlNet conditioning embedding for a latent factor of {prior.latent_factor}")
    return ControlNetModel.from_unet(
        prior.unet,
        conditioning_embedding_out_channels=SD_CONDITIONING_CHANNELS[: stages + 1],
        conditioning_channels=conditioning_channels,
    )


def sd_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """Stable Diffusion 2's training schedule (scaled-linear betas 0.00085 -> 0.012, 1000 steps)."""
    return DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=prediction_type
    )


def save_pipeline_folder(
    path: str | os.PathLike, unet: UNet2DConditionModel, scheduler: DDPMScheduler, vae: AutoencoderKL | None = None
) -> Path:
    """Write a prior without a text encoder (e.g. a pixel-space one) as a diffusers folder."""
    path = Path(path)
    unet.save_pretrained(path / "unet")
    scheduler.save_pretrained(path / "scheduler")
    components = {"unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", type(scheduler).__name__]}
    if vae is not None:
        vae.save_pretrained(path / "vae")
        components["vae"] = ["diffusers", "AutoencoderKL"]
    (path / "model_index.json").write_text(json.dumps({"_class_name": "DiffusionPipeline", **components}, indent=2))
    return path


def local_digest(path: str | None) -> str | None:
    """The content digest of a local model folder (None for a hub id or a module given as such).
    A CSE's record is left out: it says what the CSE is for, and runs made before it was written
    keep their settings."""
    return folder_digest(path, ignore=(RECORD_FILE,)) if path is not None and Path(path).is_dir() else None
