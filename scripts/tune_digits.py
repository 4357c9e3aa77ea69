"""Tune every method's step size on TRAIN digits (never the test set), by one procedure for all.

For each task and each method file, the step size the method reads from the task's `sampling:`
block (``${sampling.NAME}``, e.g. ``dps_zeta``) is chosen by mean PSNR over 32 train digits, with
the prior alone, through the same `python -m cse predict` run a user makes. The grid is powers of
2 (rates: 0.05 ... 1) and is extended, up or down, while the best value sits at its edge. The
chosen values are written into the task files (the one place step sizes live) and every score into
docs/digits-tuning.json. "+CSE" runs use the step sizes tuned without the CSE.

    python scripts/tune_digits.py                                    # the digits tasks, every method
    python scripts/tune_digits.py --tasks digits/sr4 --methods dps dsg
"""

import argparse
import json
import re
import tempfile
from pathlib import Path

import yaml

import cse  # noqa: F401
from cse.cli import main as cse_main
from cse.data import ImageDataset, collate, index_source
from cse.images import eval_transform, save_png

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TASKS = [f"digits/{op}" for op in ("sr4", "inpaint", "gblur", "nlblur")]
TASKS += [f"digits_latent/{op}" for op in ("sr8", "inpaint", "gblur", "nlblur")]
SHIPPED = [task for task in TASKS if (ROOT / "checkpoints" / task.split("/")[0] / "prior").is_dir()]  # the default
METHODS = [
    "dps",
    "dsg",
    "dmap_full",
    "dmap_same",
    "psld",
    "freedom",
    "resample",
    "dps_ddim",
    "dps_scaled",
    "dmap_full_scaled",
]
NOT_STEP_SIZES = {"num_steps", "half_steps", "psld_gamma"}
TUNING_COUNT = 32  # the last 32 train digits in key order


def tuned_key(method: str) -> str:
    """The ``sampling`` entry a method file reads as its step size."""
    text = (CONFIGS / "samplers" / f"{method}.yaml").read_text()
    keys = [k for k in re.findall(r"\$\{sampling\.(\w+)\}", text) if k not in NOT_STEP_SIZES]
    if len(keys) != 1:
        raise ValueError(f"{method}.yaml reads {keys} from sampling:, expected one step size")
    return keys[0]


def initial_grid(key: str) -> list[float]:
    return [0.05, 0.1, 0.2, 0.4, 0.8] if key.endswith("rate") else [1.0, 2.0, 4.0, 8.0, 16.0]


def neighbour(key: str, values: list[float], best: float) -> float | None:
    """The next value past the edge the best one sits on, or None if it is inside (or at a bound)."""
    if best == max(values):
        nxt = min(1.0, best * 2) if key.endswith("rate") else best * 2
        return nxt if nxt not in values and nxt <= 1024 else None
    if best == min(values):
        nxt = best / 2
        return nxt if nxt >= 1e-3 else None
    return None


def tuning_set(train: str, size: int, out: Path) -> Path:
    refs = index_source(train)[-TUNING_COUNT:]
    batch = collate([ImageDataset(refs, eval_transform(size), min_size=1)[i] for i in range(len(refs))])
    for key, image in zip(batch["key"], batch["image"], strict=True):
        save_png(image, out / f"{key}.png")
    return out


def score(task: str, method: str, key: str, value: float, images: Path, scratch: Path) -> float:
    out = scratch / f"{task.replace('/', '-')}-{method}-{value}"
    try:
        cse_main(
            [
                "predict",
                f"--config={CONFIGS / task / 'task.yaml'}",
                f"--config={CONFIGS / 'samplers' / f'{method}.yaml'}",
                f"--sampling.{key}={value}",
                f"--data.init_args.predict={images}",
                f"--trainer.default_root_dir={out}",
                "--trainer.callbacks.init_args.fid=false",
                "--trainer.enable_progress_bar=false",
            ]
        )
    except FloatingPointError:  # diverged
        return float("-inf")
    return json.loads((out / "summary.json").read_text())["psnr"]


def write_back(task: str, key: str, value: float) -> None:
    """Set ``key`` in the task file's ``sampling:`` block, keeping its comment."""
    path = CONFIGS / task / "task.yaml"
    text, count = re.subn(rf"(?m)^(  {key}: )[^#\n]*?(\s*(#.*)?)$", rf"\g<1>{value}\g<2>", path.read_text())
    if count != 1:
        raise ValueError(f"{path} has no single `{key}:` line in its sampling block")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tasks", nargs="+", default=SHIPPED, choices=TASKS, help="default: the tasks whose prior is shipped"
    )
    parser.add_argument("--methods", nargs="+", default=METHODS)
    args = parser.parse_args()
    report_path = ROOT / "docs" / "digits-tuning.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    report.pop("chosen", None), report.pop("psnr_on_32_train_digits", None)  # the layout before configs composed
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for task in args.tasks:
            data = yaml.safe_load((CONFIGS / task.split("/")[0] / "data.yaml").read_text())["init_args"]
            images = tuning_set(
                str(ROOT / data["train"]), data["image_size"], scratch / task.replace("/", "-") / "images"
            )
            block = yaml.safe_load((CONFIGS / task / "task.yaml").read_text())["sampling"]
            for method in args.methods:
                key = tuned_key(method)
                if key not in block:  # e.g. PSLD on a nonlinear operator
                    print(f"{task}: {method} does not apply (no {key} in its sampling block)", flush=True)
                    continue
                scores, values = {}, initial_grid(key)
                while values:
                    value = values.pop(0)
                    scores[value] = score(task, method, key, value, images, scratch)
                    print(f"{task} {method} {key}={value}: PSNR {scores[value]:.2f} dB", flush=True)
                    if not values and (nxt := neighbour(key, list(scores), max(scores, key=scores.get))) is not None:
                        values.append(nxt)
                best = max(scores, key=scores.get)
                write_back(task, key, best)
                report.setdefault(task, {})[key] = {"chosen": best, "psnr_on_32_train_digits": scores}
                report_path.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
