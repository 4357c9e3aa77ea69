"""Sampling cost in one run: batching, VAE-decoder checkpointing and bf16, as ratios.

DPS steps (UNet forward + backward through the VAE decoder) on randomly initialised networks:
``--scale sd2`` builds full-size Stable Diffusion 2-base networks from their published
configuration (no weights needed; use a GPU), ``--scale tiny`` the tests' tiny stack (CPU).

    python scripts/benchmark_sampling.py --scale tiny
    python scripts/benchmark_sampling.py --scale sd2 --device cuda
"""

import argparse
import tempfile
import time

import torch

import cse  # noqa: F401
from cse.operators import SuperResolution
from cse.priors.diffusers_prior import DiffusersPrior, sd_scheduler
from cse.priors.schedule import DiscreteSchedule
from cse.samplers import DPS
from cse.testing import build_tiny_stack


def sd2_base() -> DiffusersPrior:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
        layers_per_block=2,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    schedule = DiscreteSchedule(sd_scheduler().alphas_cumprod)
    return DiffusersPrior(unet, schedule, torch.zeros(1, 77, 1024), vae=vae)


def measure(prior, batch: int, steps: int, device: str, dtype: torch.dtype | None) -> tuple[float, float]:
    """Seconds and peak memory (MiB, CUDA only) per image for ``steps`` DPS steps."""
    A = SuperResolution(8)
    size = prior.image_size
    y = A(torch.rand(batch, 3, size, size, device=device) * 2 - 1)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
        DPS(1.0, steps)(prior, A, y, seeds=range(batch))
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / batch
    memory = torch.cuda.max_memory_allocated() / 2**20 / batch if device == "cuda" else float("nan")
    return seconds, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["tiny", "sd2"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.scale == "sd2":
        prior = sd2_base()
    else:
        prior = DiffusersPrior.from_pretrained(build_tiny_stack(tempfile.mkdtemp(), image_size=64))
    prior = prior.to(args.device)
    measure(prior, 1, 1, args.device, None)  # warm-up
    base_s, base_m = measure(prior, 1, args.steps, args.device, None)
    batch_s, batch_m = measure(prior, 4, args.steps, args.device, None)
    low = torch.bfloat16
    bf16_s, bf16_m = measure(prior, 4, args.steps, args.device, low)
    prior.enable_gradient_checkpointing()
    ckpt_s, ckpt_m = measure(prior, 4, args.steps, args.device, None)
    print(f"{args.scale} on {args.device}, {args.steps} DPS steps, per image:")
    print(f"  batch 1 fp32: {base_s:.3f} s, {base_m:.0f} MiB")
    print(f"  batch 4 fp32: {batch_s:.3f} s, {batch_m:.0f} MiB  -> time ratio batch4/batch1 {batch_s / base_s:.2f}")
    print(
        f"  batch 4 bf16: {bf16_s:.3f} s, {bf16_m:.0f} MiB  -> time ratio bf16/fp32 {bf16_s / batch_s:.2f}, memory {bf16_m / batch_m:.2f}"
    )
    print(
        f"  batch 4 fp32 + gradient checkpointing: {ckpt_s:.3f} s, {ckpt_m:.0f} MiB  -> time {ckpt_s / batch_s:.2f}x, memory {ckpt_m / batch_m:.2f}x"
    )


if __name__ == "__main__":
    main()
