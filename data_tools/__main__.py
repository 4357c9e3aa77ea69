"""``python -m data_tools {shards,selfgen,digits} ...``"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cse  # noqa: F401  (makes torchvision importable before lightning loads it)
from cse.errors import PretrainedNotFoundError
from cse.runs import RunFolderError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m data_tools", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    shards = commands.add_parser("shards", help="an image folder -> square images in webdataset shards")
    shards.add_argument("--src", type=Path, required=True, help="image folder (flat or ImageNet layout, recursive)")
    shards.add_argument("--out", type=Path, required=True)
    shards.add_argument("--size", type=int, default=512, help="side after resizing the short side and centre-cropping")
    shards.add_argument("--count", type=int, default=None, help="how many images (default: all)")
    shards.add_argument("--seed", type=int, default=None, help="take the first N after a seeded shuffle")
    shards.add_argument("--shard-size", type=int, default=1000, help="images per shard")
    shards.add_argument("--overwrite", action="store_true", help="replace the shards of another job in --out")

    selfgen = commands.add_parser("selfgen", help="unconditional samples of a prior, as shards")
    selfgen.add_argument("--prior", required=True, help="diffusers folder or hub id")
    selfgen.add_argument("--count", type=int, required=True)
    selfgen.add_argument("--out", type=Path, required=True)
    selfgen.add_argument("--num-steps", type=int, default=50)
    selfgen.add_argument("--batch-size", type=int, default=8)
    selfgen.add_argument("--seed", type=int, default=0)
    selfgen.add_argument("--shard-size", type=int, default=1000)
    selfgen.add_argument("--devices", default="auto", help="Lightning devices (e.g. 4 for 4 GPUs)")
    selfgen.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    selfgen.add_argument("--overwrite", action="store_true", help="replace the samples of another job in --out")

    digits = commands.add_parser("digits", help="scikit-learn's digits as 16x16 train/test shards")
    digits.add_argument("--out", type=Path, required=True)
    digits.add_argument("--size", type=int, default=16)
    return root


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    try:
        summary = run(args)
    except (PretrainedNotFoundError, RunFolderError) as error:
        if argv is not None or os.environ.get("CSE_TRACEBACK"):
            raise  # called from Python, or asked for: the whole exception
        from cse.errors import fail_clearly  # the same one-line error as python -m cse

        fail_clearly(error, " Here: --prior DIR." if isinstance(error, PretrainedNotFoundError) else "")
    print(json.dumps(summary))
    return summary


def run(args: argparse.Namespace) -> dict:
    if args.command == "shards":
        from data_tools.shards import build_shards

        summary = build_shards(args.src, args.out, args.size, args.count, args.seed, args.shard_size, args.overwrite)
        summary = {**summary, "skipped": len(summary["skipped"])}
    elif args.command == "selfgen":
        from data_tools.selfgen import generate

        trainer_kwargs = {"devices": args.devices, "precision": args.precision}
        summary = generate(
            args.prior,
            args.count,
            args.out,
            args.num_steps,
            args.batch_size,
            args.seed,
            args.shard_size,
            trainer_kwargs,
            args.overwrite,
        )
    else:
        from data_tools.digits import build_digits

        summary = build_digits(args.out, args.size)
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
