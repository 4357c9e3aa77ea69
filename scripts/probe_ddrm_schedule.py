"""Why our DDRM and DeepInverse's differ on SR x4 digits: each difference of DeepInverse's DDRM moved
to the other side, one at a time, on the same 200 test digits and seeds as compare_deepinv.py --quality.

    python scripts/probe_ddrm_schedule.py --nfe 50

(a) our DDRM on DeepInverse's sigmas (linear from 2 to 0 on [-1, 1], i.e. 1 to 0 on [0, 1]) instead of
the prior's own schedule (from its sigma_max 14.6); (b) DeepInverse's DDRM with the denoiser told the
noise level its state has (its draws are scaled by 1 / sqrt(2), deepinv/sampling/diffusion.py lines
195 and 226, while the denoiser is given sigma_t): D(x, sigma / sqrt(2)).
"""

import argparse
import math

import torch
from compare_deepinv import OURS, digits, in_batches, run_deepinv, run_ours, sr4_measurement  # noqa: F401

import cse  # noqa: F401
from cse.metrics import psnr
from cse.priors import CountingPrior, DiffusersPrior
from cse.samplers.registry import METHODS
from cse.seeding import seed_from_key


class LinearSigmas:
    """``sigma_max * linspace(1, 0, num_steps + 1)``: DeepInverse DDRM's grid, on [-1, 1]."""

    def __init__(self, sigma_max: float) -> None:
        self.sigma_max = sigma_max

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return self.sigma_max * torch.linspace(1, 0, num_steps + 1, dtype=torch.float64)


class TrueLevel(CountingPrior):
    """The prior told ``sigma / sqrt(2)``: the noise level DeepInverse's DDRM states really carry."""

    def denoise(self, u, sigma):
        return super().denoise(u, sigma / math.sqrt(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nfe", type=int, default=50)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    base = DiffusersPrior.from_pretrained("checkpoints/digits/prior")
    prior = CountingPrior(base)
    keys, images = digits("test", 200)
    y, measurement = sr4_measurement().measure_keys(images, keys, "0")
    operator, shape = measurement.operator, tuple(images.shape[1:])
    scores = {}
    scores["DeepInverse ddrm"] = psnr(
        run_deepinv(prior, "ddrm", args.nfe, y, operator, shape, args.batch, {})[0], images
    )
    scores["cse ddrm"] = psnr(run_ours(prior, "ddrm", args.nfe, y, operator, shape, keys, args.batch)[0], images)
    entry = METHODS["ddrm"]
    linear = entry.sampler(**entry.settings(args.nfe - 1, {}), schedule=LinearSigmas(2.0))

    def run(part):
        seeds = [seed_from_key(key, "sample:0:0") for key in keys[part]]
        return linear(prior, operator, y[part], seeds, shape=shape)

    scores["(a) cse ddrm, DeepInverse's sigmas"] = psnr(in_batches(prior, len(keys), args.batch, run)[0], images)
    told = TrueLevel(base)
    out = run_deepinv(told, "ddrm", args.nfe, y, operator, shape, args.batch, {})[0]
    scores["(b) DeepInverse ddrm, denoiser told sigma / sqrt(2)"] = psnr(out, images)
    reference = scores["DeepInverse ddrm"]
    for name, score in scores.items():
        diff = score - reference
        print(f"| {name} | {score.mean():.2f} | {diff.mean():+.2f} ± {diff.std():.2f} |", flush=True)


if __name__ == "__main__":
    main()
