"""The table docs/performance.md shows, from the JSON files scripts/gpu_check.sh wrote:
``python scripts/gpu_table.py DIR``."""

import json
import sys
from pathlib import Path

RUNS = {  # file: what it measured
    "eager_b16.json": "eager",
    "eager_big.json": "eager",
    "eager_huge.json": "eager, gradient checkpointing",
    "fast_b16.json": "compiled + decoder attention as matmuls",
}


def rows(folder: Path) -> list[str]:
    lines = [
        "| configuration | sampler | batch | s / image | peak GiB | × op-by-op bound |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in RUNS.items():
        path = folder / name
        if not path.is_file():
            continue
        for row in json.loads(path.read_text()).get("rows", []):
            bound = row.get("times_roofline")
            memory = row.get("peak_memory_gib")
            lines.append(
                f"| {label} | {row['sampler']} | {row['batch']} | {row['seconds_per_image']:.3g} | "
                f"{'–' if memory is None else f'{memory:.1f}'} | {'–' if bound is None else f'{bound:.2f}'} |"
            )
    return lines


def families(folder: Path) -> list[str]:
    lines = []
    for name in ("profile_eager_b16.json", "profile_fast_b16.json"):
        path = folder / name
        if path.is_file():
            for sampler, table in json.loads(path.read_text())["profile"].items():
                shares = ", ".join(f"{family} {v['share']:.0%}" for family, v in table.items())
                lines.append(f"- {name.removesuffix('.json')} ({sampler}): {shares}")
    return lines


def compare(folder: Path) -> list[str]:
    path = folder / "compare.json"
    if not path.is_file():
        return []
    table = json.loads(path.read_text())["compare"]
    return [
        f"- {name}: {v['psnr_vs_fp32']:.1f} dB against fp32 (max |diff| {v['max_abs_diff']:.2g})"
        for name, v in table.items()
    ]


def main() -> None:
    folder = Path(sys.argv[1])
    print(
        "\n".join(
            [
                *rows(folder),
                "",
                "Kernel families of one step:",
                *families(folder),
                "",
                "Against fp32:",
                *compare(folder),
            ]
        )
    )


if __name__ == "__main__":
    main()
