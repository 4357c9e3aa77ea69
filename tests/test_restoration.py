"""python -m cse predict: composed configs, DDP, resuming, faults and bad input (tiny stacks)."""

import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from diffusers import UNet2DConditionModel
from lightning.pytorch import Trainer
from PIL import Image

import cse.callbacks
from cse.callbacks import RestorationWriter
from cse.cli import derived_root, main
from cse.data import ImageDataModule
from cse.errors import InputError
from cse.features import PixelFeatures
from cse.operators import Convolution, MatrixOperator, Measurement, SuperResolution
from cse.priors import DiffusersPrior, build_controlnet
from cse.priors.conditioned import write_cse_record
from cse.priors.schedule import DiscreteSchedule
from cse.restoration import RestorationModule
from cse.samplers import DPS
from cse.samplers.registry import METHODS, NEWER, Need
from cse.steps import StepTableError, not_defined

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TASKS = sorted(p.parent.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("task.yaml"))
SD2_TASKS = [t for t in TASKS if "/" not in t]
DIGITS_TASKS = [t for t in TASKS if t.startswith("digits")]  # the shipped pixel and latent tiers, every operator
SAMPLERS = sorted(p.stem for p in (CONFIGS / "samplers").glob("*.yaml"))


def applies(task: str, sampler: str) -> bool:
    """Whether the method is defined on the task (its step table has a cell, its needs are met)."""
    return not_defined(CONFIGS / task / "task.yaml", sampler) is None


@pytest.fixture(scope="module")
def tiny_cse(tiny_latent, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tiny-cse")
    build_controlnet(DiffusersPrior.from_pretrained(tiny_latent)).save_pretrained(folder)
    write_cse_record(folder, Measurement(SuperResolution(8)).describe())  # the task it is used with (sr8)
    return str(folder)


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["python -m cse"])


def configs(task: str, *more: str) -> list[str]:
    return [f"--config={CONFIGS / task / 'task.yaml'}", *(f"--config={CONFIGS / m}" for m in more)]


OPERATOR = "--model.init_args.measurement.init_args.operator.init_args"
TINY_OPERATORS = {
    "inpaint": [f"{OPERATOR}.size=8"],
    "nlblur": [f"{OPERATOR}.random_weights=true", f"{OPERATOR}.width=8", f"{OPERATOR}.front_blocks=1"],
}


@pytest.fixture(scope="module")
def images_128(tmp_path_factory) -> str:
    """Two random 128 px images: the kernel network of the nonlinear blur takes multiples of 128."""
    folder = tmp_path_factory.mktemp("images128")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return str(folder)


def sd2_overrides(task: str, tiny_latent: str, images: str, out: Path, count: int = 2) -> list[str]:
    """The SD2 task files on the tiny stack: 2 steps, 16 px images (128 for the nonlinear blur), no
    downloadable weights (the blur network's are random, tiny)."""
    return [
        f"--model.init_args.prior.init_args.id_or_path={tiny_latent}",
        "--steps.num_steps=2",
        *TINY_OPERATORS.get(task, []),
        "--trainer.callbacks.init_args.lpips=false",
        "--trainer.callbacks.init_args.feature_network=cse.features.PixelFeatures",
        "--trainer.callbacks.init_args.kid_subset_size=2",
        f"--trainer.default_root_dir={out}",
        f"--data.init_args.predict={images}",
        f"--data.init_args.image_size={128 if task == 'nlblur' else 16}",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        f"--data.init_args.predict_count={count}",
    ]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# -- every config --------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_every_cell_of_every_task_parses(task, capsys):
    """Each task with each method file that applies to it (no instantiation, no weights), and with
    its CSE attached (cse.yaml sets only the prior's ControlNet, so once, on the CSE row's method);
    a method the task has no step size for is a clear error."""
    for sampler in SAMPLERS:
        if not applies(task, sampler):  # PSLD on a nonlinear operator: why it is not defined is named
            with pytest.raises(StepTableError, match=rf"steps.yaml: methods\.{sampler}\S*: not defined"):
                main(["predict", *configs(task, f"samplers/{sampler}.yaml"), "--print_config"])
            continue
        for extra in ([], [f"{task}/cse.yaml"]) if sampler == "ancestral" else ([],):
            with pytest.raises(SystemExit) as exit_:
                main(["predict", *configs(task, f"samplers/{sampler}.yaml", *extra), "--print_config"])
            assert exit_.value.code == 0
            printed = capsys.readouterr().out
            assert "${" not in printed and "class_path: cse.samplers." in printed
            assert not extra or re.search(r"controlnet: (?!null)\S", printed)  # the CSE is attached


@pytest.mark.parametrize("task", SD2_TASKS)
def test_each_sd2_task_restores_a_two_image_set(task, tiny_latent, image_folder, images_128, tmp_path):
    images = images_128 if task == "nlblur" else image_folder
    main(["predict", *configs(task, "samplers/dps.yaml"), *sd2_overrides(task, tiny_latent, images, tmp_path)])
    result = summary(tmp_path)
    assert result["count"] == 2 and np.isfinite([result["psnr"], result["fid"], result["residual"]]).all()
    assert result["network_evaluations"] == 2 and result["network_gradients"] == 2 and result["seconds"] > 0
    for folder in ("source", "measurement", "control", "recon"):
        assert len(list((tmp_path / folder).rglob("*.png"))) == 2
    assert (tmp_path / "grid.png").exists() and json.loads((tmp_path / "run.json").read_text())["fingerprint"]


ON_THEIR_SCALE = {"daps": {"langevin_lr": 1e-4}}  # a Langevin step of 1 diverges: the official configs' 1e-4


LATENT_ONES = [s for s in SAMPLERS if Need.PIXEL_PRIOR not in METHODS[s].needs]
"""DDRM and PiGDM need a pixel prior (the SD2 tasks' is latent): the digits CLI test runs them."""


@pytest.mark.parametrize("sampler", LATENT_ONES)
def test_each_sampler_file_runs_with_and_without_the_cse(sampler, tiny_latent, tiny_cse, image_folder, tmp_path):
    # the step-scaled variants are not defined on SD2 (its table says why): their registry entry runs
    entry = METHODS[sampler]
    settings = entry.settings(2, dict.fromkeys(entry.tuned, 1.0) | ON_THEIR_SCALE.get(sampler, {}))
    given = json.dumps({"class_path": entry.class_path, "init_args": settings})
    method = [f"--model.init_args.sampler={given}"] if not applies("sr8", sampler) else []
    for cse_on in (False, True):
        out = tmp_path / f"cse{cse_on}"
        args = [
            "predict",
            *configs("sr8", *([] if method else [f"samplers/{sampler}.yaml"])),
            *sd2_overrides("sr8", tiny_latent, image_folder, out),
            *method,
        ]
        if cse_on:
            args += [f"--model.init_args.prior.init_args.controlnet={tiny_cse}"]
        main(args)
        assert summary(out)["count"] == 2
    with_cse = json.loads((tmp_path / "cseTrue" / "run.json").read_text())["settings"]["prior"]["controlnet"]
    assert with_cse == tiny_cse


NEWER_CELLS = [(m, t) for m in NEWER for t in DIGITS_TASKS if applies(t, m)]
"""Every digits task (pixel and latent) each of the field's newer solvers is defined on."""


@pytest.mark.parametrize(("sampler", "task"), NEWER_CELLS)
def test_each_newer_solver_runs_from_the_cli_on_every_digits_task(sampler, task, digits_at, tmp_path):
    """Through the method file, the step table's cell and the shipped checkpoints; 2 steps, 1 digit."""
    data = digits_at(data_config(task)["init_args"]["image_size"])
    main(
        [
            "predict",
            *configs(task, f"samplers/{sampler}.yaml"),
            "--steps.num_steps=2",
            f"--data.init_args.predict={data / 'test'}",
            "--data.init_args.predict_count=1",
            "--trainer.callbacks.init_args.fid=false",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert summary(tmp_path)["count"] == 1 and math.isfinite(summary(tmp_path)["psnr"])


def test_the_newer_solvers_cover_both_digits_tiers():
    """The cells above are not empty by accident: the latent tier has DiffPIR, RED-diff and DAPS."""
    assert {t.split("/")[0] for _, t in NEWER_CELLS} == {"digits", "digits_latent"}
    assert {m for m, t in NEWER_CELLS if t.startswith("digits_latent")} == {"diffpir", "reddiff", "daps"}


def data_config(task: str) -> dict:
    """The data file a task's config names (``data: ../data.yaml``), read."""
    task_file = CONFIGS / task / "task.yaml"
    return yaml.safe_load((task_file.parent / yaml.safe_load(task_file.read_text())["data"]).read_text())


@pytest.mark.parametrize("task", DIGITS_TASKS)
def test_each_digits_task_runs_on_the_shipped_checkpoints(task, digits_at, tmp_path):
    data = digits_at(data_config(task)["init_args"]["image_size"])
    main(
        [
            "predict",
            *configs(task, "samplers/dmap_same.yaml", f"{task}/cse.yaml"),
            "--steps.num_steps=4",
            f"--data.init_args.predict={data / 'test'}",
            "--data.init_args.predict_count=2",
            "--trainer.callbacks.init_args.kid_subset_size=2",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert summary(tmp_path)["count"] == 2 and summary(tmp_path)["network_gradients"] == 2  # K = 2, last step plain


def test_the_output_folder_is_derived_from_the_config_files():
    task = CONFIGS / "digits/sr4/task.yaml"
    assert derived_root([task, CONFIGS / "samplers/dps.yaml"]) == Path("outputs/digits/sr4/dps")
    assert derived_root([task, CONFIGS / "samplers/dps.yaml", CONFIGS / "digits/sr4/cse.yaml"]) == Path(
        "outputs/digits/sr4/dps+cse"
    )
    assert derived_root([CONFIGS / "sr8/task.yaml", CONFIGS / "train_cse.yaml"]) == Path("outputs/sr8/train_cse")
    assert derived_root([CONFIGS / "digits/train_prior.yaml"]) == Path("outputs/digits/train_prior")


def test_predictions_are_not_kept_in_memory(tiny_latent, image_folder, tmp_path):
    cli = main(
        ["predict", *configs("sr8", "samplers/dps.yaml"), *sd2_overrides("sr8", tiny_latent, image_folder, tmp_path)]
    )
    assert cli.config_init["predict"]["return_predictions"] is False
    assert not cli.trainer.predict_loop.predictions


# -- DDP and batches -----------------------------------------------------------------------------


def read_images(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


@pytest.mark.slow  # two spawned processes: about 25 s
def test_two_ddp_processes_give_the_same_images_as_one(tiny_latent, image_folder, tmp_path):
    for devices in (1, 2):
        out = tmp_path / f"devices{devices}"
        args = [*configs("sr8", "samplers/dmap_same.yaml"), *sd2_overrides("sr8", tiny_latent, image_folder, out, 4)]
        args += ["--trainer.accelerator=cpu", f"--trainer.devices={devices}"]
        args += ["--trainer.strategy=ddp" if devices > 1 else "--trainer.strategy=auto"]
        result = subprocess.run(
            [sys.executable, "-m", "cse", "predict", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = read_images(tmp_path / "devices1" / "recon"), read_images(tmp_path / "devices2" / "recon")
    assert len(one) == 4 and one.keys() == two.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    keys = [json.loads(line)["key"] for line in (tmp_path / "devices2" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(keys) == ["class0/img0", "class0/img2", "class0/img4", "class1/img1"]


def restore(prior, images, out, batch_size=2, count=4, sampler=None, writer=None, **kwargs):
    """Python API: a RestorationModule and a writer in a plain Trainer."""
    module = RestorationModule(
        DiffusersPrior.from_pretrained(prior), Measurement(SuperResolution(2)), sampler or DPS(1.0, 2), **kwargs
    )
    data = ImageDataModule(predict=images, image_size=16, batch_size=batch_size, num_workers=0, predict_count=count)
    writer = writer or RestorationWriter(str(out), lpips=False, feature_network=PixelFeatures(), kid_subset_size=2)
    Trainer(logger=False, enable_progress_bar=False, callbacks=[writer], default_root_dir=out).predict(
        module, data, return_predictions=False
    )


def test_results_do_not_depend_on_batch_size(tiny_latent, image_folder, tmp_path):
    restore(tiny_latent, image_folder, tmp_path / "b1", batch_size=1)
    restore(tiny_latent, image_folder, tmp_path / "b4", batch_size=4)
    one, four = read_images(tmp_path / "b1" / "recon"), read_images(tmp_path / "b4" / "recon")
    assert one.keys() == four.keys()
    for name in one:
        assert np.abs(one[name].astype(int) - four[name].astype(int)).max() <= 1, name  # 8-bit rounding of float noise


def test_diversity_over_several_samples_in_the_papers_units(tiny_latent, image_folder, tmp_path):
    restore(tiny_latent, image_folder, tmp_path, samples_per_image=3)
    maps = list((tmp_path / "diversity").rglob("*.png"))
    assert len(maps) == 4 and np.asarray(Image.open(maps[0])).shape == (16, 16, 3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all(row["diversity"] > 0 for row in rows)


# -- faults: nothing lost, nothing misdescribed ---------------------------------------------------


def test_killed_between_the_pngs_and_the_metrics_line_a_rerun_completes_it(
    tiny_latent, image_folder, tmp_path, monkeypatch, caplog
):
    """The second batch's PNGs are written, then the process dies before its metrics line (and a
    half-written temporary file is left): the rerun redoes those images and the summary counts all."""
    calls = []
    append = cse.callbacks.append_jsonl

    def dying(path, rows):
        calls.append(path)
        if len(calls) == 3:  # batch 2's metrics (each batch appends metrics, then skipped)
            (tmp_path / "recon" / "class1").mkdir(parents=True, exist_ok=True)
            (tmp_path / "recon" / "class1" / ".img1.png.x1y2.tmp").write_bytes(b"half")
            raise RuntimeError("killed")
        append(path, rows)

    monkeypatch.setattr(cse.callbacks, "append_jsonl", dying)
    with pytest.raises(RuntimeError, match="killed"):
        restore(tiny_latent, image_folder, tmp_path)
    assert len(list((tmp_path / "recon").rglob("*.png"))) == 4  # every PNG exists ...
    monkeypatch.setattr(cse.callbacks, "append_jsonl", append)
    restore(tiny_latent, image_folder, tmp_path)  # ... but only 2 images were done
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and summary(tmp_path)["count"] == 4
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "metrics").exists()
    with caplog.at_level(logging.INFO):
        restore(tiny_latent, image_folder, tmp_path)  # a third time: nothing is left, and it says so
    assert "All 4 inputs already have results" in caplog.text and summary(tmp_path)["count"] == 4


def test_sigterm_stops_a_run_after_the_batch_in_hand_and_a_rerun_resumes(
    tiny_latent, image_folder, tmp_path, monkeypatch
):
    steps = []
    step = DPS.step

    def terminated_during_the_first_batch(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or `timeout` sends it
        return step(self, *args, **kwargs)

    monkeypatch.setattr(DPS, "step", terminated_during_the_first_batch)
    with pytest.raises(SystemExit) as exit_:
        restore(tiny_latent, image_folder, tmp_path)  # 4 images in batches of 2
    assert exit_.value.code == 143
    assert len((tmp_path / "metrics" / "metrics-rank0.jsonl").read_text().splitlines()) == 2
    restore(tiny_latent, image_folder, tmp_path)
    # 2 steps per batch, and 2 timed probe steps before each run's first batch (its cost estimate):
    # 2 + 2 before the signal took effect, 2 + 2 in the rerun, which made batch 2 only
    assert summary(tmp_path)["count"] == 4 and len(steps) == 8


def test_a_torn_metrics_line_is_redone_and_a_corrupt_one_is_named(tiny_latent, image_folder, tmp_path):
    restore(tiny_latent, image_folder, tmp_path, count=2)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "metrics.jsonl").write_text(lines[0] + "\n" + lines[1][:20])  # killed mid-line
    restore(tiny_latent, image_folder, tmp_path, count=2)
    assert [json.loads(line)["key"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        json.loads(lines[0])["key"],
        json.loads(lines[1])["key"],
    ]
    (tmp_path / "metrics.jsonl").write_text("{not json\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 1, is not valid JSON"):
        restore(tiny_latent, image_folder, tmp_path, count=2)


def test_a_rerun_with_other_settings_refuses_to_mix_unless_asked(tiny_latent, image_folder, tmp_path):
    restore(tiny_latent, image_folder, tmp_path, count=2)
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(
        FileExistsError, match=r"other settings \(sampler: DPS\(num_steps=2, .*zeta=1.0.*\) -> DPS\(num_steps=3"
    ):
        restore(tiny_latent, image_folder, tmp_path, count=2, sampler=DPS(0.1, 3))
    assert (tmp_path / "summary.json").read_text() == before
    writer = RestorationWriter(
        str(tmp_path), lpips=False, feature_network=PixelFeatures(), kid_subset_size=2, overwrite=True
    )
    restore(tiny_latent, image_folder, tmp_path, count=2, sampler=DPS(0.1, 3), writer=writer)
    assert "num_steps=3" in json.loads((tmp_path / "run.json").read_text())["settings"]["sampler"]
    assert summary(tmp_path)["count"] == 2


def test_a_run_that_failed_before_restoring_anything_does_not_block_the_corrected_one(
    tiny_latent, image_folder, tmp_path, monkeypatch
):
    def broken(self, *args, **kwargs):
        raise RuntimeError("a mistake in the first command")

    with monkeypatch.context() as patch:
        patch.setattr(DPS, "step", broken)
        with pytest.raises(RuntimeError, match="a mistake"):
            restore(tiny_latent, image_folder, tmp_path, count=2)
    assert (tmp_path / "run.json").is_file()  # a fingerprint, but no results to protect
    restore(tiny_latent, image_folder, tmp_path, count=2, sampler=DPS(0.1, 3))
    assert "num_steps=3" in json.loads((tmp_path / "run.json").read_text())["settings"]["sampler"]
    assert summary(tmp_path)["count"] == 2


def test_more_inputs_with_the_same_settings_extend_the_run(tiny_latent, image_folder, tmp_path, monkeypatch):
    restore(tiny_latent, image_folder, tmp_path, count=2)
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "recon").rglob("*.png")}
    restore(tiny_latent, image_folder, tmp_path, count=4)  # the trial run, extended
    assert summary(tmp_path)["count"] == 4
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())  # the first two were not redone
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["data"]["predict_count"] == 4
    with pytest.raises(FileExistsError, match=r"other settings \(data.predict_count: 4 -> 2\)"):
        restore(tiny_latent, image_folder, tmp_path, count=2)  # fewer: the summary would misdescribe them
    with pytest.raises(FileExistsError, match=r"other settings \(sampler"):
        restore(tiny_latent, image_folder, tmp_path, count=6, sampler=DPS(0.1, 3))


def test_the_refusal_names_the_options_that_replace_or_move_the_run(tiny_latent, image_folder, tmp_path, monkeypatch):
    (tmp_path / "run.json").write_text(json.dumps({"fingerprint": "0", "settings": {"sampler": "another"}}))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"key": "class0/img0"}) + "\n")
    sampled = []
    monkeypatch.setattr(DPS, "step", lambda *a, **k: sampled.append(1))
    with pytest.raises(FileExistsError) as refused:
        restore(tiny_latent, image_folder, tmp_path, count=2)
    message = str(refused.value)
    assert "--trainer.callbacks.init_args.overwrite=true" in message and "--trainer.default_root_dir=" in message
    assert "\n" not in message and not sampled


HOLD_LOCK = (  # another process holding a folder's lock as cse.runs takes it
    "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    "print('held', flush=True); time.sleep(600)"
)


def test_a_second_run_into_a_folder_in_use_refuses_at_once(tiny_latent, image_folder, tmp_path, monkeypatch):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        sampled = []
        with monkeypatch.context() as patch, pytest.raises(FileExistsError) as refused:
            patch.setattr(DPS, "step", lambda *a, **k: sampled.append(1))
            restore(tiny_latent, image_folder, tmp_path, count=2)
        assert re.search(r"in use by another run.*wait for it.*or choose another folder", str(refused.value))
        assert not sampled and not (tmp_path / "run.json").exists()
    finally:
        holder.kill()  # kill -9: the lock goes with the process
        holder.wait()
    restore(tiny_latent, image_folder, tmp_path, count=2)
    assert summary(tmp_path)["count"] == 2


def test_a_rerun_after_the_weights_were_retrained_in_place_refuses_to_mix(tiny_latent, image_folder, tmp_path):
    prior = tmp_path / "prior"
    shutil.copytree(tiny_latent, prior)
    restore(str(prior), image_folder, tmp_path / "out", count=2)
    unet = UNet2DConditionModel.from_pretrained(prior / "unet")
    with torch.no_grad():
        next(unet.parameters()).add_(0.01)  # "retrained": same folder, same names, other weights
    unet.save_pretrained(prior / "unet")
    with pytest.raises(FileExistsError, match="other settings.*pretrained_digest"):
        restore(str(prior), image_folder, tmp_path / "out", count=2)


def test_operators_and_schedules_are_recorded_by_content():
    schedule = DiscreteSchedule.scaled_linear()
    assert repr(DPS(1.0, 2, schedule=schedule)) == repr(DPS(1.0, 2, schedule=DiscreteSchedule.scaled_linear()))
    assert repr(DPS(1.0, 2, schedule=schedule)) != repr(DPS(1.0, 2, schedule=DiscreteSchedule.scaled_linear(0.001)))
    a = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[4, 4] += 1e-3
    assert repr(MatrixOperator(a)) == repr(MatrixOperator(a.clone())) != repr(MatrixOperator(b))
    assert repr(Convolution(torch.ones(3, 3))) != repr(Convolution(2 * torch.ones(3, 3)))


def test_a_rerun_through_the_cli_with_other_settings_keeps_the_old_config(tiny_latent, image_folder, tmp_path):
    args = ["predict", *configs("sr8", "samplers/dps.yaml"), *sd2_overrides("sr8", tiny_latent, image_folder, tmp_path)]
    main(args)
    config = (tmp_path / "config.yaml").read_text()
    with pytest.raises(FileExistsError, match="other settings"):
        main([*args, "--model.init_args.sampler.init_args.zeta=0.1"])
    assert (tmp_path / "config.yaml").read_text() == config


def test_an_unwritable_output_folder_fails_before_sampling(tiny_latent, image_folder, tmp_path, monkeypatch):
    if os.geteuid() == 0:  # root writes anywhere: make the folder a file instead
        blocked = tmp_path / "file"
        blocked.write_text("")
        out = blocked / "results"
    else:
        out = tmp_path / "locked"
        out.mkdir(mode=0o500)
    sampled = []
    monkeypatch.setattr(DPS, "step", lambda *a, **k: sampled.append(1))
    with pytest.raises(PermissionError, match="cannot write results into"):
        restore(tiny_latent, image_folder, out)
    assert not sampled


def test_only_unreadable_inputs_fail_the_run_and_are_listed(tiny_latent, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (bad / "b.jpg").write_bytes(b"not an image")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(bad / "c.png")
    with pytest.warns(UserWarning, match="skipping"), pytest.raises(InputError, match="nothing was restored"):
        restore(tiny_latent, str(bad), tmp_path / "out")
    skipped = summary(tmp_path / "out")["skipped"]
    assert set(skipped) == {"a", "b", "c"} and "too small: 4x4 < 16" in skipped["c"]


def test_skipped_inputs_are_listed_beside_the_restored_ones(tiny_latent, image_folder, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for path in Path(image_folder).rglob("*.png"):
        (folder / path.name).write_bytes(path.read_bytes())
    Image.fromarray(np.zeros((2, 3000, 3), np.uint8)).save(folder / "strip.png")
    with pytest.warns(UserWarning, match="strip"):
        restore(tiny_latent, str(folder), tmp_path / "out", count=None)
    result = summary(tmp_path / "out")
    assert result["count"] == 6 and list(result["skipped"]) == ["strip"]


def test_huge_step_sizes_warn_and_negative_ones_are_rejected(digits_data, tmp_path):
    with pytest.raises(ValueError, match="zeta must be a finite number >= 0"):
        DPS(-1.0, 2)
    with pytest.warns(UserWarning, match="residual .* over 10x the measurement's norm"):
        restore("checkpoints/digits/prior", str(digits_data / "test"), tmp_path, count=2, sampler=DPS(1e12, 2))
    flag = json.loads((tmp_path / "summary.json").read_text())["residual_flag"]
    assert flag["count"] == 2 and min(flag["worst"].values()) > 10 and "step size" in flag["note"]


def test_a_strict_run_fails_when_restorations_do_not_explain_their_measurements(digits_data, tmp_path):
    writer = RestorationWriter(str(tmp_path), lpips=False, fid=False, strict=True)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="strict=true; results and summary.json"):
        restore(
            "checkpoints/digits/prior",
            str(digits_data / "test"),
            tmp_path,
            count=2,
            sampler=DPS(1e12, 2),
            writer=writer,
        )
    assert "residual_flag" in json.loads((tmp_path / "summary.json").read_text())
    restore("checkpoints/digits/prior", str(digits_data / "test"), tmp_path / "sane", count=2, writer=None)
    assert "residual_flag" not in json.loads((tmp_path / "sane" / "summary.json").read_text())


def test_written_files_are_readable_by_others_and_the_grid_is_labelled(tiny_latent, image_folder, tmp_path):
    umask = os.umask(0o022)
    try:
        restore(tiny_latent, image_folder, tmp_path, count=2)
    finally:
        os.umask(umask)
    for path in [tmp_path / "summary.json", tmp_path / "grid.png", *(tmp_path / "recon").rglob("*.png")]:
        assert path.stat().st_mode & 0o777 == 0o644, path
    grid = Image.open(tmp_path / "grid.png")
    assert grid.height >= 3 * 96 and grid.width >= 2 * 96 + 100  # three labelled rows a person can see


def test_the_base_model_ablation_swaps_only_the_prior(capsys):
    """configs/sd15.yaml (the paper's Table 9) added to a cell replaces SD2-base by SD 1.5."""
    with pytest.raises(SystemExit):
        main(["predict", *configs("sr8", "samplers/dps.yaml", "sd15.yaml"), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (
        printed["model"]["init_args"]["prior"]["init_args"]["id_or_path"]
        == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    )
    assert printed["model"]["init_args"]["sampler"]["init_args"]["zeta"] == 4.8


def test_a_run_says_what_it_will_cost_before_it_starts(digits_data, tmp_path, caplog, monkeypatch):
    import logging

    from cse.restoration import duration

    monkeypatch.setattr(logging.getLogger("lightning.pytorch.utilities.rank_zero"), "propagate", True)
    with caplog.at_level(logging.INFO):
        restore("checkpoints/digits/prior", str(digits_data / "test"), tmp_path, count=2, sampler=DPS(1.0, 3))
    said = [r.getMessage() for r in caplog.records if "one step on one image took" in r.getMessage()]
    assert len(said) == 1 and "DPS: 3 steps x 1 sample(s)" in said[0] and "for the 2 images" in said[0]
    assert [duration(s) for s in (0.5, 90, 7200)] == ["0.5 s", "1.5 min", "2 h"]
