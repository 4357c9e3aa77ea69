"""The observations through the CLI, on the exact toy and on the shipped digits checkpoints."""

import json
import math
from pathlib import Path

import pytest

from cse.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_the_toy_observation_runs_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    main(
        [
            "predict",
            f"--config={ROOT / 'configs/exact/toy.yaml'}",
            f"--config={ROOT / 'configs/observations/score_error.yaml'}",
            "--steps.num_steps=10",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["count"] == 4 and len(summary["sigma"]) == 10 and summary["sigma"][0] == pytest.approx(4.0)
    assert all(math.isfinite(v) for v in summary["dps_4.8"]["mean"]) and (tmp_path / "plot.png").exists()


@pytest.mark.parametrize("observation", ["score_error", "score_mean", "diversity"])
def test_the_digits_observations_run_through_the_cli(observation, digits_data, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    monkeypatch.chdir(ROOT)
    task = ROOT / "configs/digits/sr4"
    method = [f"--config={ROOT / 'configs/samplers/dps.yaml'}"] if observation == "diversity" else []
    main(
        [
            "predict",
            f"--config={task / 'task.yaml'}",
            *method,
            f"--config={ROOT / 'configs/observations' / f'{observation}.yaml'}",
            f"--config={task / 'reference.yaml'}",
            "--steps.num_steps=4",
            *(["--model.init_args.draws=4"] if observation == "score_mean" else []),
            *(["--model.init_args.samples_per_image=3"] if observation == "diversity" else []),
            f"--data.init_args.predict={digits_data / 'test'}",
            "--data.init_args.predict_count=2",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["count"] == 2
    if observation == "score_mean":
        assert set(summary) >= {"uncond", "reference", "dps_8"} and (tmp_path / "table.md").exists()
    if observation == "diversity":
        assert summary["diversity"] > 0 and len(list((tmp_path / "diversity").glob("*.png"))) == 2
