"""End to end on the shipped digits checkpoints, through the CLI (few images, few steps)."""

import json
from pathlib import Path

import pytest

from cse.cli import main
from data_tools.__main__ import main as data_tools

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "digits"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    data_tools(["digits", "--out", str(out)])
    return out


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the configs name checkpoints/digits/... relative to the repository
    monkeypatch.setattr("sys.argv", ["python -m cse"])


def test_the_main_job_restores_test_digits_with_the_shipped_prior_and_cse(digits, tmp_path):
    main(
        [
            "predict",
            f"--config={DIGITS / 'sr4_dmap_cse.yaml'}",
            f"--data.init_args.predict={digits / 'test'}",
            "--data.init_args.predict_count=4",
            "--model.init_args.sampler.init_args.num_steps=5",
            f"--model.init_args.output_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["count"] == 4 and summary["psnr"] > 10 and summary["fid"] >= 0
    assert len(list((tmp_path / "recon").glob("*.png"))) == 4 and (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("config", ["prior", "classifier", "sr4_cse", "inpaint_cse_full", "gblur_cse"])
def test_the_digits_training_configs_run(config, digits, tmp_path):
    main(
        [
            "fit",
            f"--config={DIGITS / f'{config}.yaml'}",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            *([f"--data.init_args.train={digits / 'train'}"] if config != "classifier" else []),
            *([f"--trainer.logger.init_args.save_dir={tmp_path}"] if config != "classifier" else []),
            *(
                [f"--model.init_args.export_path={tmp_path / 'c.safetensors'}"]
                if config == "classifier"
                else [f"--model.init_args.export_dir={tmp_path / 'export'}"]
            ),
        ]
    )
