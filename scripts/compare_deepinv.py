"""DeepInverse next to cse on the shipped digits prior, through ``cse.bridges.deepinv``.

Cost (default): seconds per network evaluation of our DPS against DeepInverse's DPS on the same
network, the same SR x4 measurements, steps and batch (both evaluate the network once per step and
back-propagate through it; they differ in schedule and step size, so only cost is compared).

Quality (``--quality``): x4 super-resolution of the 200 test digits, measured as
``configs/digits/sr4/task.yaml`` measures them (noise-free, MATLAB bicubic ``imresize``, seed 0),
restored by DeepInverse's own ``DDRM`` and ``DiffPIR`` with our prior as their denoiser, at each
``--nfe`` network evaluations per image; and by our ``ddrm`` / ``diffpir`` (``cse.samplers.registry``)
when the registry has them. Mean PSNR as ``cse.metrics.psnr`` computes it (images on [-1, 1],
clamped, on [0, 1]), seconds and network evaluations per image, and per method the paired
difference ours - DeepInverse (mean and std over images).

DeepInverse's DDRM needs an SVD: both DeepInverse methods get ``SVDPhysics``, the full SVD of our
operator's own dense matrix (the same operator up to float32 rounding; DeepInverse's ``Downsampling``
is neither MATLAB's bicubic nor decomposable). DeepInverse is an optional extra, not a dependency:

    pip install "cse[compare]" -c constraints-cpu.txt       # deepinv==0.5.0
    python scripts/compare_deepinv.py --batch 32 --steps 50
    python scripts/compare_deepinv.py --quality --nfe 50 100

DeepInverse's images are on [0, 1] with sigma on that scale; the bridge converts at the boundary
(x on [-1, 1] is 2x - 1, its sigma 2 sigma; see ``cse.bridges.deepinv``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import cse  # noqa: F401  (before deepinv imports torchvision)
from cse.bridges.deepinv import SVDPhysics, measurement_to_unit, to_denoiser, to_physics
from cse.data import ImageDataset, collate, eval_transform, index_source
from cse.metrics import psnr
from cse.operators import GaussianNoise, Measurement, SuperResolution
from cse.priors import CountingPrior, DiffusersPrior
from cse.samplers import DPS
from cse.samplers.registry import METHODS
from cse.seeding import seed_from_key

ROOT = Path(__file__).resolve().parents[1]
OURS = ("ddrm", "diffpir")


def per_evaluation(prior: CountingPrior, run, repeats: int) -> float:
    """Seconds per network evaluation of ``run()``, the best of ``repeats`` runs (the first warms up)."""
    best = float("inf")
    for _ in range(repeats):
        prior.evaluations = 0
        start = time.perf_counter()
        run()
        best = min(best, (time.perf_counter() - start) / prior.evaluations)
    return best


def compare_cost(prior: CountingPrior, batch: int, steps: int, repeats: int) -> None:
    """Milliseconds per network evaluation, our DPS against DeepInverse's, on random SR x4 images."""
    import deepinv

    A = SuperResolution(4)
    x = torch.rand(batch, 3, 16, 16) * 2 - 1
    ours = per_evaluation(prior, lambda: DPS(1.0, steps)(prior, A, A(x), seeds=range(batch)), repeats)
    physics = to_physics(A)  # A 1 = 1 for SR: y01 = (y + 1) / 2
    theirs_dps = deepinv.sampling.DPS(to_denoiser(prior), schedule="ve", num_steps=steps, dtype=torch.float32)
    theirs = per_evaluation(prior, lambda: theirs_dps(physics.A((x + 1) / 2), physics), repeats)
    print(f"batch {batch}, {steps} steps, best of {repeats}, per network evaluation (one image):")
    print(f"  cse DPS:         {1e3 * ours:.2f} ms")
    print(f"  DeepInverse DPS: {1e3 * theirs:.2f} ms   (ratio cse / DeepInverse: {ours / theirs:.2f})")


def digits(split: str, count: int) -> tuple[list[str], Tensor]:
    """The first ``count`` test digits, or the last ``count`` train digits (where cse tunes step sizes),
    in key order (data/digits/<split>), on [-1, 1]."""
    refs = index_source(str(ROOT / "data/digits" / split))
    refs = refs[:count] if split == "test" else refs[-count:]
    batch = collate([ImageDataset(refs, eval_transform(16))[i] for i in range(len(refs))])
    return batch["key"], batch["image"]


def sr4_measurement() -> Measurement:
    """configs/digits/sr4/task.yaml's measurement: SuperResolution(4, lift="bicubic"), no noise."""
    return Measurement(SuperResolution(4, lift="bicubic"), GaussianNoise(0.0))


def in_batches(prior: CountingPrior, count: int, batch: int, run) -> tuple[Tensor, float, float]:
    """``run(part)`` over slices of ``count`` images: the images, and seconds and network
    evaluations per image."""
    outs, start_time = [], time.perf_counter()
    prior.evaluations = 0
    for start in range(0, count, batch):
        outs.append(run(slice(start, start + batch)).detach())
    return torch.cat(outs), (time.perf_counter() - start_time) / count, prior.evaluations / count


def deepinv_method(name: str, nfe: int, denoiser, diffpir: dict):
    """DeepInverse's DDRM (sigmas linspace(1, 0, nfe) on [0, 1]: nfe evaluations, its defaults
    eta=0.85, etab=1) or DiffPIR (max_iter=nfe, ``diffpir``'s lambda_ and zeta), as ``f(y01, physics)``."""
    import deepinv

    if name == "ddrm":
        return deepinv.sampling.DDRM(denoiser, sigmas=np.linspace(1, 0, nfe))
    fidelity = deepinv.optim.data_fidelity.L2()
    return deepinv.sampling.DiffPIR(denoiser, fidelity, max_iter=nfe, lambda_=diffpir["lambda_"], zeta=diffpir["zeta"])


def run_deepinv(prior: CountingPrior, name: str, nfe: int, y: Tensor, operator, shape, batch: int, diffpir: dict):
    """DeepInverse's ``name`` on the SVD physics of ``operator``; its noise level (which both read from
    the physics) is 0 for DDRM and ``diffpir["floor"]`` for DiffPIR, whose rho is 0 at 0 (gamma = 1 / 0).
    ``y`` on [-1, 1] in, images on [-1, 1] out."""
    method = deepinv_method(name, nfe, to_denoiser(prior), diffpir)
    physics = SVDPhysics(operator, shape, noise_std=diffpir["floor"] if name == "diffpir" else 0.0)

    def run(part: slice) -> Tensor:
        torch.manual_seed(part.start)  # DeepInverse draws from the global generator
        with torch.no_grad():
            return 2 * method(measurement_to_unit(operator, y[part], shape), physics) - 1

    return in_batches(prior, len(y), batch, run)


def our_method(name: str, nfe: int):
    """Our sampler of ``name`` at ``nfe`` steps with the registry's fixed settings and the digits/sr4
    cell of the step table when it has one (None when the registry has no such method)."""
    if name not in METHODS:
        return None
    from cse.steps import StepTableError, sampler_config

    entry = METHODS[name]
    try:
        settings = sampler_config("digits/sr4", name, SuperResolution, nfe)["init_args"]
    except StepTableError:
        settings = entry.settings(nfe, {})
    return entry.sampler(**settings)


def run_ours(prior: CountingPrior, name: str, nfe: int, y: Tensor, operator, shape, keys: list[str], batch: int):
    """Our ``name`` as ``python -m cse predict`` runs it (seeds from the keys, seed 0); None if absent."""
    sampler = our_method(name, nfe)
    if sampler is None:
        return None

    def run(part: slice) -> Tensor:
        seeds = [seed_from_key(key, "sample:0:0") for key in keys[part]]
        return sampler(prior, operator, y[part], seeds, shape=prior.state_shape((len(seeds), *shape)))

    return in_batches(prior, len(y), batch, run)


def load_record(path: Path | None, settings: dict) -> dict:
    """The runs recorded at ``path`` under the same settings (none otherwise): those are not rerun."""
    if path is None or not path.is_file():
        return {}
    record = json.loads(path.read_text())
    if record.get("settings") != settings:
        print(f"{path}: recorded under other settings, rerunning everything")
        return {}
    return record["runs"]


def our_tuned(name: str) -> str:
    """Our method's tuned settings on digits/sr4 as the step table gives them today ("" for none)."""
    sampler = our_method(name, 1)
    tuned = METHODS[name].tuned if name in METHODS else ()
    return ", ".join(f"{k.rstrip('_')} {getattr(sampler, k):g}" for k in tuned)


def label(who: str, name: str, nfe: int, diffpir: dict) -> str:
    """A run's name in the record: DeepInverse's DiffPIR with its settings, ours with the step
    table's (so a record made under another tuned value is not reused)."""
    if who == "DeepInverse" and name == "diffpir":
        return (
            f"{who} {name} {nfe} (lambda {diffpir['lambda_']:g}, zeta {diffpir['zeta']:g}, floor {diffpir['floor']:g})"
        )
    tuned = our_tuned(name) if who == "cse" else ""
    return f"{who} {name} {nfe}" + (f" ({tuned})" if tuned else "")


def paired(runs: dict, nfes: list[int], diffpir: dict) -> list[str]:
    """Per method and NFE with both sides recorded: ours - DeepInverse, mean ± std over the images."""
    lines = []
    for nfe in nfes:
        for name in OURS:
            ours, theirs = (
                runs.get(label("cse", name, nfe, diffpir)),
                runs.get(label("DeepInverse", name, nfe, diffpir)),
            )
            if ours and theirs:
                diff = torch.tensor(ours["psnr"]) - torch.tensor(theirs["psnr"])
                lines.append(f"{name} @ {nfe}: cse - DeepInverse = {diff.mean():+.2f} ± {diff.std():.2f} dB (paired)")
    return lines


def compare_quality(prior: CountingPrior, args: argparse.Namespace) -> None:
    """Mean PSNR, seconds and evaluations per image of DeepInverse's and our DDRM / DiffPIR on SR x4
    digits; per-image PSNRs kept in ``args.record`` (runs found there under the same settings are reused)."""
    keys, images = digits(args.split, args.count)
    y, measurement = sr4_measurement().measure_keys(images, keys, "0")
    operator, shape = measurement.operator, tuple(images.shape[1:])
    diffpir = {"lambda_": args.diffpir_lambda, "zeta": args.diffpir_zeta, "floor": args.noise_floor}
    settings = {"keys": keys, "batch": args.batch}
    runs = load_record(args.record, settings)
    missing = [name for name in OURS if name not in METHODS]
    if missing:
        print(f"our {', '.join(missing)}: absent from cse.samplers.registry.METHODS (only DeepInverse's run)")
    print(
        f"SR x4, {len(keys)} {args.split} digits, batch {args.batch}, DeepInverse DiffPIR {diffpir} (floor on [-1, 1])"
    )
    print("| method | NFE / image | mean PSNR (dB) | s / image |\n|---|---|---|---|")
    for nfe in args.nfe:
        for name in OURS:
            for who in ("DeepInverse", "cse"):
                key = label(who, name, nfe, diffpir)
                if key not in runs:
                    if who == "DeepInverse":
                        result = run_deepinv(prior, name, nfe, y, operator, shape, args.batch, diffpir)
                    else:
                        result = run_ours(prior, name, nfe, y, operator, shape, keys, args.batch)
                    if result is None:
                        continue
                    out, seconds, evaluations = result
                    runs[key] = {"psnr": psnr(out, images).tolist(), "seconds": seconds, "evaluations": evaluations}
                    if args.record is not None:
                        args.record.write_text(json.dumps({"settings": settings, "runs": runs}, indent=1))
                run = runs[key]
                mean = sum(run["psnr"]) / len(run["psnr"])
                print(f"| {key} | {run['evaluations']:.0f} | {mean:.2f} | {run['seconds']:.4f} |", flush=True)
    print("\n".join(paired(runs, args.nfe, diffpir)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="cost: DPS steps")
    parser.add_argument("--repeats", type=int, default=3, help="cost: best of this many runs each")
    parser.add_argument("--quality", action="store_true", help="the SR x4 quality cross-check instead of cost")
    parser.add_argument("--nfe", type=int, nargs="+", default=[50, 100], help="quality: network evaluations")
    parser.add_argument("--count", type=int, default=200, help="quality: digits")
    parser.add_argument("--split", choices=["test", "train"], default="test", help="quality: train = tuning digits")
    parser.add_argument("--noise-floor", type=float, default=0.002, help="quality: DiffPIR's sigma_y on [-1, 1]")
    parser.add_argument("--diffpir-lambda", type=float, default=7.0, help="quality: DeepInverse DiffPIR's lambda_")
    parser.add_argument("--diffpir-zeta", type=float, default=0.1, help="quality: DeepInverse DiffPIR's zeta")
    parser.add_argument("--record", type=Path, help="quality: per-image PSNRs kept here; runs found are reused")
    args = parser.parse_args()
    torch.manual_seed(0)
    prior = CountingPrior(DiffusersPrior.from_pretrained(ROOT / "checkpoints/digits/prior"))
    if args.quality:
        compare_quality(prior, args)
    else:
        compare_cost(prior, args.batch, args.steps, args.repeats)


if __name__ == "__main__":
    main()
