"""The field's newer solvers beside the paper's at equal cost, on both digits tiers.

Each newer method of the registry (``cse.samplers.registry.NEWER``: DDRM, DiffPIR, ΠGDM, RED-diff,
DAPS) and, for reference, DPS, DSG and DMAP (full) restore the 200 test digits of every operator
where the method is defined, with and without the task's CSE, at 25, 50 and 100 steps, through the
same `python -m cse predict` runs as docs/results-digits.md (scripts/digits_results.py's `predict`:
a finished run is reused, so the script resumes). Step sizes are the step tables' (each tuned on 32
train digits by scripts/tune_digits.py, the same procedure for every method, at 50 steps).

Writes docs/results-solvers.json (every run's means and per-image PSNR), docs/results-solvers.md
(every number), docs/img/solvers-<tier>.png (PSNR and FID against network passes per image) and the
section "The field's solvers at equal cost" of docs/results-digits.md (the figures and the verdict).

    python scripts/solver_results.py                          # everything (hours on a 2-core CPU)
    python scripts/solver_results.py --tiers digits --steps 50
    python scripts/solver_results.py --report-only            # the report from the JSON
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import digits_results as results  # noqa: E402

from cse.samplers.registry import METHODS, NEWER  # noqa: E402
from cse.steps import not_defined  # noqa: E402

REFERENCE = ("dps", "dsg", "dmap_full")
VARIANTS = ("dmap_full_scaled",)  # DMAP with the noise-level step (σ² − σ'²), tuned the same way
OURS = ("dmap_full", *VARIANTS)  # the paper's method and its variant, whose standing the verdict gives
ORDER = [*NEWER, *REFERENCE, *VARIANTS]  # the tables' and the figures' order
JSON = ROOT / "docs" / "results-solvers.json"
REPORT = ROOT / "docs" / "results-solvers.md"
BATCH: list[str] = []  # --batch: digits restored at once (memory and seconds, not the images)
KEPT = ("psnr", "ssim", "fid", "kid", "kid_std", "network_evaluations", "network_gradients", "seconds")
LATENT_TIERS = ("digits_latent",)
DECODER = ("decoder_passes", "decoder_gradients")  # a latent prior's; absent from runs made before they were counted
KEPT += DECODER


def key(tier: str, op: str, method: str, with_cse: bool, steps: int) -> str:
    return f"{tier}/{op}:{method}{'+cse' if with_cse else ''}@{steps}"


def parse(k: str) -> tuple[str, str, str, bool, int]:
    task, rest = k.split(":")
    name, steps = rest.split("@")
    tier, op = task.split("/")
    return tier, op, name.removesuffix("+cse"), name.endswith("+cse"), int(steps)


def run(tier: str, op: str, method: str, with_cse: bool, steps: int) -> dict | None:
    """One run's means and per-image PSNR, or None where the method is not defined on the task."""
    task = f"{tier}/{op}"
    if not_defined(results.CONFIGS / task / "task.yaml", method) is not None:
        return None
    files = config_files(task, method, with_cse)
    results.predict(task, files, folder(method, with_cse, steps), f"--steps.num_steps={steps}", *BATCH)
    return read_run(results.OUT / task / folder(method, with_cse, steps))


def config_files(task: str, method: str, with_cse: bool) -> list[str]:
    """The method file, and the task's CSE file for "+ CSE" (after the task's own file)."""
    return [f"samplers/{method}.yaml"] + ([f"{task}/cse.yaml"] if with_cse else [])


def folder(method: str, with_cse: bool, steps: int) -> str:
    return method + ("+cse" if with_cse else "") + ("" if steps == 50 else f"@{steps}")


def read_run(out: Path) -> dict:
    """A finished run's means (``KEPT``) and per-image PSNR, from its summary and metrics."""
    summary = json.loads((out / "summary.json").read_text())
    per_image = {
        r["key"]: round(r["psnr"], 3) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    }
    return {k: summary.get(k) for k in KEPT} | {"per_image_psnr": dict(sorted(per_image.items()))}


def count_decoders(done: dict) -> dict:
    """Decoder passes for the latent runs made before they were counted: the same configuration on
    two test digits (a run's passes per image do not depend on the image), into outputs/results-count/."""
    out = dict(done)
    for k, r in done.items():
        tier, op, method, with_cse, steps = parse(k)
        if r is None or tier not in LATENT_TIERS or r.get("decoder_passes") is not None:
            continue
        files = config_files(f"{tier}/{op}", method, with_cse)
        name = folder(method, with_cse, steps)
        count_dir = ROOT / "outputs" / "results-count"
        previous, results.OUT = results.OUT, count_dir
        try:
            s = results.predict(
                f"{tier}/{op}", files, name, f"--steps.num_steps={steps}", "--data.init_args.predict_count=2"
            )
        finally:
            results.OUT = previous
        out[k] = r | {d: s[d] for d in DECODER}
    return out


def refreshed(done: dict) -> dict:
    """The JSON's runs, and every finished run of these methods in outputs/results, read from its folder."""
    out = dict(done)
    for tier, ops in results.TIERS.items():
        for op in ops:
            for method, with_cse, steps in [(m, c, s) for m in ORDER for c in (False, True) for s in (25, 50, 100)]:
                path = results.OUT / tier / op / folder(method, with_cse, steps)
                k = key(tier, op, method, with_cse, steps)
                if (path / "summary.json").is_file():
                    counted = {d: (done.get(k) or {}).get(d) for d in DECODER}  # from --count-decoders
                    out[k] = read_run(path)
                    out[k] |= {d: v for d, v in counted.items() if out[k].get(d) is None}
    return out


def decoder(r: dict, tier: str) -> str:
    """A latent prior's decoder passes per image, forward + backward ("–": not counted in that run)."""
    if tier not in LATENT_TIERS:
        return "none (pixel prior)"
    if r.get("decoder_passes") is None:
        return "–"
    return f"{r['decoder_passes']:.0f} + {r['decoder_gradients']:.0f}"


def cost(r: dict) -> float:
    """Network passes per image: forward evaluations plus backward passes through the network."""
    return r["network_evaluations"] + r["network_gradients"]


def record(k: str, r: dict | None) -> None:
    """Add one run to the JSON, read afresh (runs on two tiers may write it from two processes)."""
    done = json.loads(JSON.read_text()) if JSON.is_file() else {}
    save({**done, k: r})


def save(done: dict) -> None:
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(done.items())]  # a run a line
    JSON.write_text("{\n" + ",\n".join(lines) + "\n}\n")


# -- the report ----------------------------------------------------------------------------------


def label(method: str, with_cse: bool) -> str:
    return METHODS[method].label + (" + CSE" if with_cse else "")


def paired(a: dict, b: dict) -> tuple[float, float]:
    """Mean and standard error of the per-image PSNR difference a − b over the images both hold."""
    keys = sorted(set(a["per_image_psnr"]) & set(b["per_image_psnr"]))
    d = [a["per_image_psnr"][k] - b["per_image_psnr"][k] for k in keys]
    mean = sum(d) / len(d)
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / max(1, len(d) - 1))
    return mean, std / math.sqrt(len(d))


def table(done: dict, tier: str) -> list[str]:
    lines = [
        "| operator | method | steps | PSNR ↑ | SSIM ↑ | FID ↓ | KID ↓ | network forward + backward / image "
        "| decoder forward + backward / image | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for op in results.TIERS[tier]:
        runs = sorted(
            ((parse(k), r) for k, r in done.items() if r and k.startswith(f"{tier}/{op}:")),
            key=lambda x: (x[0][3], ORDER.index(x[0][2]), x[0][4]),
        )
        for (_, _, method, with_cse, steps), r in runs:
            lines.append(
                f"| {op} | {label(method, with_cse)} | {steps} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['fid']:.3f} | {results.kid(r)} | "
                f"{r['network_evaluations']:.0f} + {r['network_gradients']:.0f} = {cost(r):.0f} | {decoder(r, tier)} | {r['seconds']:.2f} |"
            )
    return lines


def curves(done: dict, tier: str, op: str) -> dict[tuple[str, bool], list[tuple[float, dict]]]:
    """(method, + CSE) -> [(cost, run)] by cost."""
    out: dict[tuple[str, bool], list[tuple[float, dict]]] = {}
    for k, r in done.items():
        t, o, method, with_cse, _ = parse(k)
        if r and t == tier and o == op:
            out.setdefault((method, with_cse), []).append((cost(r), r))
    return {m: sorted(points, key=lambda p: p[0]) for m, points in out.items()}


BUDGETS = (50, 100, 200, 400, 700)  # network passes per image
TICKS = (25, 50, 100, 200, 400, 800)


def figure(done: dict, tier: str, path: Path) -> None:
    ops = results.TIERS[tier]
    fig, axes = plt.subplots(2, len(ops), figsize=(4.2 * len(ops), 7.2), squeeze=False)
    colours = dict(zip(ORDER, plt.get_cmap("tab10").colors, strict=False))
    for j, op in enumerate(ops):
        for (method, with_cse), points in sorted(curves(done, tier, op).items(), key=lambda x: ORDER.index(x[0][0])):
            style = {"color": colours[method], "ls": "--" if with_cse else "-", "marker": "o" if with_cse else "s"}
            xs = [c for c, _ in points]
            for i, metric in enumerate(("psnr", "fid")):
                axes[i][j].plot(xs, [r[metric] for _, r in points], label=label(method, with_cse), ms=4, **style)
        for i, metric in enumerate(("PSNR (dB) ↑", "FID (digits classifier) ↓")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_xticks(TICKS, [str(x) for x in TICKS])
            ax.minorticks_off()
            ax.set_xlabel("network forward + backward passes per image")
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        axes[0][j].set_title(f"{tier} {op}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def best_within(done: dict, tier: str, op: str, budget: float, metric: str) -> tuple[str, dict] | None:
    """The run with the best ``metric`` among those costing at most ``budget`` passes per image."""
    pool = [(k, r) for k, r in done.items() if r and k.startswith(f"{tier}/{op}:") and cost(r) <= budget]
    if not pool:
        return None
    sign = 1 if metric == "psnr" else -1
    return max(pool, key=lambda kr: sign * kr[1][metric])


def name_of(k: str) -> str:
    _, _, method, with_cse, steps = parse(k)
    return f"{label(method, with_cse)} ({steps} steps)"


def budget_table(done: dict, tier: str) -> list[str]:
    lines = [
        "| operator | budget (passes / image) | best by PSNR | PSNR | best by FID | FID |",
        "|---|---|---|---|---|---|",
    ]
    for op in results.TIERS[tier]:
        for budget in BUDGETS:
            p, f = best_within(done, tier, op, budget, "psnr"), best_within(done, tier, op, budget, "fid")
            if p and f:
                lines.append(
                    f"| {op} | ≤ {budget} | {name_of(p[0])} | {p[1]['psnr']:.2f} | {name_of(f[0])} | {f[1]['fid']:.3f} |"
                )
    return lines


def standing(done: dict, tier: str) -> list[str]:
    """DMAP (full), alone and + CSE, at each step count against the best other run costing no more:
    wins / ties / loses by PSNR (the paired difference beyond two standard errors) and by FID."""
    lines = [
        "| operator | ours | its cost | best other at ≤ that cost (by PSNR) | PSNR difference (± s.e.) | by PSNR | its FID against the lowest other's |",
        "|---|---|---|---|---|---|---|",
    ]
    for op in results.TIERS[tier]:
        for k, r in sorted(done.items()):
            if not r:
                continue
            t, o, method, with_cse, steps = parse(k)
            if (t, o) != (tier, op) or method not in OURS:
                continue
            others = {
                kk: rr
                for kk, rr in done.items()
                if rr and kk.startswith(f"{tier}/{op}:") and parse(kk)[2] not in OURS and cost(rr) <= cost(r)
            }
            if not others:
                continue
            rival_key = max(others, key=lambda kk: others[kk]["psnr"])
            mean, se = paired(r, others[rival_key])
            by_psnr = "wins" if mean > 2 * se else "loses" if mean < -2 * se else "ties"
            best_fid = min(others.values(), key=lambda rr: rr["fid"])["fid"]
            by_fid = f"{'lower' if r['fid'] < best_fid else 'higher'}: {r['fid']:.3f} against {best_fid:.3f}"
            lines.append(
                f"| {op} | {label(method, with_cse)}, {steps} steps | {cost(r):.0f} | {name_of(rival_key)} | "
                f"{mean:+.2f} ± {se:.2f} | {by_psnr} | {by_fid} |"
            )
    return lines


INTRO = """The 200 test digits, noise-free measurements, the shipped priors and CSEs; each method alone and
+ CSE at 50 steps, and at 25 and 100 steps where the tables list them (operators and tiers without
rows were not run), with the step sizes of `configs/<tier>/steps.yaml` (each method's own, tuned at
50 steps on 32 train digits by `scripts/tune_digits.py`, the same procedure for all). Cost is
the network passes per image: forward evaluations plus backward passes through the network (a latent
prior's decoder passes are listed beside them in `docs/results-solvers.md`, not added, counted on two
digits of the same configuration for runs made before they were counted; + CSE,
each evaluation also runs the ControlNet, a copy of the UNet's encoder: compare the seconds). Seconds were measured
with two runs sharing the 2 CPU cores. DDRM and ΠGDM need the operator's SVD in pixel space: they
have no latent cells, nor cells on the nonlinear blur. Generated by `python scripts/solver_results.py`
(every number: `docs/results-solvers.md`, `docs/results-solvers.json`)."""


def verdict_section(done: dict) -> list[str]:
    lines = ["## The field's solvers at equal cost", "", INTRO, ""]
    for tier in results.TIERS:
        if not any(k.startswith(f"{tier}/") for k in done):
            continue
        lines += [f"### {tier}", "", f"![PSNR and FID against cost, {tier}](img/solvers-{tier}.png)", ""]
        lines += ["The best run within each budget of network passes per image:", "", *budget_table(done, tier), ""]
        lines += [
            "DMAP (full), the paper's method (and its variant with the noise-level step, where run), against",
            "the best other run (any other method, with or without the CSE) that costs no more; by PSNR it",
            "wins or loses where the paired difference over the 200 digits exceeds two standard errors, else",
            "it ties. FID (no uncertainty is computed for it) is compared with the lowest of the same runs:",
            "",
            *standing(done, tier),
            "",
        ]
    return lines


def write_report() -> None:
    everything = refreshed(json.loads(JSON.read_text()))
    save(everything)
    done = {k: r for k, r in everything.items() if r}
    lines = ["# The field's solvers beside the paper's, both digits tiers", "", INTRO, ""]
    for tier in results.TIERS:
        if any(k.startswith(f"{tier}/") for k in done):
            figure(done, tier, ROOT / "docs" / "img" / f"solvers-{tier}.png")
            lines += [f"## {tier}", "", f"![PSNR and FID against cost](img/solvers-{tier}.png)", "", *table(done, tier)]
            lines.append("")
    REPORT.write_text("\n".join(lines))
    path = ROOT / "docs" / "results-digits.md"
    text = path.read_text()
    for tier in results.TIERS:
        text = results.replace_section(
            text, f"## {tier}: step sizes", [f"## {tier}: step sizes", "", *results.step_size_table(tier), ""]
        )
    text = results.replace_section(
        text, "## The field's solvers at equal cost", verdict_section(done), before="## Table 5"
    )
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiers", nargs="+", default=results.SHIPPED, choices=list(results.TIERS))
    parser.add_argument("--ops", nargs="+", help="only these operators (default: every one of each tier)")
    parser.add_argument("--steps", nargs="+", type=int, default=[50, 25, 100])
    parser.add_argument("--methods", nargs="+", default=[*NEWER, *REFERENCE], choices=ORDER)
    parser.add_argument("--no-cse", action="store_true", help="without the + CSE runs")
    parser.add_argument("--batch", type=int, default=50, help="digits restored at once (default %(default)s)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the JSON")
    parser.add_argument(
        "--count-decoders", action="store_true", help="count decoder passes of latent runs made before they were"
    )
    args = parser.parse_args()
    if args.count_decoders:
        save(count_decoders(refreshed(json.loads(JSON.read_text()))))
    elif not args.report_only:
        BATCH.append(f"--data.init_args.batch_size={args.batch}")
        for steps in args.steps:
            for tier in args.tiers:
                for op in [op for op in results.TIERS[tier] if not args.ops or op in args.ops]:
                    for with_cse in (False,) if args.no_cse else (False, True):
                        for method in args.methods:
                            k = key(tier, op, method, with_cse, steps)
                            r = run(tier, op, method, with_cse, steps)
                            record(k, r)
                            print(k, "n/a" if r is None else f"PSNR {r['psnr']:.2f} cost {cost(r):.0f}", flush=True)
    write_report()


if __name__ == "__main__":
    main()
