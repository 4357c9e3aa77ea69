"""Speed options keep the numbers: each fast path against plain fp32 on the same seeds (tiny stack),
the counting of cse.profiling, and the FLOP-accounted benchmark script from a fresh clone."""

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cse.metrics import psnr
from cse.operators import SuperResolution
from cse.priors import DiffusersPrior
from cse.profiling import LiveMemory, TrafficCounter, count_flops, fused_attention, memory_model, roofline, sd2_base
from cse.samplers import DMAP, DPS

ROOT = Path(__file__).resolve().parents[1]


def restore(prior: DiffusersPrior, device: str = "cpu") -> torch.Tensor:
    A = SuperResolution(2)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), device="cpu").to(device) * 2 - 1
    return DPS(1.0, 4)(prior.to(device), A, A(x), seeds=[0, 1]).float()


@pytest.fixture(scope="module")
def reference(tiny_latent) -> torch.Tensor:
    return restore(DiffusersPrior.from_pretrained(tiny_latent))


@pytest.mark.parametrize(
    "options, min_psnr",
    [
        ({"torch_dtype": "bfloat16"}, 40.0),  # measured here: 56 dB
        ({"torch_dtype": "float16"}, 55.0),  # measured here: 74 dB
        ({"channels_last": True}, 90.0),  # float32 re-ordering only: >= 120 dB measured
        ({"gradient_checkpointing": True}, 90.0),
    ],
    ids=["bf16", "fp16", "channels_last", "checkpointing"],
)
def test_fast_paths_stay_close_to_fp32(tiny_latent, reference, options, min_psnr):
    fast = restore(DiffusersPrior.from_pretrained(tiny_latent, **options))
    assert torch.isfinite(fast).all()
    assert psnr(fast, reference).min() >= min_psnr


def test_sdpa_and_classic_attention_agree(tiny_latent, reference):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    prior = DiffusersPrior.from_pretrained(tiny_latent)
    assert any(isinstance(p, AttnProcessor2_0) for p in prior.unet.attn_processors.values())  # SDPA by default
    prior.unet.set_attn_processor(AttnProcessor())
    torch.testing.assert_close(restore(prior), reference, atol=1e-4, rtol=0)


def test_the_decoders_attention_as_plain_matmuls_agrees(tiny_latent, reference):
    from diffusers.models.attention_processor import AttnProcessor

    prior = DiffusersPrior.from_pretrained(tiny_latent, decoder_attention="matmul")
    processors = prior.vae.attn_processors.values()
    assert processors and all(isinstance(p, AttnProcessor) for p in processors)
    torch.testing.assert_close(restore(prior), reference, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="decoder_attention must be"):
        DiffusersPrior.from_pretrained(tiny_latent, decoder_attention="flash")


def test_the_decoder_in_chunks_gives_the_same_restoration_and_guidance(tiny_latent, reference):
    """Chunked decoding (here one latent at a time) equals decoding at once, the guidance's
    gradient through the decoder included (DPS back-propagates through it at every step)."""
    prior = DiffusersPrior.from_pretrained(tiny_latent, max_decode_batch=1)
    torch.testing.assert_close(restore(prior), reference, atol=1e-5, rtol=0)
    latents = torch.randn(3, *prior.sample_shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    sizes = []
    hook = prior.vae.decoder.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    (chunked,) = torch.autograd.grad(prior.decode(latents).square().sum(), latents)
    hook.remove()
    assert sizes == [1, 1, 1]
    prior.max_decode_batch = None
    (whole,) = torch.autograd.grad(prior.decode(latents).square().sum(), latents)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_sd2_decodes_in_chunks_below_int_max_elements():
    """SD2's decoder at 512² makes 256 x 512 x 512 values per image (the up-sampling that crashed at
    batch 32 on an H200); so 31 latents are decoded at once, and 14 at 768²."""
    from cse.priors.diffusers_prior import widest_decoder_activation

    sd2 = (128, 256, 512, 512)
    assert widest_decoder_activation(sd2, 64 * 64) == 256 * 512 * 512
    assert (2**31 - 1) // widest_decoder_activation(sd2, 64 * 64) == 31
    assert (2**31 - 1) // widest_decoder_activation(sd2, 96 * 96) == 14


@pytest.mark.slow
def test_compiled_networks_give_the_same_restoration(tiny_latent, reference):
    """torch.compile of UNet, ControlNet and VAE, the guidance's backward included (about 2 min on CPU)."""
    compiled = restore(DiffusersPrior.from_pretrained(tiny_latent, compile=True))
    torch.testing.assert_close(compiled, reference, atol=1e-4, rtol=0)


# -- the benchmark ---------------------------------------------------------------------------------


def sd2_dps(dtype: torch.dtype = torch.float32, **sampler) -> tuple[DiffusersPrior, DPS]:
    """SD2-base on meta tensors and DPS at the paper's SR x8 settings (500 steps)."""
    return sd2_base("meta", dtype), DPS(zeta=4.8, num_steps=500, **sampler)


@pytest.fixture(scope="module")
def dps_step_flops() -> float:
    """FLOPs of one DPS step per image at SD2-base 512 px (meta tensors)."""
    return count_flops(*sd2_dps())["step"]


def test_flops_of_an_sd2_step_are_counted_from_its_networks(dps_step_flops):
    """One DPS step at SD2-base 512 px runs the UNet and the VAE decoder forward, and back through
    both for the input gradient only (the weights are frozen): about twice their forward FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    prior = sd2_base("meta", torch.float32)
    z = torch.zeros(1, 4, 64, 64, device="meta")
    with FlopCounterMode(display=False) as counter:
        prior.decode(prior.denoise(z, 3.0))
    forward = counter.get_total_flops()
    assert 3.2e12 < forward < 3.4e12  # UNet 0.80 + decoder 2.51 TFLOP, as torch counts them
    step = dps_step_flops
    assert 2.0 * forward < step < 2.1 * forward
    dmap_full = DMAP(zeta=4.8, num_steps=500, ascent_steps=3)
    assert count_flops(prior, dmap_full)["step"] > 3 * step  # K = 3 gradient steps


def test_the_roofline_counts_each_ops_bytes_and_flops():
    x, w = torch.zeros(2, 8, 32, 32, device="meta"), torch.zeros(16, 8, 3, 3, device="meta")
    with TrafficCounter() as counter:
        F.conv2d(x, w, padding=1)
    ((name, flops, moved),) = counter.ops
    assert name == "convolution" and flops == 2 * (2 * 16 * 32 * 32) * (8 * 3 * 3)
    assert moved == 4 * (x.numel() + w.numel() + 2 * 16 * 32 * 32)  # fp32: input, weight and output, once each
    assert counter.roofline(peak_tflops=1.0, bandwidth_tbs=1e-3) == {"convolutions": moved / 1e9}
    assert counter.roofline(peak_tflops=1e-6, bandwidth_tbs=1.0) == {"convolutions": flops / 1e6}
    x.requires_grad_(True)
    with TrafficCounter() as counter:
        F.conv2d(x, w, padding=1).backward(torch.zeros(2, 16, 32, 32, device="meta"))
    ((_, _, moved_back),) = [op for op in counter.ops if op[0] == "convolution_backward"]
    assert moved_back == moved  # the output's gradient and the weight in, the input's gradient out


@pytest.mark.parametrize("fused", [False, True])
def test_attention_is_counted_as_a_fused_kernel(fused):
    """A GPU's SDPA never writes the attention matrix (here 2 heads x 2048^2 x 4 bytes = 32 MiB)."""
    q = torch.zeros(1, 2, 2048, 64, device="meta", requires_grad=True)
    with fused_attention() if fused else nullcontext(), TrafficCounter() as counter:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    largest = max(moved for _, _, moved in counter.ops)
    assert (largest < 4 * 2 * 2048**2) == fused
    assert sum(flops for _, flops, _ in counter.ops) >= 3 * 2 * (2 * 2 * 2048**2 * 64)  # QK^T and PV, and back


def test_live_memory_counts_each_storage_until_its_last_tensor_is_freed():
    nbytes = 4 * 1024
    weight = torch.zeros(1024, 1024, device="meta")  # made outside: not the step's memory
    with LiveMemory() as memory:
        a = torch.zeros(1024, device="meta")
        b = a + 1
        del b
        c = a * 2
        view = c.view(32, 32)
        weight.t().add_(0)  # a view of a tensor made elsewhere, changed in place: allocates nothing
        assert memory.live == memory.peak == 2 * nbytes  # a, c: b was freed, the view holds c's storage
        del c
        assert memory.live == 2 * nbytes
        del view, a
    assert memory.live == 0 and memory.peak == 2 * nbytes


def test_live_memory_counts_what_autograd_saves_until_the_backward_pass():
    nbytes = 4 * 1024
    x = torch.zeros(1024, device="meta", requires_grad=True)
    with LiveMemory() as memory:
        y = x.exp()  # exp saves its output for the backward pass
        z = y.sum()
        del y
        assert memory.live >= nbytes  # y's storage lives on in the graph
        z.backward()
        del z
    assert memory.live == nbytes and x.grad.numel() == 1024  # x's gradient alone: y was freed


def test_the_memory_model_of_an_sd2_step_grows_with_the_batch():
    """At SD2-base 512 px (meta tensors): the weights once, activations per image, and gradient
    checkpointing trades most of them for recomputation (measured on an H100: 5.5 GiB at batch 1 in
    bf16, 62.3 at 16; docs/performance.md)."""
    one, four = (memory_model(*sd2_dps(torch.bfloat16), b) for b in (1, 4))
    prior, sampler = sd2_dps(torch.bfloat16)
    prior.enable_gradient_checkpointing()
    checkpointed = memory_model(prior, sampler, 1)
    assert one["weights_gib"] == pytest.approx(949e6 * 2 / 2**30, rel=0.01)  # 865 M + 84 M parameters in bf16
    per_image = one["peak_gib"] - one["weights_gib"]
    assert four["peak_gib"] - four["weights_gib"] == pytest.approx(4 * per_image, rel=0.1)
    assert checkpointed["peak_gib"] - checkpointed["weights_gib"] < 0.6 * per_image


def test_the_bounds_of_an_sd2_run_add_up(dps_step_flops):
    bounds = roofline(*sd2_dps(torch.bfloat16), "H100")
    assert bounds["compute_bound_s"] == pytest.approx(
        500 * dps_step_flops / 989e12, rel=0.02
    )  # fused attention recomputes
    assert bounds["roofline_s"] == pytest.approx(sum(bounds["roofline_by_family_s"].values()))
    assert bounds["compute_bound_s"] < bounds["roofline_s"] and bounds["bytes_per_image"] > 1e12
    assert set(bounds["roofline_by_family_s"]) >= {"convolutions", "attention", "normalisation"}


def benchmark(*args: str) -> None:
    """python scripts/benchmark_sampling.py ARGS, as from a fresh clone (the package from this tree)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    script = ROOT / "scripts" / "benchmark_sampling.py"
    subprocess.run([sys.executable, str(script), *args], check=True, env=env, cwd=ROOT)


def test_the_benchmark_runs_at_tiny_scale(tmp_path):
    out = tmp_path / "tiny.json"
    benchmark("--scale", "tiny", "--samplers", "dps", "resample", "--steps", "1", "--gpu", "H100", "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [r["sampler"] for r in rows] == ["dps", "resample"]
    assert all(r["flops_per_image"] > 0 and r["seconds_per_image"] > 0 for r in rows)
    bounds = json.loads(out.read_text())["bounds"]["dps"]
    assert 0 < bounds["compute_bound_s"] < bounds["roofline_s"] and bounds["gpu"] == "H100"
    assert rows[1]["steps"] == {"step": 500, "consistency": 2}  # steps 50 and 100 of 500


def test_the_samplers_own_overhead_is_measured(tmp_path):
    out = tmp_path / "overhead.json"
    benchmark("--scale", "digits", "--overhead", "--steps", "2", "--json", str(out))
    result = json.loads(out.read_text())["overhead"]
    assert 0 < result["seconds_without_network"] < result["seconds_per_step"]
