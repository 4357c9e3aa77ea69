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
memory at given batch sizes from the same kind of record. Samplers are built from
configs/samplers/*.yaml with the step sizes of the task's ``sampling:`` block.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import weakref
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import cse  # noqa: F401
from cse.operators import Measurement, SuperResolution
from cse.priors import DiffusersPrior
from cse.priors.diffusers_prior import sd_scheduler
from cse.priors.schedule import DiscreteSchedule
from cse.samplers import ReSample
from cse.samplers.common import Sampler
from cse.samplers.freedom import FreeDoM
from cse.seeding import generators_from_seeds

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = ["dps", "dsg", "dmap_same", "dmap_full", "psld", "freedom", "resample"]
PEAK_TFLOPS = {  # dense tensor-core peaks (NVIDIA data sheets, SXM): bf16/fp16, and TF32 for fp32 work
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
}
BANDWIDTH_TBS = {"H100": 3.35, "H200": 4.8, "A100": 2.04}  # HBM bandwidth (NVIDIA data sheets, SXM)


# -- what is measured ----------------------------------------------------------------------------


def sd2_base(device: str | torch.device, dtype: torch.dtype) -> DiffusersPrior:
    """Stable Diffusion 2-base's networks (865 M + 84 M parameters) with random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device(device):
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
    prompt = torch.zeros(1, 77, 1024, device=device)
    return DiffusersPrior(unet.to(dtype), schedule, prompt.to(dtype), vae=vae.to(dtype))


def build_prior(scale: str, device: str, dtype: torch.dtype) -> tuple[DiffusersPrior, str]:
    """The prior (random weights from seed 0 where they are random) and the task whose sampling
    block sets the samplers' step sizes."""
    torch.manual_seed(0)
    if scale == "sd2":
        return sd2_base(device, dtype), "sr8"
    if scale == "tiny":
        import tempfile

        from cse.testing import build_tiny_stack

        with tempfile.TemporaryDirectory() as folder:  # loaded into memory, then removed
            path = build_tiny_stack(folder, image_size=64)
            return DiffusersPrior.from_pretrained(path, torch_dtype=dtype).to(device), "sr8"
    folder = {"digits": "checkpoints/digits/prior", "digits_latent": "checkpoints/digits_latent/prior"}[scale]
    task = {"digits": "digits/sr4", "digits_latent": "digits_latent/sr8"}[scale]
    return DiffusersPrior.from_pretrained(ROOT / folder, torch_dtype=dtype).to(device), task


def sampler_from_configs(task: str, method: str) -> Sampler:
    """configs/samplers/<method>.yaml with the ``${sampling.*}`` values of configs/<task>/task.yaml."""
    block = yaml.safe_load((ROOT / "configs" / task / "task.yaml").read_text())["sampling"]
    text = re.sub(
        r"\$\{sampling\.(\w+)\}",
        lambda m: str(block[m.group(1)]),
        (ROOT / "configs/samplers" / f"{method}.yaml").read_text(),
    )
    spec = yaml.safe_load(text)["model"]["init_args"]["sampler"]
    module, name = spec["class_path"].rsplit(".", 1)
    return getattr(import_module(module), name)(**spec["init_args"])


def step_kinds(sampler: Sampler) -> dict[str, int]:
    """How many steps of each kind a run makes: 'step' (one ordinary step), and for FreeDoM the
    extra passes, for ReSample the consistency optimisations (counted at ``max_iters``)."""
    kinds = {"step": sampler.num_steps}
    if isinstance(sampler, FreeDoM):
        kinds["step"] += sum(sampler.travels(i) for i in range(sampler.num_steps)) * (sampler.repeats - 1)
    if isinstance(sampler, ReSample):
        kinds["consistency"] = sum(sampler.consistency_step(i) for i in range(sampler.num_steps))
    return kinds


def problem(prior: DiffusersPrior, batch: int, factor: int = 8):
    size = prior.image_size
    measurement = Measurement(SuperResolution(factor if size % factor == 0 else 4))
    device = prior.prompt_embeds.device
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device) * 2 - 1
    y = measurement(images, generators_from_seeds(range(batch)))
    return measurement.operator, y, prior.state_shape(images.shape)


def one_step(sampler: Sampler, prior, operator, y, shape, kind: str = "step", ctx=None, sigmas=None):
    """Run one step of ``kind`` at the middle of the trajectory (in ``ctx``, a run's context, whose
    noise is drawn in blocks as in a real run, and with its ``sigmas``); returns its output."""
    ctx = ctx or sampler.context(prior, operator, y, list(range(len(y))), shape)
    if kind != "consistency":
        return sampler.middle_step(prior, ctx, sigmas)
    # one iteration of ReSample's optimiser: ||A(D(z)) - y||^2, forward and backward
    sigma = sampler.sigmas(prior)[sampler.num_steps // 2]
    z = (sigma * ctx.noise() / (1 + sigma**2) ** 0.5).detach().requires_grad_(True)
    with torch.enable_grad():
        (operator(prior.decode(z)) - y).square().flatten(1).mean(1).sum().backward()
    return z.grad


def counted_setup(scale: str, method: str, dtype: torch.dtype, batch: int, checkpointing: bool = False) -> tuple:
    """The prior (on meta tensors at SD2 scale: shapes, no values), sampler and problem of a count."""
    prior, task = build_prior(scale, "meta" if scale == "sd2" else "cpu", dtype)
    if checkpointing:
        prior.enable_gradient_checkpointing()
    return prior, sampler_from_configs(task, method), *problem(prior, batch)


def count_flops(scale: str, method: str, batch: int = 1, checkpointing: bool = False) -> dict[str, float]:
    """FLOPs per image of each step kind, on meta tensors (no computation); with checkpointing, the
    recomputed forward passes included."""
    prior, sampler, operator, y, shape = counted_setup(scale, method, torch.float32, batch, checkpointing)
    flops = {}
    for kind in step_kinds(sampler):
        with FlopCounterMode(display=False) as counter:
            one_step(sampler, prior, operator, y, shape, kind)
        per_iter = counter.get_total_flops() / batch
        flops[kind] = per_iter * (sampler.max_iters if kind == "consistency" else 1)
    return flops


class TrafficCounter(TorchDispatchMode):
    """The FLOPs (torch's own formulas) and the bytes read and written (tensor arguments and
    results; views and aliases move nothing) of every aten op run under it."""

    FREE = {"_unsafe_view", "detach", "lift_fresh", "alias", "empty", "empty_like", "empty_strided"}
    WRITE_ONLY = {"copy_", "fill_", "zero_"}  # in place: the destination is written, not read

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, int, int]] = []  # (op, FLOPs, bytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func.overloadpacket
        if func.is_view or packet.__name__ in self.FREE:
            return out
        flops = flop_registry[packet](*args, **kwargs, out_val=out) if packet in flop_registry else 0
        read = args
        if packet is torch.ops.aten.convolution_backward and not args[-1][1]:
            read = (args[0], *args[2:])  # the input gradient alone needs no input, only the weight
        elif packet.__name__ in self.WRITE_ONLY:
            read = args[1:]
        tensors = [t for t in tree_leaves((read, kwargs, out)) if isinstance(t, torch.Tensor)]
        self.ops.append((packet.__name__, flops, sum(map(stored_bytes, tensors))))
        return out

    def roofline(self, peak_tflops: float, bandwidth_tbs: float) -> dict[str, float]:
        """Seconds per op family if every op ran at the device's peak FLOP rate or its full memory
        bandwidth, whichever bounds it (no op fused with another)."""
        seconds = defaultdict(float)
        for name, flops, moved in self.ops:
            seconds[op_family(name)] += max(flops / (peak_tflops * 1e12), moved / (bandwidth_tbs * 1e12))
        return dict(seconds)


def stored_bytes(tensor: torch.Tensor) -> int:
    """A tensor's bytes, an expanded one (stride 0) counted at the size of its storage at most."""
    return min(tensor.numel(), tensor.untyped_storage().nbytes() // tensor.element_size()) * tensor.element_size()


def op_family(name: str) -> str:
    """The family an aten op's time is reported under."""
    if name.startswith("convolution"):
        return "convolutions"
    if "attention" in name:
        return "attention"
    if name in {"mm", "addmm", "bmm", "baddbmm"}:
        return "matrix products"
    if "norm" in name:
        return "normalisation"
    return "element-wise and copies"


@contextmanager
def fused_attention() -> Iterator[None]:
    """On meta tensors, attention as a GPU runs PyTorch's SDPA: one fused kernel that never writes
    the attention matrix (the meta device would otherwise decompose it into matrix products)."""

    def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if query.device.type != "meta" or attn_mask is not None or kwargs:
            return original(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **kwargs)
        efficient = torch.ops.aten._scaled_dot_product_efficient_attention
        return efficient(query, key, value, None, True, dropout_p, is_causal, scale=scale)[0]

    original, F.scaled_dot_product_attention = F.scaled_dot_product_attention, sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def roofline(
    scale: str, method: str, dtype: torch.dtype, gpu: str, batch: int = 1, checkpointing: bool = False
) -> dict:
    """A run's bytes moved and lower bounds on its time per image on ``gpu``: ``compute`` (every FLOP
    at the tensor cores' peak) and ``roofline`` (op by op, the slower of its FLOPs at peak and its
    bytes at full bandwidth), with the latter's share per op family."""
    prior, sampler, operator, y, shape = counted_setup(scale, method, dtype, batch, checkpointing)
    peak, bandwidth = PEAK_TFLOPS[gpu][str(dtype).split(".")[-1]], BANDWIDTH_TBS[gpu]
    totals, families = defaultdict(float), defaultdict(float)
    for kind, count in step_kinds(sampler).items():
        repeats = count * (sampler.max_iters if kind == "consistency" else 1) / batch
        with fused_attention(), TrafficCounter() as counter:
            one_step(sampler, prior, operator, y, shape, kind)
        totals["bytes"] += repeats * sum(moved for _, _, moved in counter.ops)
        totals["compute"] += repeats * sum(flops for _, flops, _ in counter.ops) / (peak * 1e12)
        for family, seconds in counter.roofline(peak, bandwidth).items():
            families[family] += repeats * seconds
    return {
        "gpu": gpu,
        "batch": batch,
        "bytes_per_image": totals["bytes"],
        "compute_bound_s": totals["compute"],
        "roofline_s": sum(families.values()),
        "roofline_by_family_s": dict(sorted(families.items(), key=lambda kv: -kv[1])),
    }


class LiveMemory(TorchDispatchMode):
    """The bytes of the storages that the ops under it allocate, and their peak: a storage counts
    from the op that allocates it until it is freed (autograd's saved tensors keep it alive). Views
    and in-place results of tensors made elsewhere (the weights, the inputs) allocate nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, int] = {}  # live storage -> its bytes
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {storage_key(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and storage_key(tensor) not in given | self.storages.keys():
                self.allocate(tensor.untyped_storage())
        return out

    def allocate(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        self.storages[key] = storage.nbytes()
        self.live += storage.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self.free, key)  # a storage's Python object lives as long as it does

    def free(self, key: int) -> None:
        self.live -= self.storages.pop(key)


def storage_key(tensor: torch.Tensor) -> int:
    """The storage itself (its Python object is shared by its tensors; meta tensors have no data_ptr)."""
    return tensor.untyped_storage()._cdata


def memory_model(
    scale: str, method: str, dtype: torch.dtype, batch: int, checkpointing: bool = False
) -> dict[str, float]:
    """Peak memory of a step (GiB), from the tensors it makes on meta tensors, plus the weights: what
    ``torch.cuda.max_memory_allocated`` would report, less workspaces and the allocator's rounding."""
    prior, sampler, operator, y, shape = counted_setup(scale, method, dtype, batch, checkpointing)
    weights = sum(t.numel() * t.element_size() for t in [*prior.parameters(), *prior.buffers()])
    peak = 0
    for kind in step_kinds(sampler):
        ctx = sampler.context(prior, operator, y, list(range(batch)), shape)
        with fused_attention(), LiveMemory() as memory:
            one_step(sampler, prior, operator, y, shape, kind, ctx)
        peak = max(peak, memory.peak)
    return {"batch": batch, "weights_gib": weights / 2**30, "peak_gib": (weights + peak) / 2**30}


def time_steps(sampler: Sampler, prior, operator, y, shape, steps: int, kind: str = "step") -> float:
    """Seconds per step of ``kind`` for the whole batch, after a warm-up step."""
    sync = torch.cuda.synchronize if y.is_cuda else (lambda: None)
    ctx = sampler.context(prior, operator, y, list(range(len(y))), shape)
    sigmas = sampler.sigmas(prior)  # once, as a run does
    one_step(sampler, prior, operator, y, shape, kind, ctx, sigmas)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        one_step(sampler, prior, operator, y, shape, kind, ctx, sigmas)
    sync()
    return (time.perf_counter() - start) / steps


def measure(args, prior, task: str, method: str, batch: int, flops: dict[str, float]) -> dict:
    sampler = sampler_from_configs(task, method)
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
    sampler = sampler_from_configs(task, method)
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
    sampler = sampler_from_configs(task, "dps")
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
        if options.pop("classic_attention", False):
            from diffusers.models.attention_processor import AttnProcessor

            prior.unet.set_attn_processor(AttnProcessor())
        prior.optimize(**options)
        sampler = sampler_from_configs(task, "dps")
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
    prior.optimize(channels_last=args.channels_last, compile=args.compile)
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
                    bound = roofline(args.scale, method, dtype, gpu, batch, args.checkpointing)
                row["times_roofline"] = row["seconds_per_image"] / bound["roofline_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows, peak


# -- output --------------------------------------------------------------------------------------


def estimate_memory(args, dtype: torch.dtype) -> dict[str, list[dict]]:
    """memory_model at each ``--memory`` batch size, for each sampler; printed as it comes."""
    table = {}
    for method in args.samplers:
        table[method] = [memory_model(args.scale, method, dtype, b, args.checkpointing) for b in args.memory]
        sizes = ", ".join(f"batch {row['batch']} {row['peak_gib']:.1f}" for row in table[method])
        print(f"{method:>10}: estimated peak memory (GiB, weights {table[method][0]['weights_gib']:.2f}): {sizes}")
    return table


def describe_bounds(bounds: dict, dtype: str) -> str:
    """One printed line per sampler: both bounds, the bytes moved and the op-by-op time per family."""
    families = ", ".join(f"{name} {seconds:.2f}" for name, seconds in bounds["roofline_by_family_s"].items())
    return (
        f"{'':>12}on an {bounds['gpu']} in {dtype} at batch {bounds['batch']}, per image at least "
        f"{bounds['compute_bound_s']:.2f} s (FLOPs at peak), {bounds['roofline_s']:.2f} s op by op "
        f"({bounds['bytes_per_image'] / 1e12:.2f} TB moved; s by family: {families})"
    )


def gpu_model(device: str) -> str | None:
    """This device's entry in PEAK_TFLOPS (None on a CPU or an unlisted GPU)."""
    if not device.startswith("cuda"):
        return None
    return next((key for key in PEAK_TFLOPS if key in torch.cuda.get_device_name()), None)


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
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of the networks")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick convolution algorithms")
    parser.add_argument("--overhead", action="store_true", help="the samplers' own share of a DPS step")
    parser.add_argument("--compare", action="store_true", help="how much each fast path changes a DPS result")
    parser.add_argument("--compare-steps", type=int, default=20)
    parser.add_argument(
        "--memory", type=int, nargs="+", metavar="BATCH", help="estimate peak memory at these batch sizes (any machine)"
    )
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
    else:
        if args.memory:
            results["memory"] = estimate_memory(args, dtype)
        flops = {method: count_flops(args.scale, method, 1, args.checkpointing) for method in args.samplers}
        gpu = args.gpu or gpu_model(args.device) or "H100"
        bounds = {
            method: roofline(args.scale, method, dtype, gpu, args.batch, args.checkpointing) for method in args.samplers
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
