"""Make examples/digits/: measurements of a few test digits, as a user would have them, for the
README's "Restore your own images" (committed, so that its commands run from a fresh clone).

Each is made by the task's own operator (configs/digits/<task>/task.yaml) and saved as an 8-bit
PNG; one per task has another size (a 7x5 low-resolution digit, a 24x16 blurred one), a blurred
one its own kernel (``<name>.kernel.npy``), an inpainting one its own mask (``<name>.mask.png``,
white = fill in). The clean digits of the square ones are in examples/digits/clean/.

    python -m data_tools digits --out data/digits
    python scripts/make_examples.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import cse  # noqa: F401  (torchvision on CPU-only torch)
from cse.data import index_source
from cse.images import decode_image, save_png, to_tensor
from cse.operators import BoxInpainting, Convolution, GaussianBlur, SuperResolution
from cse.operators.blur import gaussian_kernel
from cse.operators.resize import imresize

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("digit0010", "digit0021", "digit0026")


def clean_digits(source: str) -> dict[str, torch.Tensor]:
    refs = {ref.key: ref for ref in index_source(source)}
    return {key: to_tensor(decode_image(refs[key].read()))[None] for key in KEYS}


def resized(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A digit at another size (MATLAB-style bicubic), as an off-size input."""
    return imresize(x, height, width).clamp(-1, 1)


def write(out: Path, digits: dict[str, torch.Tensor]) -> None:
    first, second, third = (digits[k] for k in KEYS)
    sr, blur, box = SuperResolution(4), GaussianBlur(13, 1.5), BoxInpainting((8, 16))
    for key, x in digits.items():
        save_png(x[0], out / "clean" / f"{key}.png")
        save_png(sr(x)[0].clamp(-1, 1), out / "sr4" / f"{key}.png")
    save_png(sr(resized(third, 28, 20))[0].clamp(-1, 1), out / "sr4" / "tall_7x5.png")
    save_png(blur(first)[0].clamp(-1, 1), out / "gblur" / f"{KEYS[0]}.png")
    save_png(blur(second)[0].clamp(-1, 1), out / "gblur" / f"{KEYS[1]}.png")
    kernel = gaussian_kernel(9, 1.0)  # another, known kernel: shipped beside its measurement
    np.save(out / "gblur" / "wide_24x16.kernel.npy", kernel.numpy())
    save_png(Convolution(kernel)(resized(third, 24, 16))[0].clamp(-1, 1), out / "gblur" / "wide_24x16.png")
    save_png(box(first)[0], out / "inpaint" / f"{KEYS[0]}.png")
    save_png(box(second)[0], out / "inpaint" / f"{KEYS[1]}.png")
    hole = torch.ones(1, 1, 16, 16)
    hole[..., 2:8, 3:13] = 0  # the top half of the digit is missing
    save_png(third[0] * hole[0], out / "inpaint" / f"{KEYS[2]}.png")
    save_png(((1 - hole[0, 0]) * 255).to(torch.uint8).numpy(), out / "inpaint" / f"{KEYS[2]}.mask.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", default=str(ROOT / "data/digits/test"))
    parser.add_argument("--out", default=str(ROOT / "examples/digits"))
    args = parser.parse_args()
    out = Path(args.out)
    for folder in ("clean", "sr4", "gblur", "inpaint"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write(out, clean_digits(args.digits))
    print(f"wrote {sum(1 for _ in out.rglob('*.*'))} files under {out}")


if __name__ == "__main__":
    main()
