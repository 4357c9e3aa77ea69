"""``python -m data_tools selfgen``: the paper's self-generated CSE training set, i.e.
unconditional samples of the prior itself (empty prompt, ancestral sampling), one seed per
image, run as a Lightning predict job (GPUs, progress bar, resume), then packed into shards."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, Dataset

from cse import runs
from cse.callbacks import ImageWriter
from cse.digest import folder_digest
from cse.images import decode_image
from cse.paths import project_path
from cse.priors.diffusers_prior import DiffusersPrior
from cse.records import Samples
from cse.samplers import Ancestral
from cse.seeding import seed_from_key
from data_tools.writing import write_manifest, write_shards


def selfgen_keys(count: int) -> list[str]:
    return [f"selfgen{i:06d}" for i in range(count)]


class KeyDataset(Dataset):
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> str:
        return self.keys[index]


class SelfGenerationModule(LightningModule):
    """Ancestral samples of ``prior``; image ``key`` is drawn with the seed of ``(seed, key)``."""

    def __init__(self, prior: str, num_steps: int = 50, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.prior = DiffusersPrior.from_pretrained(prior)
        self.sampler = Ancestral(num_steps)

    def predict_step(self, keys: list[str], batch_idx: int) -> Samples:
        seeds = [seed_from_key(key, f"selfgen:{self.hparams.seed}") for key in keys]
        return Samples(keys, self.sampler(self.prior, None, None, seeds).cpu())


def selfgen_settings(prior: str, count: int, num_steps: int, seed: int) -> dict:
    """What decides the samples; a local prior is recorded by the content of its weights too."""
    folder = project_path(prior)
    digest = folder_digest(folder) if folder.is_dir() else None
    return {
        "prior": str(prior),
        "prior_digest": digest,
        "count": count,
        "num_steps": num_steps,
        "seed": seed,
        "prompt": "",
    }


def generate(
    prior: str,
    count: int,
    out: Path,
    num_steps: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    shard_size: int = 1000,
    trainer_kwargs: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Generate what is missing under ``out/images``, then (re)write the shards from all of it.

    ``out`` holds one job (cse.runs.job): a rerun with the same settings resumes it, a larger count
    extends it, other settings are refused unless ``overwrite``."""
    writer = ImageWriter(out, "images")
    trainer = Trainer(callbacks=[writer], logger=False, **(trainer_kwargs or {}))
    settings = selfgen_settings(prior, count, num_steps, seed)
    products = ("images", "shards")
    with runs.job(out, settings, products, overwrite, "samples", may_grow=("count",), active=trainer.is_global_zero):
        pending = [key for key in selfgen_keys(count) if not writer.done(key)]
        if pending:
            module = SelfGenerationModule(prior, num_steps, seed)
            loader = DataLoader(KeyDataset(pending), batch_size=batch_size, collate_fn=list)
            trainer.predict(module, loader, return_predictions=False)
        if not trainer.is_global_zero:
            return {"generated": len(pending)}
        keys = selfgen_keys(count)
        samples = ((key, decode_image(writer.path(key).read_bytes()), {"seed_key": key}) for key in keys)
        runs.clear(out / "shards", ["*.tar"])  # packed again from all the images: no earlier shard stays
        rows = write_shards(samples, out / "shards", shard_size)
        write_manifest(out / "shards", rows, [], settings)
        return {"generated": len(pending), "written": len(rows)}
