"""Our DiffPIR on DeepInverse DiffPIR's sigmas (its DDPM linear-beta schedule, sqrt-spaced steps, from
sigma 157 on [-1, 1]) instead of the prior's own, on the 200 test digits, paired against the runs of
``compare_deepinv.py --quality --diffpir-lambda 8 --diffpir-zeta 0.3`` kept in docs/compare-deepinv.json:

    python scripts/probe_diffpir_schedule.py --nfe 100
"""

import argparse
import json

import torch
from compare_deepinv import ROOT, digits, in_batches, our_method, sr4_measurement

import cse  # noqa: F401
from cse.metrics import psnr
from cse.priors import CountingPrior, DiffusersPrior
from cse.seeding import seed_from_key


class DeepInverseSigmas:
    """DeepInverse DiffPIR's ``max_iter`` sigmas (VE, on [-1, 1]), then 0."""

    def sigmas(self, num_steps: int) -> torch.Tensor:
        import deepinv  # after cse (torchvision)

        method = deepinv.sampling.DiffPIR(None, None, max_iter=num_steps)
        grid = method.sigmas[method.seq].to(torch.float64)
        return torch.cat([grid, torch.zeros(1, dtype=torch.float64)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nfe", type=int, default=100)
    args = parser.parse_args()
    prior = CountingPrior(DiffusersPrior.from_pretrained(ROOT / "checkpoints/digits/prior"))
    keys, images = digits("test", 200)
    y, measurement = sr4_measurement().measure_keys(images, keys, "0")
    sampler = our_method("diffpir", args.nfe)
    sampler.schedule = DeepInverseSigmas()

    def run(part):
        seeds = [seed_from_key(key, "sample:0:0") for key in keys[part]]
        return sampler(prior, measurement.operator, y[part], seeds, shape=tuple(images.shape[1:]))

    out, seconds, evaluations = in_batches(prior, len(keys), 200, run)
    score = psnr(out, images)
    runs = json.loads((ROOT / "docs/compare-deepinv.json").read_text())["runs"]
    for name in (f"DeepInverse diffpir {args.nfe} (lambda 8, zeta 0.3, floor 0.002)", f"cse diffpir {args.nfe}"):
        diff = score - torch.tensor(runs[name]["psnr"])
        print(
            f"cse diffpir on DeepInverse's sigmas ({evaluations:.0f} NFE): {score.mean():.2f} dB; "
            f"minus {name}: {diff.mean():+.2f} ± {diff.std():.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
