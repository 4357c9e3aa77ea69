"""Where a step's time goes, by kernel family: ``torch.profiler`` over one call, each kernel (or, on
a CPU, each aten op) put in one family by its name, the families' self time summed.

The families are those ``docs/performance.md`` reports: convolution, attention, normalisation,
element-wise, layout copies (cuDNN's NCHW <-> NHWC conversions), up-sampling, matrix products.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (  # the first family whose marker a name holds
    ("layout copies", ("nchwtonhwc", "nhwctonchw", "convert_layout")),
    ("attention", ("fmha", "flash", "attention", "mem_eff", "scaled_dot_product")),
    ("up-sampling", ("upsample",)),
    ("normalisation", ("norm",)),
    ("convolution", ("conv", "dgrad", "wgrad", "fprop", "implicit_gemm", "cudnn")),
    ("matrix products", ("gemm", "matmul", "addmm", "bmm", "mm", "cutlass", "xmma")),
    ("element-wise", ("elementwise", "vectorized", "triton", "reduce", "add", "mul", "copy", "silu", "fill")),
)


def kernel_family(name: str) -> str:
    """The family of a kernel or aten op named ``name`` ("other" when no marker matches)."""
    lowered = name.lower()
    return next((family for family, markers in FAMILIES if any(m in lowered for m in markers)), "other")


def profile_families(call: Callable[[], object], device: str = "cuda") -> dict[str, dict[str, float]]:
    """Self time of ``call()`` per family, in ms and as a share of the total: the GPU's kernels on
    CUDA, aten ops on the CPU (the same names a CPU dry run of the script shows)."""
    on_gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        call()
        if on_gpu:
            torch.cuda.synchronize()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        micros = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        if micros > 0 and (on_gpu or event.key.startswith("aten::")):
            family = kernel_family(event.key)
            totals[family] = totals.get(family, 0.0) + micros / 1e3
    whole = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return {family: {"ms": ms, "share": ms / whole} for family, ms in ranked}
