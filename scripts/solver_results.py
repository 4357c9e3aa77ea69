"""The field's newer solvers beside the paper's on the pixel digits tier: docs/results-solvers.md.

Each new method (DDRM, DiffPIR, PiGDM, RED-diff, DAPS) and, for reference, DPS, DSG and DMAP (full)
restore the 200 test digits at the tier's step count, with and without the task's CSE, through the
same `python -m cse predict` runs as docs/results-digits.md (scripts/digits_results.py's `predict`:
runs are reused, so the script resumes); then at 25 and 100 steps for the cost-quality picture.
Step sizes are the step table's (configs/digits/steps.yaml says which cells are not tuned yet).

    python scripts/solver_results.py                       # sr4 (about 20 min on an idle 2-core CPU)
    python scripts/solver_results.py --ops sr4 gblur --steps 50
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import digits_results as results  # noqa: E402

from cse.samplers.registry import METHODS  # noqa: E402
from cse.steps import not_defined  # noqa: E402

NEW = ("ddrm", "diffpir", "pigdm", "reddiff", "daps")
REFERENCE = ("dps", "dsg", "dmap_full")


def run(op: str, method: str, with_cse: bool, steps: int) -> dict | None:
    """One cell's summary, or None where the method is not defined for the task."""
    task = f"digits/{op}"
    if not_defined(results.CONFIGS / task / "task.yaml", method) is not None:
        return None
    files = [f"samplers/{method}.yaml"] + ([f"{task}/cse.yaml"] if with_cse else [])
    name = method + ("+cse" if with_cse else "") + ("" if steps == 50 else f"@{steps}")
    summary = results.predict(task, files, name, f"--steps.num_steps={steps}")
    return {k: summary.get(k) for k in ("psnr", "ssim", "fid", "network_evaluations", "network_gradients", "seconds")}


def row(op: str, method: str, with_cse: bool, steps: int, s: dict | None) -> str:
    name = METHODS[method].label + (" + CSE" if with_cse else "")
    if s is None:
        return f"| {op} | {name} | {steps} | n/a | | | | |"
    cost = s["network_evaluations"] + s["network_gradients"]
    return (
        f"| {op} | {name} | {steps} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['fid']:.2f} | "
        f"{s['network_evaluations']:.0f} + {s['network_gradients']:.0f} = {cost:.0f} | {s['seconds']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", nargs="+", default=["sr4"])
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 25, 100])
    parser.add_argument("--methods", nargs="+", default=[*NEW, *REFERENCE])
    parser.add_argument("--no-cse", action="store_true", help="without the CSE rows")
    args = parser.parse_args()
    lines = [
        "| operator | method | steps | PSNR ↑ | SSIM ↑ | FID ↓ | network forward + backward / image | s / image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    done = {}
    for steps in args.steps:
        for op in args.ops:
            for method in args.methods:
                for with_cse in (False,) if args.no_cse or steps != 50 else (False, True):
                    s = run(op, method, with_cse, steps)
                    done[f"{op}:{method}{'+cse' if with_cse else ''}@{steps}"] = s
                    lines.append(row(op, method, with_cse, steps, s))
                    print(lines[-1], flush=True)
                    out = ROOT / "docs" / "results-solvers.json"
                    out.write_text(json.dumps({"rows": lines, "runs": done}, indent=1))


if __name__ == "__main__":
    main()
