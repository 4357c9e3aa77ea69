"""Sampling cost without running it at scale: FLOPs and bytes of every op, lower bounds on a GPU's
time (the roofline) and a model of peak memory, all counted on meta tensors (shapes, no values), and
the timing of steps where they do run. ``scripts/benchmark_sampling.py`` prints them per sampler.

A run is counted one step of each kind at a time (see :func:`step_kinds`), at the middle of the
trajectory, and multiplied by how many steps of that kind it makes.
"""

from __future__ import annotations

import time
import weakref
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from cse.operators import Measurement, Operator, SuperResolution
from cse.priors import DiffusersPrior
from cse.priors.diffusers_prior import sd_scheduler
from cse.priors.schedule import DiscreteSchedule
from cse.samplers import ReSample
from cse.samplers.common import Sampler
from cse.samplers.freedom import FreeDoM
from cse.seeding import generators_from_seeds

PEAK_TFLOPS = {  # dense tensor-core peaks (NVIDIA data sheets, SXM): bf16/fp16, and TF32 for fp32 work
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 494.0},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
}
BANDWIDTH_TBS = {"H100": 3.35, "H200": 4.8, "A100": 2.04}  # HBM bandwidth (NVIDIA data sheets, SXM)


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


def step_kinds(sampler: Sampler) -> dict[str, int]:
    """How many steps of each kind a run makes: 'step' (one ordinary step), and for FreeDoM the
    extra passes, for ReSample the consistency optimisations (counted at ``max_iters``)."""
    kinds = {"step": sampler.num_steps}
    if isinstance(sampler, FreeDoM):
        kinds["step"] += sum(sampler.travels(i) for i in range(sampler.num_steps)) * (sampler.repeats - 1)
    if isinstance(sampler, ReSample):
        kinds["consistency"] = sum(sampler.consistency_step(i) for i in range(sampler.num_steps))
    return kinds


def problem(
    prior: DiffusersPrior, batch: int, factor: int = 8, size: int | None = None
) -> tuple[Operator, torch.Tensor, torch.Size]:
    """A super-resolution problem of ``batch`` seeded random images at the prior's size, or ``size``
    (x``factor`` where it divides the size, else x4): the operator, ``y`` and the sampler's state shape."""
    size = size or prior.image_size
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


def count_flops(prior: DiffusersPrior, sampler: Sampler, batch: int = 1) -> dict[str, float]:
    """FLOPs per image of each step kind (a ReSample consistency step at ``max_iters`` iterations);
    on a prior on meta tensors nothing is computed, and with gradient checkpointing enabled the
    recomputed forward passes are included."""
    operator, y, shape = problem(prior, batch)
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


def roofline(prior: DiffusersPrior, sampler: Sampler, gpu: str, batch: int = 1) -> dict:
    """A run's bytes moved and lower bounds on its time per image on ``gpu``: ``compute`` (every FLOP
    at the tensor cores' peak) and ``roofline`` (op by op, the slower of its FLOPs at peak and its
    bytes at full bandwidth), with the latter's share per op family, in the prior's dtype."""
    operator, y, shape = problem(prior, batch)
    peak, bandwidth = PEAK_TFLOPS[gpu][dtype_name(prior)], BANDWIDTH_TBS[gpu]
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


def memory_model(prior: DiffusersPrior, sampler: Sampler, batch: int, size: int | None = None) -> dict[str, float]:
    """Peak memory of a step (GiB) on images of ``size`` (default: the prior's), from the tensors it
    makes on meta tensors, plus the weights: what ``torch.cuda.max_memory_allocated`` would report,
    less workspaces and the allocator's rounding."""
    operator, y, shape = problem(prior, batch, size=size)
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


def gpu_model(device: str) -> str | None:
    """This device's entry in PEAK_TFLOPS (None on a CPU or an unlisted GPU)."""
    if not device.startswith("cuda"):
        return None
    return next((key for key in PEAK_TFLOPS if key in torch.cuda.get_device_name()), None)


def dtype_name(prior: DiffusersPrior) -> str:
    """The dtype of the prior's networks as PEAK_TFLOPS names it, e.g. 'bfloat16'."""
    return str(prior.unet.dtype).removeprefix("torch.")
