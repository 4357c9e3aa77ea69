"""Tune every method's step size on TRAIN digits (never the test set), by one procedure for all.

For each task and each method of the registry (cse.samplers.registry) defined on it, the method's
tuned setting (its step size: ``zeta``, or DSG's ``guidance_rate``) is chosen by mean PSNR over 32
train digits, with the prior alone, through the same `python -m cse predict` run a user makes. The
grid is powers of 2 (rates: 0.05 ... 1; a setting with a grid of its own in ``GRIDS``, such as DAPS's
Langevin step, by its own) and is extended, up or down, while the best value sits at its edge. The
chosen values are written into the tier's step table, configs/<tier>/steps.yaml (the
one place step sizes live), and every score into docs/digits-tuning.json, keyed
``<method>.<setting>``. "+CSE" runs use the step sizes tuned without the CSE.

    python scripts/tune_digits.py                                    # the digits tasks, every method
    python scripts/tune_digits.py --tasks digits/sr4 --methods dps dsg
"""

import argparse
import json
import tempfile
from pathlib import Path

import yaml

import cse  # noqa: F401
from cse.cli import main as cse_main
from cse.data import ImageDataset, collate, index_source
from cse.images import eval_transform, save_png
from cse.samplers.registry import METHODS
from cse.steps import not_defined, table_of

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TASKS = [f"digits/{op}" for op in ("sr4", "inpaint", "gblur", "nlblur")]
TASKS += [f"digits_latent/{op}" for op in ("sr8", "inpaint", "gblur", "nlblur")]
SHIPPED = [task for task in TASKS if (ROOT / "checkpoints" / task.split("/")[0] / "prior").is_dir()]  # the default
TUNED = [name for name, entry in METHODS.items() if entry.tuned]  # the registry's, every one with a step size
TUNING_COUNT = 32  # the last 32 train digits in key order


def tuned_setting(method: str) -> str:
    """The one setting a method's cell holds: its step size."""
    (setting,) = METHODS[method].tuned
    return setting


GRIDS = {  # a setting's name (or method.setting) -> (first values, factor, lowest, highest); others by the rules below
    "langevin_lr": ([1e-5, 1e-4, 1e-3, 1e-2], 10.0, 1e-8, 1.0),  # DAPS's Langevin step: decades
    "diffpir.zeta": ([0.1, 0.2, 0.4, 0.8, 1.0], 2.0, 0.0125, 1.0),  # DiffPIR's noise share, in [0, 1]
}


def grid(key: str) -> tuple[list[float], float, float, float]:
    """The grid rule of a setting: its own (``GRIDS``), else rates 0.05 ... 1, else powers of 2 up to 1024."""
    if key in GRIDS:
        return GRIDS[key]
    if key.endswith("rate"):
        return [0.05, 0.1, 0.2, 0.4, 0.8], 2.0, 1e-3, 1.0
    return [1.0, 2.0, 4.0, 8.0, 16.0], 2.0, 1e-3, 1024.0


def initial_grid(key: str) -> list[float]:
    return list(grid(key)[0])


def neighbour(key: str, values: list[float], best: float) -> float | None:
    """The next value past the edge the best one sits on, or None if it is inside (or at a bound)."""
    _, factor, lowest, highest = grid(key)
    if best == max(values):
        nxt = min(highest, best * factor)
        return nxt if nxt not in values and nxt <= highest else None
    if best == min(values):
        nxt = best / factor
        return nxt if nxt >= lowest else None
    return None


def tuning_set(train: str, size: int, out: Path) -> Path:
    refs = index_source(train)[-TUNING_COUNT:]
    batch = collate([ImageDataset(refs, eval_transform(size), min_size=1)[i] for i in range(len(refs))])
    for key, image in zip(batch["key"], batch["image"], strict=True):
        save_png(image, out / f"{key}.png")
    return out


def score(task: str, method: str, setting: str, value: float, images: Path, scratch: Path) -> float:
    out = scratch / f"{task.replace('/', '-')}-{method}-{value}"
    try:
        cse_main(
            [
                "predict",
                f"--config={CONFIGS / task / 'task.yaml'}",
                f"--config={CONFIGS / 'samplers' / f'{method}.yaml'}",
                f"--model.init_args.sampler.init_args.{setting}={value}",
                f"--data.init_args.predict={images}",
                f"--trainer.default_root_dir={out}",
                "--trainer.callbacks.init_args.fid=false",
                "--trainer.enable_progress_bar=false",
            ]
        )
    except FloatingPointError:  # diverged
        return float("-inf")
    return json.loads((out / "summary.json").read_text())["psnr"]


def write_back(task: str, method: str, setting: str, value: float) -> None:
    """Set the method's cell of the task in its tier's step table (the file's comments stay)."""
    table, column = table_of(task)
    table.path.write_text(table.with_setting(method, column, setting, value).dumps())


def record(task: str, key: str, entry: dict) -> None:
    """Add one tuned cell's scores to docs/digits-tuning.json, read afresh (runs on two tiers may share it)."""
    path = ROOT / "docs" / "digits-tuning.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault(task, {})[key] = entry
    path.write_text(json.dumps(report, indent=2))


def defined(task: str, method: str) -> bool:
    """Whether the method is defined on the task (else it says why, e.g. PSLD on a nonlinear operator)."""
    reason = not_defined(CONFIGS / task / "task.yaml", method)
    if reason is not None:
        print(f"{task}: {method} is not tuned: {reason}", flush=True)
    return reason is None


def tune(task: str, method: str, images: Path, scratch: Path) -> tuple[float, dict[float, float]]:
    """The best value of the method's step size on the tuning images, and every score."""
    setting = tuned_setting(method)
    rule = f"{method}.{setting}" if f"{method}.{setting}" in GRIDS else setting
    scores, values = {}, initial_grid(rule)
    while values:
        value = values.pop(0)
        scores[value] = score(task, method, setting, value, images, scratch)
        print(f"{task} {method} {setting}={value}: PSNR {scores[value]:.2f} dB", flush=True)
        if not values and (nxt := neighbour(rule, list(scores), max(scores, key=scores.get))) is not None:
            values.append(nxt)
    return max(scores, key=scores.get), scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--tasks", nargs="+", default=SHIPPED, choices=TASKS, help="default: the tasks whose prior is shipped"
    )
    parser.add_argument("--methods", nargs="+", default=TUNED, choices=TUNED)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for task in args.tasks:
            data = yaml.safe_load((CONFIGS / task.split("/")[0] / "data.yaml").read_text())["init_args"]
            images = tuning_set(
                str(ROOT / data["train"]), data["image_size"], scratch / task.replace("/", "-") / "images"
            )
            for method in args.methods:
                if not defined(task, method):
                    continue
                best, scores = tune(task, method, images, scratch)
                write_back(task, method, tuned_setting(method), best)
                record(task, f"{method}.{tuned_setting(method)}", {"chosen": best, "psnr_on_32_train_digits": scores})


if __name__ == "__main__":
    main()
