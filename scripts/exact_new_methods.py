"""The newer solvers (and DPS, for reference) on the exact tier, with exact_benchmark's --quick sample
sizes: each method's step tuned on another measurement, then the energy distance of its samples to
the exact posterior (lower is better; the floor is that of exact samples). Writes
docs/results-exact-new.json.

    python scripts/exact_new_methods.py                 # DPS DDRM DiffPIR ΠGDM RED-diff DAPS (about 20 min)
    python scripts/exact_new_methods.py DAPS DDRM
"""

import json
import sys
import time
from pathlib import Path

import torch

import cse  # noqa: F401
from cse.analysis.exact import random_problem, toy_problem
from cse.samplers.registry import METHODS, NEWER

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results-exact-new.json"
SETTINGS = {"samples": 300, "repeats": 2, "tuning_samples": 200, "tuning_measurements": 1}


def measure(benchmark, labels: list[str]) -> dict:
    """Score ``labels`` on every problem; rows of other methods already in the JSON are kept."""
    out = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for problem in [toy_problem("paper"), toy_problem("noisy"), toy_problem("zero"), random_problem()]:
        size = SETTINGS["samples"] if problem.prior.dim <= 2 else SETTINGS["samples"] // 2
        out.setdefault(problem.name, {})["floor"] = benchmark.floor(problem, size, 2)["energy"]["mean"]
        for method in [m for m in benchmark.methods() if m.label in labels]:
            start = time.time()
            r = benchmark.evaluate(method, problem, SETTINGS)
            s = r["scores"]
            out[problem.name][method.label] = {
                "step": r["step"],
                "energy": s["energy"]["mean"],
                "energy_std": s["energy"]["std"],
                "unmeasured_ratio": s["unmeasured_ratio"]["mean"],
                "measured_ratio": s["measured_ratio"]["mean"],
                "nfe": s["nfe"]["mean"],
                "seconds": time.time() - start,
            }
            OUT.write_text(json.dumps(out, indent=1, default=float))
    return out


def main() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import exact_benchmark

    torch.set_default_dtype(torch.float64)
    out = measure(exact_benchmark, sys.argv[1:] or [METHODS[n].label for n in ("dps", *NEWER)])
    for name, rows in out.items():
        print(f"{name}: floor {rows['floor']:.4f}")
        for label, r in rows.items():
            if label != "floor":
                print(
                    f"  {label:10s} step {r['step']} energy {r['energy']:.4f} ± {r['energy_std']:.4f} nfe {r['nfe']:.0f}"
                )


if __name__ == "__main__":
    main()
