"""Every sampler against the exact posterior of Gaussian mixtures; writes docs/results-exact.md.

    python scripts/exact_benchmark.py            # about 20 minutes on 2 CPU cores
    python scripts/exact_benchmark.py --quick    # fewer samples and repeats (a smoke run, into outputs/exact-quick/)

Problems: the paper's toy example (Appendix A.4) as stated, its noisy and y = 0 variants, and a
64-D mixture whose modes a random linear operator cannot tell apart. Each method's step size is
chosen by one procedure for all (powers of 4, extended while the best sits at an edge) on separate
measurements of the same prior, by the energy distance to the exact posterior; then each method is
scored on the problem's own measurement, over independent repeats (mean ± std), against two sets of
exact posterior samples (the noise floor). "+ exact CSE" runs a method on the exact posterior
instead of the prior: guidance on top of the perfect conditional score estimator.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import cse  # noqa: E402, F401
from cse.analysis.exact import (  # noqa: E402
    ExactProblem,
    diversity_ratios,
    energy_distance,
    grid_posterior,
    log_density,
    mode_log_odds,
    mode_weights,
    posterior_map,
    random_problem,
    sample_grid,
    toy_problem,
)
from cse.analysis.scores import score_errors, score_means  # noqa: E402
from cse.priors import CountingPrior  # noqa: E402
from cse.samplers.common import (
    Sampler,  # noqa: E402
    measurement_residual,  # noqa: E402
)
from cse.samplers.registry import METHODS, NEWER  # noqa: E402
from cse.seeding import PerSampleNoise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


POWERS = (0.0125, 0.05, 0.2, 0.8, 3.2)  # powers of 4, the default grid
OWN_GRIDS = {  # DAPS's Langevin step by decades; DiffPIR's noise share, in [0, 1]
    "daps": {"grid": (1e-5, 1e-4, 1e-3, 1e-2)},
    "diffpir": {"grid": (0.05, 0.1, 0.2, 0.4, 0.8, 1.0), "highest": 1.0},
}


@dataclass
class Method:
    label: str
    make: object  # (step size, problem) -> sampler
    tuned: bool = True  # has a step size
    grid: tuple[float, ...] = POWERS
    exact_cse: bool = False  # runs on the exact posterior
    highest: float = 1e4  # the grid is not extended past it (a rate or a share: 1)


EXACT_CSE = ("DPS + exact CSE", "DMAP K=3 + exact CSE")


def registered(name: str, **changed) -> Callable:
    """(step size, problem) -> the registry's method ``name`` (its fixed settings, ``changed`` ones
    replaced) at the problem's step count and schedule, the step size as its tuned setting."""
    entry = METHODS[name]

    def make(step: float | None, problem: ExactProblem) -> Sampler:
        tuned = dict(zip(entry.tuned, [step], strict=False)) if step is not None else {}
        settings = {**entry.fixed, **changed, **tuned}
        return entry.sampler(num_steps=problem.num_steps, schedule=problem.schedule, **settings)

    return make


def methods() -> list[Method]:
    """The registry's methods (DMAP (full) as "K=3", beside K = 1 and 2 at the same step count)."""
    rate = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
    listed = [
        Method("Ancestral on the exact posterior (perfect CSE)", registered("ancestral"), tuned=False, exact_cse=True),
        Method("DPS", registered("dps")),
        Method("DPS, step ∝ σ² − σ'²", registered("dps_scaled")),
        Method("DPS (DDIM)", registered("dps_ddim")),
        Method("DSG", registered("dsg"), grid=rate, highest=1.0),
        Method("DMAP K=1", registered("dmap_full", ascent_steps=1)),
        Method("DMAP K=2", registered("dmap_full", ascent_steps=2)),
        Method("DMAP K=3", registered("dmap_full")),
        Method("DMAP K=3, step ∝ σ² − σ'²", registered("dmap_full_scaled")),
        Method("PSLD", registered("psld")),
        Method("FreeDoM", registered("freedom")),
        Method("ReSample", registered("resample")),
        *(Method(METHODS[n].label, registered(n), bool(METHODS[n].tuned), **OWN_GRIDS.get(n, {})) for n in NEWER),
    ]
    twins = [replace(m, label=f"{m.label} + exact CSE", exact_cse=True) for m in listed if m.tuned]
    return listed + twins


def run(method: Method, step: float | None, problem: ExactProblem, n: int, seed: int) -> tuple[torch.Tensor, float]:
    """``n`` samples of the method on the problem's measurement; and network evaluations per sample."""
    sampler = method.make(step, problem)
    prior = CountingPrior(problem.posterior(n) if method.exact_cse else problem.prior)
    y = problem.y.expand(n, -1)
    seeds = range(seed * 10**6, seed * 10**6 + n)
    x = sampler(
        prior, problem.operator, y, seeds=seeds, noise_std=problem.noise_std
    )  # DDRM, DiffPIR, ΠGDM, DAPS weigh y by it
    return x, prior.evaluations / n


def tuning_problems(problem: ExactProblem, count: int) -> list[ExactProblem]:
    """Other measurements of the same prior and operator (never the problem's own)."""
    g = torch.Generator().manual_seed(1234)
    x = problem.prior.sample(count, g)
    ys = problem.operator(x) + problem.noise_std * torch.randn(count, problem.y.shape[0], generator=g, dtype=x.dtype)
    return [replace(problem, y=y, name=f"{problem.name}-tune{i}") for i, y in enumerate(ys)]


def tune(method: Method, problem: ExactProblem, n: int, count: int) -> tuple[float | None, dict]:
    if not method.tuned:
        return None, {}
    tunes = tuning_problems(problem, count)
    exact = [t.single_posterior().sample(n, torch.Generator().manual_seed(7)) for t in tunes]
    scores, values = {}, list(method.grid)
    while values:
        value = values.pop(0)
        try:
            scores[value] = (
                sum(energy_distance(run(method, value, t, n, 99)[0], e) for t, e in zip(tunes, exact, strict=True))
                / count
            )
        except FloatingPointError:
            scores[value] = math.inf
        best = min(scores, key=scores.get)
        if not values and best in (min(scores), max(scores)) and scores[best] < math.inf:
            nxt = best * 4 if best == max(scores) else best / 4
            if 1e-5 < nxt <= method.highest and nxt < 1e4 and nxt not in scores:
                values.append(nxt)
    return min(scores, key=scores.get), scores


def score(method: Method, step, problem: ExactProblem, n: int, repeats: int) -> dict:
    post = problem.single_posterior()
    x_map = posterior_map(post)
    log_map = float(log_density(post, x_map[None]))
    rows = []
    for r in range(repeats):
        start = time.perf_counter()
        x, nfe = run(method, step, problem, n, r)
        seconds = time.perf_counter() - start
        exact = post.sample(n, torch.Generator().manual_seed(100 + r))
        rows.append(
            {
                "energy": energy_distance(x, exact),
                "weights": mode_weights(post, x).tolist(),
                **diversity_ratios(post, problem.operator.A, x),
                "map_distance": float((x - x_map).norm(dim=1).mean()),
                "log_density_gap": log_map - float(log_density(post, x).mean()),
                "nfe": nfe,
                "seconds": seconds,
            }
        )
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    out = {}
    for name in rows[0]:
        values = torch.tensor([row[name] for row in rows], dtype=torch.float64)
        out[name] = {"mean": values.mean(0).tolist(), "std": values.std(0).tolist() if len(rows) > 1 else 0.0}
    return out


def floor(problem: ExactProblem, n: int, repeats: int) -> dict:
    post = problem.single_posterior()
    x_map = posterior_map(post)
    log_map = float(log_density(post, x_map[None]))
    rows = []
    for r in range(repeats):
        a, b = (post.sample(n, torch.Generator().manual_seed(s)) for s in (200 + r, 300 + r))
        rows.append(
            {
                "energy": energy_distance(a, b),
                "weights": mode_weights(post, a).tolist(),
                **diversity_ratios(post, problem.operator.A, a),
                "map_distance": float((a - x_map).norm(dim=1).mean()),
                "log_density_gap": log_map - float(log_density(post, a).mean()),
            }
        )
    return summarise(rows)


# -- observations I and II on the exact tier -----------------------------------------------------


def observations(problem: ExactProblem, zetas: list[float], n: int) -> dict:
    """Score errors along the exact posterior's trajectory, and score means at x_T (over n draws)."""
    prior, posterior = problem.prior, problem.posterior(n)
    y = problem.y.expand(n, -1)
    residual = measurement_residual(prior, problem.operator, y)
    sigmas = problem.schedule.sigmas(problem.num_steps).tolist()
    noise = PerSampleNoise(range(n), prior.sample_shape, like=y.new_empty(0))
    curves = score_errors(prior.denoise, posterior.denoise, residual, sigmas, noise, zetas)
    u = sigmas[0] * PerSampleNoise(range(n, 2 * n), prior.sample_shape, like=y.new_empty(0))()
    means = score_means(prior.denoise, posterior.denoise, residual, sigmas[0], sigmas[1], u, zetas)
    mean_curves = {name: value.double().mean(-1).tolist() for name, value in curves.items() if name != "sigma"}
    return {"sigma": curves["sigma"].tolist(), "errors": mean_curves, "means": means}


def plot_errors(results: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (name, obs) in zip(axes[0], results.items(), strict=True):
        sigma = obs["sigma"]
        for curve, values in obs["errors"].items():
            style = {"uncond": ("unconditional", "k--"), "reference_norm": ("|s_ref| (scale)", "k:")}.get(
                curve, (f"DPS ζ = {curve[4:]}", "-")
            )
            ax.loglog(sigma, values, style[1], label=style[0])
        ax.invert_xaxis()
        ax.set_title(name)
        ax.set_xlabel("σ (sampling runs right to left)")
        ax.set_ylabel("‖s − s_exact‖")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_toy(samples: dict[str, torch.Tensor], path: Path) -> None:
    cols = 5
    rows = math.ceil(len(samples) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, x) in zip(axes.flat, samples.items(), strict=False):
        ax.axis("on")
        ax.hist2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=60, range=[[-2.5, 2.5], [-2.5, 2.5]], cmap="magma")
        ax.set_title(name, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the report ------------------------------------------------------------------------------------


def fmt(cell: dict, digits: int = 3) -> str:
    mean, std = cell["mean"], cell["std"]
    if isinstance(mean, float) and math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std else f"{mean:.{digits}f}"


def table(problem: ExactProblem, results: dict, reference: dict) -> list[str]:
    lines = [
        "| method | step size | energy distance ↓ | mode weights | spread measured (ratio) | spread unmeasured (ratio) | distance to MAP | log-density gap to MAP | NFE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    exact_weights = problem.single_posterior().weights
    show_weights = lambda w: "/".join(f"{v:.2f}" for v in w[: min(4, len(w))])  # noqa: E731
    lines.append(
        f"| *exact samples (noise floor)* | – | {fmt(reference['energy'], 4)} | {show_weights(exact_weights.tolist())} | "
        f"{fmt(reference['measured_std'])} | {fmt(reference['unmeasured_std'])} | {fmt(reference['map_distance'])} | "
        f"{fmt(reference['log_density_gap'], 2)} | – |"
    )
    order = [m.label for m in methods()]
    for label, r in sorted(results.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)):
        step = "–" if r["step"] is None else f"{r['step']:g}"
        s = r["scores"]
        measured = f"{fmt(s['measured_std'])} ({fmt(s['measured_ratio'], 2)})"
        unmeasured = f"{fmt(s['unmeasured_std'])} ({fmt(s['unmeasured_ratio'], 2)})"
        lines.append(
            f"| {label} | {step} | {fmt(s['energy'], 4)} | {show_weights(s['weights']['mean'])} | {measured} | {unmeasured} | "
            f"{fmt(s['map_distance'])} | {fmt(s['log_density_gap'], 2)} | {s['nfe']['mean']:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="small sample sizes, for a smoke run (written to outputs/exact-quick/)"
    )
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from results-exact.json")
    parser.add_argument(
        "--missing", action="store_true", help="measure only the methods results-exact.json lacks (figures unchanged)"
    )
    args = parser.parse_args()
    if args.quick:  # a smoke run's numbers never replace the report's
        global DOCS
        DOCS = ROOT / "outputs" / "exact-quick"
        DOCS.mkdir(parents=True, exist_ok=True)
        print(f"--quick: results, report and figures go to {DOCS}", flush=True)
    torch.set_default_dtype(torch.float64)
    problems = [toy_problem("paper"), toy_problem("noisy"), toy_problem("zero"), random_problem()]
    stored = DOCS / "results-exact.json"
    if args.report_only or args.missing:
        raw = json.loads(stored.read_text())
        raw.setdefault("settings", {"samples": 2000, "repeats": 3, "tuning_samples": 500, "tuning_measurements": 2})
    else:
        raw = measure(problems, args.quick)
    if args.missing:
        add_missing(problems, raw, lambda: stored.write_text(json.dumps(raw, indent=1, default=float)))
    raw.setdefault("pinning", pinning(problems[1]))
    stored.write_text(json.dumps(raw, indent=1, default=float))
    write_report(problems, raw)


def evaluate(method: Method, problem: ExactProblem, settings: dict) -> dict:
    """Tune the method's step size on other measurements, then score it on the problem's own."""
    step, grid = tune(method, problem, settings["tuning_samples"], settings["tuning_measurements"])
    size = settings["samples"] if problem.prior.dim <= 2 else settings["samples"] // 2
    result = {"step": step, "grid": grid, "scores": score(method, step, problem, size, settings["repeats"])}
    print(problem.name, method.label, step, result["scores"]["energy"], flush=True)
    return result


def add_missing(problems: list[ExactProblem], raw: dict, save) -> None:
    for problem in problems:
        results = raw[problem.name]["results"]
        for method in methods():
            if method.label not in results:
                results[method.label] = evaluate(method, problem, raw["settings"])
                save()


def measure(problems: list[ExactProblem], quick: bool) -> dict:
    """Every number of the report; also draws its two figures."""
    n, repeats, tune_n, tune_count = (300, 2, 200, 1) if quick else (2000, 3, 500, 2)
    raw = {"settings": {"samples": n, "repeats": repeats, "tuning_samples": tune_n, "tuning_measurements": tune_count}}
    for problem in problems:
        size = n if problem.prior.dim <= 2 else n // 2
        results = {method.label: evaluate(method, problem, raw["settings"]) for method in methods()}
        if problem.name == "toy-paper":  # the paper's own step size, untuned
            dps = methods()[1]
            results["DPS, the paper's ζ = 0.05"] = {
                "step": 0.05,
                "grid": {},
                "scores": score(dps, 0.05, problem, size, repeats),
            }
        raw[problem.name] = {"floor": floor(problem, size, repeats), "results": results}
    raw["observations"] = {p.name: observations(p, [0.05, 0.3, 1.2, 4.8], n) for p in problems}
    toy = problems[0]
    samples = {
        "exact posterior (Gaussian likelihood)": toy.single_posterior().sample(n, torch.Generator().manual_seed(0))
    }
    points, probs = grid_posterior(toy.prior, lambda x: -0.05 * (x[:, 0] - 0.5).abs())
    samples["posterior under exp(−0.05 |x₁ − y|)"] = sample_grid(points, probs, n, torch.Generator().manual_seed(0))
    for method in [m for m in methods() if not m.exact_cse or m.label in EXACT_CSE]:  # a legible figure
        step = raw["toy-paper"]["results"][method.label]["step"]
        samples[f"{method.label} ({'–' if step is None else f'{step:g}'})"] = run(method, step, toy, n, 0)[0]
    samples["DPS, ζ = 0.05"] = run(methods()[1], 0.05, toy, n, 0)[0]
    (DOCS / "img").mkdir(parents=True, exist_ok=True)
    plot_toy(samples, DOCS / "img" / "exact-toy.png")
    plot_errors(raw["observations"], DOCS / "img" / "exact-score-error.png")
    grid_energy = energy_distance(samples["DPS, ζ = 0.05"], samples["posterior under exp(−0.05 |x₁ − y|)"])
    raw["toy_readings"] = {
        "log_odds_gaussian": mode_log_odds(toy),
        "grid_reading_mode_weight_minus": float(probs[points[:, 1] < 0].sum()),
        "dps_0.05_energy_vs_gaussian_reading": raw["toy-paper"]["results"]["DPS, the paper's ζ = 0.05"]["scores"][
            "energy"
        ]["mean"],
        "dps_0.05_energy_vs_grid_reading": grid_energy,
    }
    return raw


def verdicts(problems: list[ExactProblem], raw: dict) -> list[str]:
    """Plain verdicts on the paper's claims, each computed from the numbers above."""
    lines = []
    for problem in problems:
        res, obs = raw[problem.name]["results"], raw["observations"][problem.name]
        dps, dmap, exact = res["DPS"]["scores"], res["DMAP K=3"]["scores"], raw[problem.name]["floor"]
        step = res["DPS"]["step"]
        near = min(obs["errors"], key=lambda c: abs(float(c[4:]) - step) if c.startswith("dps_") else math.inf)
        err_dps, err_uncond = (
            sum(obs["errors"][near]) / len(obs["sigma"]),
            sum(obs["errors"]["uncond"]) / len(obs["sigma"]),
        )
        mean_dps, mean_ref = obs["means"][near]["abs_mean"], obs["means"]["reference"]["abs_mean"]
        floor_ref = obs["means"]["reference"]["floor"]
        spread = dps["unmeasured_ratio"]["mean"]
        dist_dps, dist_dmap, dist_exact = (x["map_distance"]["mean"] for x in (dps, dmap, exact))
        weights = sorted(problem.single_posterior().weights.tolist())
        lines += [
            f"**{problem.name}** (DPS at its tuned ζ = {step:g}; scores probed at ζ = {near[4:]}):",
            f"- I, DPS's score error is large: {'supported' if err_dps > err_uncond else 'not supported'} "
            f"(mean over the trajectory's steps {err_dps:.3g}, against {err_uncond:.3g} for no guidance at all).",
            f"- II, DPS's score has a large mean at x_T: {'supported' if mean_dps > 2 * max(mean_ref, floor_ref) else 'not supported'} "
            f"(|E[s]| {mean_dps:.3g}; the exact conditional score's {mean_ref:.3g}; Monte-Carlo floor {floor_ref:.3g}).",
            f"- III, DPS's samples lack diversity: {'supported' if spread < 0.9 else 'not supported' if spread > 1.1 else 'inconclusive'} "
            f"(spread in the unmeasured directions {spread:.2f} times the posterior's).",
        ]
        if len(weights) > 1 and weights[-1] - weights[-2] < 0.01:
            lines.append("- MAP claims: not measurable here (two equally high modes, so no single MAP to approach).")
        else:
            lines += [
                f"- DPS behaves like a MAP estimator: {'supported' if dist_dps < dist_exact else 'not supported'} "
                f"(mean distance to the MAP {dist_dps:.3g}, exact posterior samples {dist_exact:.3g}).",
                f"- DMAP lands closer to the MAP than DPS: {'supported' if dist_dmap < dist_dps else 'not supported'} "
                f"(distance {dist_dmap:.3g} against {dist_dps:.3g}).",
            ]
        lines.append("")
    return lines


def pinning(problem: ExactProblem, step: float = 0.0125, n: int = 2000) -> dict:
    """DPS on the exact posterior at a tiny step: where its guidance puts the measured coordinate."""
    method = next(m for m in methods() if m.label == "DPS + exact CSE")
    post = problem.single_posterior()
    x = run(method, step, problem, n, 0)[0]
    exact = post.sample(n, torch.Generator().manual_seed(0))
    measured = problem.operator(x)
    return {
        "step": step,
        "y": float(problem.y[0]),
        "measured_mean": float(measured.mean()),
        "measured_ratio": float(measured.std() / problem.operator(exact).std()),
        "posterior_measured_mean": float(problem.operator(exact).mean()),
    }


def scaling_summary(problems: list[ExactProblem], raw: dict) -> list[str]:
    lines = []
    for method in ("DPS", "DMAP K=3"):
        wins = [
            p.name
            for p in problems
            if raw[p.name]["results"][f"{method}, step ∝ σ² − σ'²"]["scores"]["energy"]["mean"]
            < raw[p.name]["results"][method]["scores"]["energy"]["mean"]
        ]
        lines.append(
            f"- {method}: the noise-level step is closer on {len(wins)} of {len(problems)} problems ({', '.join(wins)})."
        )
    return [
        *lines,
        "",
        "The shipped defaults keep the paper's constant ζ; the noise-level step is a separate method file",
        "(`configs/samplers/dps_scaled.yaml`, `dmap_full_scaled.yaml`), tuned like every other method.",
        "",
    ]


def write_report(problems: list[ExactProblem], raw: dict) -> None:
    readings, pin, settings = raw["toy_readings"], raw["pinning"], raw["settings"]
    paper_dps = raw["toy-paper"]["results"]["DPS, the paper's ζ = 0.05"]["scores"]
    tuned_dps, tuned_step = raw["toy-paper"]["results"]["DPS"]["scores"], raw["toy-paper"]["results"]["DPS"]["step"]
    measured_std = raw["toy-paper"]["results"]["DPS"]["scores"]["measured_std"]["mean"]
    ancestral = {p.name: raw[p.name]["results"][methods()[0].label]["scores"]["energy"]["mean"] for p in problems}
    at_floor = [
        p.name
        for p in problems
        if all(raw[p.name]["results"][m]["scores"]["energy"]["mean"] - ancestral[p.name] < 0.005 for m in EXACT_CSE)
    ]
    scaled_noisy = raw["toy-noisy"]["results"]["DPS, step ∝ σ² − σ'² + exact CSE"]["scores"]["energy"]["mean"]
    lines = [
        "# Samplers against the exact posterior",
        "",
        "Generated by `python scripts/exact_benchmark.py` (about 20 minutes on 2 CPU cores; `--report-only` rewrites",
        "this page from `results-exact.json`). On Gaussian-mixture",
        "priors the posterior, its score at every noise level and its MAP are known in closed form, so every",
        "number below measures the sampler alone. Each method's step size was chosen by one procedure for all",
        "(a grid of powers of 4, extended while the best sits at an edge) by the energy distance to the exact",
        f"posterior on *other* measurements of the same prior ({settings['tuning_measurements']} of them, "
        f"{settings['tuning_samples']} samples each); every score is a mean ± std over {settings['repeats']} independent",
        f"repeats of {settings['samples']} samples (half that in 64-D). Columns: the energy distance to exact posterior samples (its noise floor: two exact sets);",
        "the share of samples in each posterior mode; the samples' spread (root of the trace of their covariance)",
        "in the measured and unmeasured directions, with its ratio to the posterior's; the mean distance to the",
        "posterior's MAP; the log-density gap to the MAP under the posterior smoothed by noise of std 0.01",
        "(a sampler has the exact samples' gap; a MAP estimator has 0); network evaluations per sample.",
        "Where the measurement is noise-free the smoothed posterior is only 0.01 wide across the measured",
        f"direction, so a residual there dominates the gap (DPS's {measured_std:.2f} measured spread on toy-paper alone "
        f"costs about {measured_std**2 / 2 / 0.01**2:.0f} nats):",
        "read the distance to the MAP for the MAP claims below.",
        "",
        '"+ exact CSE" runs a method on the exact posterior: guidance added to the perfect conditional score.',
        "",
    ]
    for problem in problems:
        weights = "/".join(f"{w:.3g}" for w in problem.single_posterior().weights.tolist())
        lines += [
            f"## {problem.name}",
            "",
            f"{problem.prior.dim}-D, {problem.y.shape[0]} measurement(s), noise std {problem.noise_std}, "
            f"{problem.num_steps} steps on {type(problem.schedule).__name__}; exact posterior mode weights {weights}.",
            "",
            *table(problem, raw[problem.name]["results"], raw[problem.name]["floor"]),
            "",
        ]
    lines += [
        "## The toy example of Appendix A.4: which posterior?",
        "",
        "The paper calls the toy's posterior bimodal. Under the Gaussian likelihood the measurement states",
        f"(noise-free), the second mode's log-odds are {readings['log_odds_gaussian']:.2f} (weight ≈ e^{readings['log_odds_gaussian']:.0f}): the posterior",
        "is practically unimodal. Under the likelihood its DPS assumes, p(y | x) ∝ exp(−ζ |x₁ − y|) with",
        f"ζ = 0.05, computed on a grid, the second mode keeps {readings['grid_reading_mode_weight_minus']:.2f} of the mass: that posterior",
        'is bimodal, so a bimodal "true posterior" can only be this second reading. DPS at the paper\'s',
        f"ζ = 0.05 is at energy distance {readings['dps_0.05_energy_vs_gaussian_reading']:.3f} from the first reading and",
        f"{readings['dps_0.05_energy_vs_grid_reading']:.3f} from the second.",
        "",
        "The paper's Figure 8 caption says the true posterior has two modes and DPS's samples concentrate on",
        f"one. Here they {'do not' if min(paper_dps['weights']['mean']) > 0.05 else 'do'}: DPS at the paper's ζ = 0.05 puts",
        f"{paper_dps['weights']['mean'][0]:.2f} of them in the mode the measurement disfavours, and "
        f"{tuned_dps['weights']['mean'][0]:.2f} at its tuned ζ = {tuned_step:g}",
        f"(the exact posterior under the Gaussian likelihood: e^{readings['log_odds_gaussian']:.0f} ≈ 0).",
        "",
        "Samples (2-D histograms; step sizes in parentheses): ![toy](img/exact-toy.png)",
        "",
        "## Observations I and II against the exact conditional score",
        "",
        "Along the exact posterior's own trajectory, the distance of each score to the exact conditional",
        "score (DPS's implied score at each ζ, by Proposition 1): ![score error](img/exact-score-error.png)",
        "",
        "| problem | score | abs(E[s]) at x_T | Monte-Carlo floor |",
        "|---|---|---|---|",
    ]
    for problem in problems:
        for name, value in raw["observations"][problem.name]["means"].items():
            lines.append(f"| {problem.name} | {name} | {value['abs_mean']:.4g} | {value['floor']:.4g} |")
    lines += ["", "## Verdicts on the paper's claims, on the exact tier", "", *verdicts(problems, raw)]
    schedule_rows = [
        "| problem | DPS constant | DPS step ∝ σ² − σ'² | DMAP K=3 constant | DMAP K=3 step ∝ σ² − σ'² |",
        "|---|---|---|---|---|",
    ]
    for problem in problems:
        res = raw[problem.name]["results"]
        names = ["DPS", "DPS, step ∝ σ² − σ'²", "DMAP K=3", "DMAP K=3, step ∝ σ² − σ'²"]
        schedule_rows.append(
            f"| {problem.name} | " + " | ".join(fmt(res[n]["scores"]["energy"], 4) for n in names) + " |"
        )
    lines += [
        "## Guidance on top of a perfect CSE, when the measurement is noisy",
        "",
        f"On {', '.join(at_floor)}, DPS and DMAP K=3 added to the exact posterior stay within 0.005 (energy distance) of",
        f"the exact posterior's own sampler. On {', '.join(p.name for p in problems if p.name not in at_floor)} they do not. DPS's guidance is the gradient of the unsquared norm",
        "‖y − A x̂₀‖ (as in DPS and the paper), whose size does not shrink with the residual, so even a tiny",
        f"step pins A x to y: at ζ = {pin['step']:g} the samples' measured coordinate has mean {pin['measured_mean']:.3f} "
        f"and spread {pin['measured_ratio']:.2f} times",
        f"the posterior's, whose measured coordinate has mean {pin['posterior_measured_mean']:.3f} (y = {pin['y']:g}; "
        "the noise lets the prior pull it away).",
        "Tuning's scores have a local minimum at a moderate step (the least bad compromise), so the grid never",
        "extended down to the vanishing steps (about 1e-5, as on random-64d) that leave the posterior alone.",
        "A step that follows the noise level shrinks with σ² − σ'² as the trajectory ends, so it does not pin:",
        f"DPS with it, on the exact posterior, is at energy distance {scaled_noisy:.4f} on toy-noisy.",
        "",
        "## A constant step or one that follows the noise level?",
        "",
        "The paper keeps ζ constant; score-based guidance scales the step with σ² − σ'² (DPS's implied",
        "likelihood weight is then constant). Energy distance to the exact posterior, each tuned alike:",
        "",
        *schedule_rows,
        "",
        *scaling_summary(problems, raw),
    ]
    (DOCS / "results-exact.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
