"""How accurate ``noise: auto`` is on the digits: each estimator of cse.operators.noise_estimate on
the measurements of the 200 test digits, made by each digits operator at known noise stds.

    python -m data_tools digits --out data/digits
    python scripts/noise_estimates.py            # a markdown table; seconds on a CPU
    python scripts/noise_estimates.py --png      # the same measurements saved as 8-bit PNGs
"""

from __future__ import annotations

import argparse

import torch

import cse  # noqa: F401  (torchvision on CPU-only torch)
from cse.data import index_source
from cse.images import decode_image, to_tensor
from cse.operators import BoxInpainting, GaussianBlur, SuperResolution
from cse.operators.noise_estimate import ESTIMATORS

OPERATORS = {  # the digits tasks' operators (configs/digits/<task>/task.yaml)
    "sr4 (4x4 measurements)": SuperResolution(4),
    "gblur": GaussianBlur(13, 1.5),
    "inpaint": BoxInpainting((8, 16)),
}


def load(source: str) -> torch.Tensor:
    return torch.stack([to_tensor(decode_image(ref.read())) for ref in index_source(source)])


def as_png(y: torch.Tensor) -> torch.Tensor:
    """``y`` as an 8-bit PNG holds it: clipped to [-1, 1] and rounded to 256 levels."""
    return torch.round((y.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/digits/test")
    parser.add_argument("--stds", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1])
    parser.add_argument("--png", action="store_true", help="estimate on the measurements saved as 8-bit PNGs")
    args = parser.parse_args()
    x = load(args.data)
    print(f"{len(x)} images; estimate: mean ± std over images (mean absolute error), noise std on [-1, 1]\n")
    print("| operator | estimator | " + " | ".join(f"std {s:g}" for s in args.stds) + " |")
    print("|---|---|" + "---|" * len(args.stds))
    for name, operator in OPERATORS.items():
        clean = operator(x)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        for estimator, estimate in ESTIMATORS.items():
            cells = []
            for std in args.stds:
                y = clean + std * noise
                sigma = estimate(as_png(y) if args.png else y)
                cells.append(f"{sigma.mean():.3f} ± {sigma.std():.3f} ({(sigma - std).abs().mean():.3f})")
            print(f"| {name} | {estimator} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
