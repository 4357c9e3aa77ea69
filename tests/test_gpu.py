"""On a CUDA device (pytest -m gpu): the same numbers as on the CPU, the fast paths, and a clear
message when memory runs out."""

import pytest
import torch

from cse.data import collate
from cse.metrics import psnr
from cse.operators import Measurement, SuperResolution
from cse.priors import DiffusersPrior
from cse.restoration import RestorationModule
from cse.samplers import DMAP, DPS

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def restore(prior: DiffusersPrior, device: str) -> torch.Tensor:
    A = SuperResolution(2)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    return DPS(1.0, 4)(prior.to(device), A, A(x), seeds=[0, 1]).float().cpu()


def test_a_restoration_on_cuda_is_the_one_on_cpu(tiny_latent):
    cpu = restore(DiffusersPrior.from_pretrained(tiny_latent), "cpu")
    cuda = restore(DiffusersPrior.from_pretrained(tiny_latent), "cuda")
    assert psnr(cuda, cpu).min() > 60  # the same seeds draw the same noise (on the CPU), TF32 aside


@pytest.mark.parametrize(
    "options, min_psnr",
    [({"torch_dtype": "bfloat16"}, 35.0), ({"channels_last": True}, 60.0), ({"compile": True}, 60.0)],
    ids=["bf16", "channels_last", "compile"],
)
def test_fast_paths_on_cuda(tiny_latent, options, min_psnr):
    reference = restore(DiffusersPrior.from_pretrained(tiny_latent), "cuda")
    fast = restore(DiffusersPrior.from_pretrained(tiny_latent, **options), "cuda")
    assert torch.isfinite(fast).all() and psnr(fast, reference).min() >= min_psnr


def test_running_out_of_memory_says_which_batch_size_fits(tiny_latent):
    torch.cuda.empty_cache()
    module = RestorationModule(
        DiffusersPrior.from_pretrained(tiny_latent).cuda(), Measurement(SuperResolution(4)), DMAP(1.0, 4)
    ).cuda()
    images = torch.rand(512, 3, 256, 256) * 2 - 1
    batch = collate([{"key": f"k{i}", "sample_id": f"k{i}", "image": im, "label": -1} for i, im in enumerate(images)])
    batch["image"] = batch["image"].cuda()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 2**30) / total)  # 1 GiB to work in
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError, match=r"batch of 512 .* --data.init_args.batch_size=\d+ fits"):
            module.predict_step(batch, 0)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
