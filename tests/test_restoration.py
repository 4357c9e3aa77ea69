"""python -m cse predict on the tiny stack: every config, DDP, resume, diversity."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from lightning.pytorch import Callback, Trainer
from PIL import Image

from cse.cli import main
from cse.data import ImageDataModule
from cse.metrics import PixelFeatures
from cse.models import build_controlnet
from cse.operators import SuperResolution
from cse.priors.diffusers_prior import DiffusersPrior
from cse.restoration import RestorationModule
from cse.samplers import DPS

ROOT = Path(__file__).resolve().parents[1]
PREDICT_CONFIGS = sorted(p for task in ("sr8", "gblur", "inpaint") for p in (ROOT / "configs" / task).glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_cse(tiny_latent, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-cse")
    build_controlnet(DiffusersPrior.from_pretrained(tiny_latent)).save_pretrained(folder)
    return str(folder)


def overrides(config: Path, tiny_latent: str, tiny_cse: str, images: str, out: Path, count: int = 2) -> list[str]:
    # cse.yaml trains the CSE with fit; predict with it needs a trained one
    uses_cse = config.name == "cse.yaml" or yaml.safe_load(config.read_text())["model"]["init_args"]["controlnet"]
    return [
        f"--config={config}",
        f"--model.init_args.pretrained={tiny_latent}",
        *([f"--model.init_args.controlnet={tiny_cse}"] if uses_cse else []),
        "--model.init_args.sampler.init_args.num_steps=2",
        f"--model.init_args.output_dir={out}",
        "--model.init_args.lpips=false",
        "--model.init_args.feature_network=cse.metrics.PixelFeatures",
        *(["--model.init_args.operator.init_args.size=8"] if config.parent.name == "inpaint" else []),
        *(
            ["--trainer.precision=bf16-mixed", "--model.init_args.gradient_checkpointing=true"]
            if config.stem == "dmap_full"
            else []
        ),
        f"--trainer.default_root_dir={out}",
        f"--data.init_args.predict={images}",
        "--data.init_args.image_size=16",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        f"--data.init_args.predict_count={count}",
    ]


def test_all_table_cells_have_a_config():
    names = {(p.parent.name, p.stem) for p in PREDICT_CONFIGS}
    methods = ["dps", "dsg", "dmap_same", "dmap_full", "cse", "dps_cse", "dmap_cse"]
    assert names == {(t, m) for t in ["sr8", "gblur", "inpaint"] for m in methods}


@pytest.mark.parametrize("config", PREDICT_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_each_predict_config_restores_a_two_image_set(
    config, tiny_latent, tiny_cse, image_folder, tmp_path, monkeypatch
):
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    main(["predict", *overrides(config, tiny_latent, tiny_cse, image_folder, tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["count"] == 2 and np.isfinite([summary["psnr"], summary["fid"], summary["residual"]]).all()
    assert summary["network_evaluations"] > 0 and summary["seconds"] > 0
    for folder in ("source", "measurement", "lifted", "recon"):
        assert len(list((tmp_path / folder).rglob("*.png"))) == 2
    assert (tmp_path / "grid.png").exists()


def read_images(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def test_two_ddp_processes_give_the_same_images_as_one(tiny_latent, tiny_cse, image_folder, tmp_path):
    config = ROOT / "configs" / "sr8" / "dmap_same.yaml"
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        args = overrides(config, tiny_latent, tiny_cse, image_folder, out, count=4)
        args += [
            "--trainer.accelerator=cpu",
            f"--trainer.devices={devices}",
            "--trainer.strategy=ddp" if devices > 1 else "--trainer.strategy=auto",
        ]
        result = subprocess.run(
            [sys.executable, "-m", "cse", "predict", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_images(tmp_path / "devices1" / "recon"), read_images(tmp_path / "devices2" / "recon")
    assert len(one) == 4 and one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    lines = (tmp_path / "devices2" / "metrics.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == [
        "class0/img0",
        "class0/img2",
        "class0/img4",
        "class1/img1",
    ]


class Interrupt(Callback):
    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 1:
            raise RuntimeError("simulated crash in the second batch")


def restore(tiny_latent, image_folder, out, callbacks=(), batch_size=2, **kwargs):
    module = RestorationModule(
        SuperResolution(2),
        DPS(1.0, 2),
        pretrained=tiny_latent,
        output_dir=str(out),
        lpips=False,
        feature_network=PixelFeatures(),
        **kwargs,
    )
    data = ImageDataModule(predict=image_folder, image_size=16, batch_size=batch_size, num_workers=0, predict_count=4)
    Trainer(logger=False, enable_progress_bar=False, callbacks=list(callbacks), default_root_dir=out).predict(
        module, data, return_predictions=False
    )


def test_an_interrupted_run_rerun_writes_each_image_once(tiny_latent, image_folder, tmp_path):
    with pytest.raises(RuntimeError, match="simulated crash"):
        restore(tiny_latent, image_folder, tmp_path, callbacks=[Interrupt()])
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "recon").rglob("*.png")}
    assert len(first) == 2
    restore(tiny_latent, image_folder, tmp_path)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "recon").rglob("*.png")}
    assert len(after) == 4 and all(after[name] == stamp for name, stamp in first.items())
    keys = [json.loads(line)["key"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4
    assert json.loads((tmp_path / "summary.json").read_text())["count"] == 4


def test_results_do_not_depend_on_batch_size(tiny_latent, image_folder, tmp_path):
    restore(tiny_latent, image_folder, tmp_path / "b1", batch_size=1)
    restore(tiny_latent, image_folder, tmp_path / "b4", batch_size=4)
    one, four = read_images(tmp_path / "b1" / "recon"), read_images(tmp_path / "b4" / "recon")
    assert one.keys() == four.keys()
    for name in one:
        assert np.abs(one[name].astype(int) - four[name].astype(int)).max() <= 1, name  # 8-bit rounding of float noise


def test_diversity_over_several_samples(tiny_latent, image_folder, tmp_path):
    restore(tiny_latent, image_folder, tmp_path, samples_per_image=3)
    maps = list((tmp_path / "diversity").rglob("*.png"))
    assert len(maps) == 4 and np.asarray(Image.open(maps[0])).shape == (16, 16, 3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(row["diversity"] > 0 for row in rows)
