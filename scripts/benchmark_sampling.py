"""Sampling cost, FLOP-accounted, from one run: FLOPs, seconds, achieved TFLOP/s and peak memory per
image for each sampler at the paper's settings, plus the effect of each fast path.

    python scripts/benchmark_sampling.py --scale sd2 --count-only      # FLOPs at SD2-base 512 px, on CPU (seconds)
    python scripts/benchmark_sampling.py --scale sd2 --count-only --dtype bfloat16 --memory 1 16   # + peak memory
    python scripts/benchmark_sampling.py --scale sd2 --device cuda     # the GPU table (random full-size weights)
    python scripts/benchmark_sampling.py --scale digits --overhead     # samplers' own overhead on the digits prior
    python scripts/benchmark_sampling.py --scale tiny                  # a test-sized run

``sd2`` builds Stable Diffusion 2-base's UNet and VAE from their published configuration with random
weights (no download). FLOPs are counted with torch's FlopCounterMode on meta tensors (shapes
only), for one step of each kind, and multiplied by how many steps of that kind a run makes;
seconds are measured over ``--steps`` steps after a warm-up and scaled the same way. Two lower
bounds per image on a GPU (``--gpu``, default this one or an H100) come from a record of every
op's FLOPs and bytes: every FLOP at the tensor cores' peak, and each op at the slower of its
FLOPs at peak and its bytes at full memory bandwidth, no two fused. ``--memory`` estimates peak
memory at given batch sizes from the same kind of record. The counting, bounds and memory model
are cse.profiling's; this script builds the priors and samplers and prints the tables. Samplers
are built from their registry entries (cse.samplers.registry) with the task's cells of its step
table (cse.steps).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import torch

import cse  # noqa: F401
from cse.priors import DiffusersPrior
from cse.profiling import (
    PEAK_TFLOPS,
    count_flops,
    gpu_model,
    memory_model,
    one_step,
    problem,
    roofline,
    sd2_base,
    step_kinds,
    time_steps,
)
from cse.samplers.common import Sampler
from cse.samplers.registry import TABLE4
from cse.steps import build_sampler

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = list(TABLE4)


# -- what is measured ----------------------------------------------------------------------------


def build_prior(scale: str, device: str, dtype: torch.dtype) -> tuple[DiffusersPrior, str]:
    """The prior (random weights from seed 0 where they are random) and the task whose cells of
    its step table set the samplers' step sizes."""
    torch.manual_seed(0)
    if scale == "sd2":
        return sd2_base(device, dtype), "sd2/sr8"
    if scale == "tiny":
        import tempfile

        from cse.testing import build_tiny_stack

        with tempfile.TemporaryDirectory() as folder:  # loaded into memory, then removed
            path = build_tiny_stack(folder, image_size=64)
            return DiffusersPrior.from_pretrained(path, torch_dtype=dtype).to(device), "sd2/sr8"
    folder = {"digits": "checkpoints/digits/prior", "digits_latent": "checkpoints/digits_latent/prior"}[scale]
    task = {"digits": "digits/sr4", "digits_latent": "digits_latent/sr8"}[scale]
    return DiffusersPrior.from_pretrained(ROOT / folder, torch_dtype=dtype).to(device), task


def counted_setup(
    scale: str, method: str, dtype: torch.dtype, checkpointing: bool = False
) -> tuple[DiffusersPrior, Sampler]:
    """The prior (on meta tensors at SD2 scale: shapes, no values) and sampler of a count."""
    prior, task = build_prior(scale, "meta" if scale == "sd2" else "cpu", dtype)
    if checkpointing:
        prior.enable_gradient_checkpointing()
    return prior, build_sampler(task, method)


def bounds_of(
    scale: str, method: str, dtype: torch.dtype, gpu: str, batch: int = 1, checkpointing: bool = False
) -> dict:
    """cse.profiling.roofline of ``method`` at ``scale`` (see there)."""
    return roofline(*counted_setup(scale, method, dtype, checkpointing), gpu, batch)


def measure(args, prior, task: str, method: str, batch: int, flops: dict[str, float]) -> dict:
    sampler = build_sampler(task, method)
    operator, y, shape = problem(prior, batch)
    kinds = step_kinds(sampler)
    if y.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = 0.0
    for kind, count in kinds.items():
        per_step = time_steps(sampler, prior, operator, y, shape, args.steps, kind)
        seconds += count * per_step * (sampler.max_iters if kind == "consistency" else 1)
    total_flops = sum(flops[kind] * count for kind, count in kinds.items())
    per_image = seconds / batch
    return {
        "sampler": method,
        "batch": batch,
        "steps": kinds,
        "flops_per_image": total_flops,
        "seconds_per_image": per_image,
        "tflops_achieved": total_flops / per_image / 1e12,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if y.is_cuda else None,
    }


def largest_batch(args, prior, task: str, method: str, limit: int = 256) -> int:
    """The largest power-of-two batch whose step fits in memory (CUDA)."""
    batch, fits = 1, 0
    sampler = build_sampler(task, method)
    while batch <= limit:
        try:
            operator, y, shape = problem(prior, batch)
            one_step(sampler, prior, operator, y, shape)
            torch.cuda.synchronize()
            fits, batch = batch, batch * 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


def overhead(args) -> dict:
    """Share of a step spent outside the network: the step with the real UNet against the same step
    with a network that costs nothing (it returns zeros that still carry gradients)."""
    prior, task = build_prior(args.scale, args.device, torch.float32)
    sampler = build_sampler(task, "dps")
    operator, y, shape = problem(prior, args.batch)
    real = time_steps(sampler, prior, operator, y, shape, args.steps)
    network = prior.network
    prior.network = lambda x_t, t, control=None: x_t * 0.0
    free = time_steps(sampler, prior, operator, y, shape, args.steps)
    prior.network = network
    return {"seconds_per_step": real, "seconds_without_network": free, "overhead_share": free / real}


def compare(args) -> dict:
    """How much each fast path changes a result: DPS over ``--compare-steps`` steps of the task's
    trajectory, with the option and in plain fp32 on the same seeds; PSNR (dB, images on [-1, 1]
    clamped) and max absolute difference between the two restorations."""
    from cse.metrics import psnr

    def run(dtype=torch.float32, **options) -> torch.Tensor:
        prior, task = build_prior(args.scale, args.device, dtype)
        if options.pop("checkpointing", False):
            prior.enable_gradient_checkpointing()
        prior.max_decode_batch = options.pop("decode_batch", None)
        if options.pop("classic_attention", False):
            from diffusers.models.attention_processor import AttnProcessor

            prior.unet.set_attn_processor(AttnProcessor())
        prior.optimize(**options)
        sampler = build_sampler(task, "dps")
        sampler.num_steps = args.compare_steps
        operator, y, shape = problem(prior, 2)
        return sampler(prior, operator, y, [0, 1], shape=shape).float().clamp(-1, 1)

    reference = run()
    variants = {
        "float32 again (the noise floor)": {},
        "bfloat16": {"dtype": torch.bfloat16},
        "float16": {"dtype": torch.float16},
        "channels_last": {"channels_last": True},
        "checkpointing": {"checkpointing": True},
        "classic_attention (not SDPA)": {"classic_attention": True},
        "decoder attention as matmuls": {"decoder_attention": "matmul"},
        "decoded one latent at a time": {"decode_batch": 1},
        **({"compile": {"compile": True}} if args.compile else {}),
    }
    table = {}
    for name, options in variants.items():
        start = time.perf_counter()
        x = run(**options)
        table[name] = {
            "psnr_vs_fp32": float(psnr(x, reference).mean()),
            "max_abs_diff": float((x - reference).abs().max()),
            "seconds": time.perf_counter() - start,
        }
        print(name, json.dumps(table[name]), flush=True)
    return table


def timed_rows(args, dtype: torch.dtype, flops: dict, bounds: dict, gpu: str) -> tuple[list[dict], float | None]:
    """Each sampler timed at ``--batch`` (and the largest batch that fits), with its share of the
    measured device's peak and its ratio to that device's op-by-op bound."""
    prior, task = build_prior(args.scale, args.device, dtype)
    if args.checkpointing:
        prior.enable_gradient_checkpointing()
    optimize(args, prior)
    measured = gpu_model(args.device)
    peak = PEAK_TFLOPS[measured][args.dtype] if measured else None
    rows = []
    for method in args.samplers:
        batches = [args.batch] + ([largest_batch(args, prior, task, method)] if args.largest_batch else [])
        for batch in dict.fromkeys(b for b in batches if b):
            row = measure(args, prior, task, method, batch, flops[method])
            row["fraction_of_peak"] = row["tflops_achieved"] / peak if peak else None
            row["times_roofline"] = None  # against the bounds of the GPU measured, never another's
            if measured == gpu:
                bound = bounds[method]
                if batch != args.batch:
                    bound = bounds_of(args.scale, method, dtype, gpu, batch, args.checkpointing)
                row["times_roofline"] = row["seconds_per_image"] / bound["roofline_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows, peak


def optimize(args, prior: DiffusersPrior) -> None:
    """The prior's speed options, as the command line asks."""
    prior.max_decode_batch = args.decode_batch
    prior.optimize(args.channels_last, args.compile, args.compile_mode, args.decoder_attention)


def profile_rows(args, dtype: torch.dtype) -> dict[str, dict]:
    """Each sampler's step (after a warm-up) by kernel family (cse.kernels), at ``--batch``."""
    from cse.kernels import profile_families

    prior, task = build_prior(args.scale, args.device, dtype)
    optimize(args, prior)
    table = {}
    for method in args.samplers:
        sampler = build_sampler(task, method)
        operator, y, shape = problem(prior, args.batch)
        ctx = sampler.context(prior, operator, y, list(range(len(y))), shape)
        sigmas = sampler.sigmas(prior)
        step = functools.partial(one_step, sampler, prior, operator, y, shape, "step", ctx, sigmas)
        step()  # warm-up (and compilation)
        table[method] = profile_families(step, args.device)
        print(method, json.dumps({k: round(v["share"], 3) for k, v in table[method].items()}), flush=True)
    return table


# -- output --------------------------------------------------------------------------------------


def estimate_memory(args, dtype: torch.dtype) -> dict[str, list[dict]]:
    """memory_model at each ``--memory`` batch size, for each sampler; printed as it comes."""
    table = {}
    for method in args.samplers:
        table[method] = [
            memory_model(*counted_setup(args.scale, method, dtype, args.checkpointing), b, args.image_size)
            for b in args.memory
        ]
        sizes = ", ".join(f"batch {row['batch']} {row['peak_gib']:.1f}" for row in table[method])
        at = f" at {args.image_size} px" if args.image_size else ""
        print(f"{method:>10}: estimated peak memory{at} (GiB, weights {table[method][0]['weights_gib']:.2f}): {sizes}")
    return table


def describe_bounds(bounds: dict, dtype: str) -> str:
    """One printed line per sampler: both bounds, the bytes moved and the op-by-op time per family."""
    families = ", ".join(f"{name} {seconds:.2f}" for name, seconds in bounds["roofline_by_family_s"].items())
    return (
        f"{'':>12}on an {bounds['gpu']} in {dtype} at batch {bounds['batch']}, per image at least "
        f"{bounds['compute_bound_s']:.2f} s (FLOPs at peak), {bounds['roofline_s']:.2f} s op by op "
        f"({bounds['bytes_per_image'] / 1e12:.2f} TB moved; s by family: {families})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["sd2", "tiny", "digits", "digits_latent"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps of each kind, after one warm-up")
    parser.add_argument("--count-only", action="store_true", help="FLOPs and bounds (and --memory) only: no timing")
    parser.add_argument("--largest-batch", action="store_true", help="also time at the largest batch that fits")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--compile-mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune"],
        help="torch.compile's mode (reduce-overhead: CUDA graphs)",
    )
    parser.add_argument("--decoder-attention", default="sdpa", choices=["sdpa", "matmul"])
    parser.add_argument("--decode-batch", type=int, help="latents decoded at once (default: under 2**31 elements)")
    parser.add_argument("--profile", action="store_true", help="one step of each sampler by kernel family")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the networks")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick convolution algorithms")
    parser.add_argument("--overhead", action="store_true", help="the samplers' own share of a DPS step")
    parser.add_argument("--compare", action="store_true", help="how much each fast path changes a DPS result")
    parser.add_argument("--compare-steps", type=int, default=20)
    parser.add_argument(
        "--memory", type=int, nargs="+", metavar="BATCH", help="estimate peak memory at these batch sizes (any machine)"
    )
    parser.add_argument("--image-size", type=int, help="--memory on images of this side (default: the prior's)")
    parser.add_argument(
        "--gpu", choices=sorted(PEAK_TFLOPS), help="whose bounds to compute (default: this GPU, or H100)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    results = {"scale": args.scale, "device": args.device, "dtype": args.dtype, "options": vars(args) | {"json": None}}
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    if args.overhead:
        results["overhead"] = overhead(args)
        print(json.dumps(results["overhead"], indent=2))
    elif args.compare:
        results["compare"] = compare(args)
    elif args.profile:
        results["profile"] = profile_rows(args, dtype)
    else:
        if args.memory:
            results["memory"] = estimate_memory(args, dtype)
        flops = {
            method: count_flops(*counted_setup(args.scale, method, torch.float32, args.checkpointing))
            for method in args.samplers
        }
        gpu = args.gpu or gpu_model(args.device) or "H100"
        bounds = {
            method: bounds_of(args.scale, method, dtype, gpu, args.batch, args.checkpointing)
            for method in args.samplers
        }
        results["flops"], results["bounds"] = flops, bounds
        for method, kinds in flops.items():
            print(
                f"{method:>10}: " + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/image" for k, v in kinds.items()), flush=True
            )
            print(describe_bounds(bounds[method], args.dtype), flush=True)
        if not args.count_only:
            results["rows"], results["peak_tflops"] = timed_rows(args, dtype, flops, bounds, gpu)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
