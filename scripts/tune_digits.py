"""Tune the digits step sizes on TRAIN digits (never the test set); writes configs/digits/step_sizes.json.

For each operator: DPS zeta, DMAP (full) zeta and the DSG rate are picked by mean PSNR over
32 train digits (the last 32 of the split, which no 100-image CSE set depends on), with the
prior alone and the samplers' digits step counts. DMAP (same) uses twice the DMAP zeta, and the
"+CSE" variants use the same step sizes as without.

    python scripts/tune_digits.py          # minutes on 2 CPU cores
"""

import json
import time
from pathlib import Path

import torch

import cse  # noqa: F401
from cse.data import ImageDataset, collate, eval_transform, index_source
from cse.metrics import psnr
from cse.operators import BoxInpainting, GaussianBlur, SuperResolution
from cse.priors.diffusers_prior import DiffusersPrior
from cse.samplers import DMAP, DPS, DSG

OPERATORS = {"sr4": SuperResolution(4), "inpaint": BoxInpainting((8, 16)), "gblur": GaussianBlur(13, 1.5)}
GRIDS = {  # powers of 2; a grid is extended upwards while its best value is its largest
    "zeta": [1.0, 2.0, 4.0, 8.0, 16.0],
    "rate": [0.05, 0.1, 0.2, 0.4],
}
LIMITS = {"zeta": 1024.0, "rate": 1.0}


def main() -> None:
    torch.manual_seed(0)
    prior = DiffusersPrior.from_pretrained("checkpoints/digits/prior")
    refs = index_source("data/digits/train")[-32:]
    batch = collate([ImageDataset(refs, eval_transform(16))[i] for i in range(len(refs))])
    images, seeds = batch["image"], list(range(len(refs)))
    chosen, report = {}, {}
    for name, operator in OPERATORS.items():
        y = operator(images)
        samplers = {
            "dps_zeta": ("zeta", lambda z: DPS(z, 50)),
            "dmap_zeta": ("zeta", lambda z: DMAP(z, 50, ascent_steps=3)),
            "dsg_rate": ("rate", lambda r: DSG(r, 50)),
        }
        chosen[name], report[name] = {}, {}
        for key, (grid, make) in samplers.items():
            scores, values = {}, list(GRIDS[grid])
            while values:
                value = values.pop(0)
                start = time.perf_counter()
                try:
                    scores[value] = psnr(make(value)(prior, operator, y, seeds), images).mean().item()
                except FloatingPointError:  # diverged
                    scores[value] = float("-inf")
                seconds = time.perf_counter() - start
                print(f"{name} {key}={value}: PSNR {scores[value]:.2f} dB ({seconds:.0f} s)", flush=True)
                best = max(scores, key=scores.get)
                if not values and best == max(scores) and 2 * best <= LIMITS[grid]:
                    values.append(2 * best)
            chosen[name][key] = max(scores, key=scores.get)
            report[name][key] = scores
    path = Path("configs/digits/step_sizes.json")
    path.write_text(json.dumps({"chosen": chosen, "psnr_on_32_train_digits": report}, indent=2))
    print(json.dumps(chosen, indent=2))


if __name__ == "__main__":
    main()
