"""Write configs/digits/<operator>_<method>.yaml (18 predict configs) from configs/digits/step_sizes.json.

The seventh cell, the CSE alone, is the CSE's own config: <operator>_cse.yaml trains it with
``fit`` and runs it with ``predict`` (``--model.init_args.controlnet=checkpoints/digits/<operator>_cse``).

python scripts/make_digits_configs.py
"""

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "digits"
OPERATORS = {
    "sr4": ("x4 super-resolution", "cse.operators.SuperResolution", "factor: 4"),
    "inpaint": ("half-image band inpainting", "cse.operators.BoxInpainting", "size: [8, 16]"),
    "gblur": ("Gaussian deblurring", "cse.operators.GaussianBlur", "kernel_size: 13\n        std: 1.5"),
}


def methods(steps: dict) -> dict:
    """name -> (label, sampler class, sampler init args, uses the CSE)."""
    zeta, dmap, rate = steps["dps_zeta"], steps["dmap_zeta"], steps["dsg_rate"]
    return {
        "dps": ("DPS", "DPS", {"zeta": zeta, "num_steps": 50}, False),
        "dsg": ("DSG", "DSG", {"guidance_rate": rate, "num_steps": 50}, False),
        "dmap_same": ("DMAP (same)", "DMAP", {"zeta": 2 * dmap, "num_steps": 25, "ascent_steps": 2}, False),
        "dmap_full": ("DMAP (full)", "DMAP", {"zeta": dmap, "num_steps": 50, "ascent_steps": 3}, False),
        "dps_cse": ("DPS + CSE", "DPS", {"zeta": zeta, "num_steps": 50}, True),
        "dmap_cse": ("DMAP (full) + CSE", "DMAP", {"zeta": dmap, "num_steps": 50, "ascent_steps": 3}, True),
    }


def config(op: str, method: str, label: str, sampler: str, args: dict, uses_cse: bool) -> str:
    title, operator, operator_args = OPERATORS[op]
    sampler_args = "\n".join(f"        {k}: {v}" for k, v in args.items())
    controlnet = f"checkpoints/digits/{op}_cse" if uses_cse else "null"
    return f"""# Digits, {title}, {label}: restores the 200 test digits offline on CPU.
#   python -m cse predict --config configs/digits/{op}_{method}.yaml
# (written by scripts/make_digits_configs.py from step sizes tuned on train digits)
trainer:
  logger: false
  default_root_dir: outputs/digits/{op}/{method}
model:
  class_path: cse.restoration.RestorationModule
  init_args:
    pretrained: checkpoints/digits/prior
    controlnet: {controlnet}
    operator:
      class_path: {operator}
      init_args:
        {operator_args}
    sampler:
      class_path: cse.samplers.{sampler}
      init_args:
{sampler_args}
    output_dir: outputs/digits/{op}/{method}
    lpips: false
    fid: true
    feature_network:
      class_path: cse.digits.DigitsFeatures
data:
  class_path: cse.data.ImageDataModule
  init_args:
    predict: data/digits/test
    image_size: 16
    batch_size: 200
    num_workers: 0
"""


def main() -> None:
    chosen = json.loads((CONFIGS / "step_sizes.json").read_text())["chosen"]
    for op in OPERATORS:
        for method, spec in methods(chosen[op]).items():
            (CONFIGS / f"{op}_{method}.yaml").write_text(config(op, method, *spec))


if __name__ == "__main__":
    main()
