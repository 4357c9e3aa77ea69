"""python -m cse fit: the CSE recipe, exact resuming, export, W&B, on the tiny stack and the digits."""

import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, UNet2DConditionModel
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import save_file

from cse.cli import main
from cse.data import ImageDataModule
from cse.features import DigitsClassifier, DigitsFeatures
from cse.metrics import feature_distances
from cse.operators import GaussianNoise, Measurement, SaturatedBlur, SuperResolution
from cse.priors import DiffusersPrior
from cse.samplers import Ancestral
from cse.training import AutoencoderModule, ClassifierModule, CSEModule, PriorModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["python -m cse"])


# -- the configs, through the CLI ----------------------------------------------------------------


@pytest.mark.parametrize("task", ["sr8", "gblur", "inpaint"])
def test_the_sd2_cse_recipe_runs_on_each_task(task, tiny_latent, image_folder, tmp_path):
    main(
        [
            "fit",
            f"--config={CONFIGS / task / 'task.yaml'}",
            f"--config={CONFIGS / 'train_cse.yaml'}",
            f"--model.init_args.prior.init_args.id_or_path={tiny_latent}",
            *(["--model.init_args.measurement.init_args.operator.init_args.size=8"] if task == "inpaint" else []),
            *(
                ["--trainer.precision=bf16-mixed", "--model.init_args.prior.init_args.gradient_checkpointing=true"]
                if task == "sr8"
                else []
            ),
            "--model.init_args.validation_steps=2",
            f"--data.init_args.train={image_folder}",
            f"--data.init_args.val={image_folder}",
            "--data.init_args.image_size=16",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert (tmp_path / "controlnet" / "diffusion_pytorch_model.safetensors").exists()  # in the run's folder
    recorded = DiffusersPrior.from_pretrained(tiny_latent, controlnet=tmp_path / "controlnet").cse_record
    assert recorded["operator"]["class"] == {"sr8": "SuperResolution", "gblur": "GaussianBlur"}.get(
        task, "BoxInpainting"
    )
    assert recorded["noise"] == {"class": "GaussianNoise", "std": 0.0}


@pytest.mark.parametrize(
    "config", ["train_prior", "train_classifier", "sr4/train_cse", "inpaint/reference", "gblur/train_cse"]
)
def test_the_digits_training_configs_run(config, digits_data, tmp_path):
    if "/" in config:
        task, recipe = config.split("/")
        files = [CONFIGS / "digits" / task / "task.yaml", CONFIGS / "digits" / "train_cse.yaml"]
        files += [CONFIGS / "digits" / "reference.yaml"] if recipe == "reference" else []
    else:
        files = [CONFIGS / "digits" / f"{config}.yaml"]
    main(
        [
            "fit",
            *(f"--config={f}" for f in files),
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.init_args.train={digits_data / 'train'}",
            *([f"--data.init_args.val={digits_data / 'test'}"] if config == "train_classifier" else []),
        ]
    )
    exported = {"train_prior": "prior/unet", "train_classifier": "classifier.safetensors"}.get(config, "controlnet")
    assert (tmp_path / exported).exists()


def test_the_latent_digits_training_configs_run(digits32_data, tmp_path):
    """The autoencoder, then the latent prior on it: the two recipes of the latent tier."""
    latent = CONFIGS / "digits_latent"
    data = [f"--data.init_args.train={digits32_data / 'train'}"]
    data_val = f"--data.init_args.val={digits32_data / 'test'}"
    main(["fit", f"--config={latent / 'train_vae.yaml'}", "--trainer.fast_dev_run=true", *data, data_val,
          f"--trainer.default_root_dir={tmp_path / 'vae'}"])  # fmt: skip
    vae = tmp_path / "vae" / "vae"
    assert (vae / "config.json").is_file()
    main(["fit", f"--config={latent / 'train_prior.yaml'}", "--trainer.fast_dev_run=true", *data,
          f"--model.init_args.vae={vae}", f"--trainer.default_root_dir={tmp_path / 'prior'}"])  # fmt: skip
    prior = DiffusersPrior.from_pretrained(tmp_path / "prior" / "prior")
    assert prior.vae is not None and tuple(prior.state_shape((1, 3, 32, 32))) == (4, 8, 8)


def test_a_config_gives_the_optimizer_and_its_schedule(digits_data, tmp_path):
    """reference_lr.yaml changes the rate alone of the recipe's AdamW; a schedule steps per optimizer step."""
    files = [
        CONFIGS / "digits" / "sr4" / "task.yaml",
        CONFIGS / "digits" / "train_cse.yaml",
        CONFIGS / "reference_lr.yaml",
    ]
    cli = main(
        [
            "fit",
            *(f"--config={f}" for f in files),
            "--model.init_args.lr_scheduler=torch.optim.lr_scheduler.LinearLR",
            "--model.init_args.lr_scheduler.init_args.start_factor=0.5",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            f"--data.init_args.train={digits_data / 'train'}",
        ]
    )
    (optimizer,) = cli.trainer.optimizers
    assert type(optimizer) is torch.optim.AdamW
    assert optimizer.defaults | {"lr": 1e-5, "weight_decay": 1e-2, "betas": (0.9, 0.999)} == optimizer.defaults
    (schedule,) = cli.trainer.lr_scheduler_configs
    assert isinstance(schedule.scheduler, torch.optim.lr_scheduler.LinearLR) and schedule.interval == "step"


def test_the_default_optimizers_are_those_the_shipped_models_were_trained_with(tiny_latent, image_folder):
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 16), layers_per_block=1, cross_attention_dim=8, norm_num_groups=4,
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
    )  # fmt: skip
    modules = {
        "cse": (make(tiny_latent, image_folder)[0], torch.optim.AdamW, 5e-6, 1e-2),
        "prior": (PriorModule(unet), torch.optim.AdamW, 3e-4, 1e-2),
        "vae": (AutoencoderModule(block_out_channels=(8,), norm_num_groups=4), torch.optim.AdamW, 1e-3, 1e-2),
        "classifier": (ClassifierModule(), torch.optim.Adam, 1e-3, 0.0),
    }
    for name, (module, kind, lr, weight_decay) in modules.items():
        optimizer = module.configure_optimizers()
        assert type(optimizer) is kind, name
        expected = {"lr": lr, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": weight_decay}
        assert {k: optimizer.defaults[k] for k in expected} == expected, name
    cse = modules["cse"][0]
    assert optimizer_parameters(cse) == {id(p) for p in cse.controlnet.parameters()}  # the ControlNet alone


def optimizer_parameters(module) -> set[int]:
    return {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}


# -- the recipe ----------------------------------------------------------------------------------


def make(tiny_latent, image_folder, **kwargs):
    prior = DiffusersPrior.from_pretrained(tiny_latent)
    module = CSEModule(prior, Measurement(SuperResolution(2)), validation_steps=2, **kwargs)
    data = ImageDataModule(train=image_folder, image_size=16, batch_size=2, num_workers=0, train_count=4, min_size=16)
    return module, data


def adamw(lr: float):
    """CSEModule's optimizer (AdamW, betas (0.9, 0.999), weight decay 1e-2) at another rate."""
    return partial(torch.optim.AdamW, lr=lr, betas=(0.9, 0.999), weight_decay=1e-2)


def trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kwargs,
    )


def batch_of(sample_ids):
    images = torch.rand(len(sample_ids), 3, 16, 16) * 2 - 1
    return {"key": [s.split("#")[0] for s in sample_ids], "sample_id": sample_ids, "image": images}


def test_the_loss_falls(tiny_latent, image_folder, tmp_path):
    module, data = make(tiny_latent, image_folder, optimizer=adamw(1e-3), export_dir=str(tmp_path / "cse"))
    batch = next(iter(data.train_dataloader()))

    @torch.no_grad()
    def probe() -> float:  # the same 8 draws of timesteps and noise before and after
        return sum(module.loss(batch, f"probe{i}").item() for i in range(8)) / 8

    before = probe()
    trainer(tmp_path, max_steps=40).fit(module, data)
    after = probe()
    assert after < 0.85 * before, (before, after)


def test_repetitions_of_an_image_are_different_samples(tiny_latent, image_folder):
    module, data = make(tiny_latent, image_folder)
    batch = batch_of(["a", "a#1"])
    batch["image"][1] = batch["image"][0]
    per_sample = []
    original = module.prior.loss
    module.prior.loss = lambda *args: per_sample.append(original(*args)) or per_sample[-1]
    module.loss(batch, "train:0")
    assert per_sample[0][0] != per_sample[0][1]  # same image, other timestep, noise and latent draw


def test_latents_are_drawn_from_the_vae_posterior_unless_configured_otherwise(tiny_latent, image_folder):
    for sample, expect_generators in [(True, True), (False, False)]:
        module, _ = make(tiny_latent, image_folder, sample_latents=sample)
        seen = []
        encode = module.prior.encode

        def spy(images, noise=None, seen=seen, encode=encode):
            seen.append(noise)
            return encode(images, noise)

        module.prior.encode = spy
        module.loss(batch_of(["a", "b"]), "train:0")
        assert (seen[0] is not None) == expect_generators


def test_training_measures_with_the_seeds_of_the_measurement(tiny_latent):
    """One seed convention (Measurement.measure_keys): each sample's noise and random kernel come
    from its sample id, the salt and the seed, whatever else is in the batch."""
    measurement = Measurement(SaturatedBlur(), GaussianNoise(0.1))
    module = CSEModule(DiffusersPrior.from_pretrained(tiny_latent), measurement, seed=3)
    batch = batch_of(["a", "b", "a#1"])
    y = module.measure(batch["image"], batch["sample_id"], "train:0")
    expected, _ = measurement.measure_keys(batch["image"], batch["sample_id"], "train:0:3")
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    torch.testing.assert_close(module.measure(batch["image"][1:2], ["b"], "train:0"), y[1:2], rtol=0, atol=0)
    assert not torch.equal(y[0], module.measure(batch["image"][:1], ["a"], "train:1")[0])  # each epoch anew


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def test_a_run_resumed_mid_epoch_ends_with_the_same_weights(tiny_latent, image_folder, tmp_path):
    """6 images, batch 1 x accumulation 2: 3 optimizer steps an epoch. Killed after step 5, resumed
    from the step-4 checkpoint (mid-epoch), it must end bit for bit where an uninterrupted run does."""

    def run(folder, ckpt_path=None, stop=None):
        torch.manual_seed(123)  # the global random state must not matter
        module, _ = make(
            tiny_latent,
            image_folder,
            optimizer=adamw(1e-4),
            export_dir=str(tmp_path / folder / "cse"),
            overwrite_export=True,
        )
        data = ImageDataModule(train=image_folder, image_size=16, batch_size=1, num_workers=0, min_size=16)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / folder, save_last=True, every_n_train_steps=2, save_top_k=-1)
        callbacks = [checkpoint] + ([StopAt(stop)] if stop else [])
        fit = trainer(tmp_path, max_steps=8, callbacks=callbacks, accumulate_grad_batches=2)
        fit.fit(module, data, ckpt_path=ckpt_path)
        return module

    straight = run("straight")
    with pytest.raises(RuntimeError, match="killed"):
        run("interrupted", stop=5)
    torch.manual_seed(999)
    resumed = run("interrupted", ckpt_path=tmp_path / "interrupted" / "epoch=1-step=4.ckpt")
    state = torch.load(tmp_path / "interrupted" / "last.ckpt", weights_only=False)
    assert state["state_dict"] and all(k.startswith("prior.controlnet.") for k in state["state_dict"])
    for (name, a), (_, b) in zip(
        straight.controlnet.state_dict().items(), resumed.controlnet.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    initial = ControlNetModel.from_unet(straight.prior.unet).state_dict()
    assert not torch.equal(
        initial["controlnet_mid_block.weight"], straight.controlnet.state_dict()["controlnet_mid_block.weight"]
    )


# -- export ----------------------------------------------------------------------------------------


def test_the_exported_controlnet_reloads_and_runs_in_diffusers_pipeline(tiny_latent, image_folder, tmp_path):
    module, data = make(tiny_latent, image_folder, optimizer=adamw(1e-3), export_dir=str(tmp_path / "cse"))
    trainer(tmp_path, max_steps=3).fit(module, data)
    reloaded = ControlNetModel.from_pretrained(tmp_path / "cse")
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), module.prior.prompt_embeds.expand(2, -1, -1)
    control = torch.rand(2, 3, 16, 16) * 2 - 1  # the CSE's control image lives on [-1, 1], as in the paper's code
    module.controlnet.eval()
    with torch.no_grad():
        ours = module.controlnet(x, t, context, controlnet_cond=control, return_dict=False)
        theirs = reloaded(x, t, context, controlnet_cond=control, return_dict=False)
    for a, b in zip([*ours[0], ours[1]], [*theirs[0], theirs[1]], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # diffusers' pipeline hands a tensor to the ControlNet without rescaling it (do_normalize=False),
    # so the [-1, 1] control image is passed as it is
    pipeline = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_latent, controlnet=reloaded, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    seen = []
    original = reloaded.forward
    reloaded.forward = lambda *a, **k: seen.append(k["controlnet_cond"]) or original(*a, **k)
    image = pipeline("", image=control[:1], num_inference_steps=2, output_type="pt", height=16, width=16).images
    assert image.shape == (1, 3, 16, 16)
    torch.testing.assert_close(seen[0][:1].float(), control[:1])


def test_a_non_empty_export_folder_stops_training_before_it_starts(tiny_latent, image_folder, tmp_path):
    (tmp_path / "cse").mkdir()
    (tmp_path / "cse" / "config.json").write_text("{}")
    module, data = make(tiny_latent, image_folder, export_dir=str(tmp_path / "cse"))
    with pytest.raises(FileExistsError, match="already holds a model.*overwrite_export"):
        trainer(tmp_path, max_steps=2).fit(module, data)
    assert (tmp_path / "cse" / "config.json").read_text() == "{}"


def test_training_logs_a_real_offline_wandb_run(tiny_latent, image_folder, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    module, data = make(tiny_latent, image_folder, export_dir=str(tmp_path / "cse"))
    data.hparams.val = image_folder
    logger = WandbLogger(project="cse-test", save_dir=str(tmp_path), offline=True)
    Trainer(default_root_dir=tmp_path, logger=logger, max_steps=2, limit_val_batches=1, enable_progress_bar=False).fit(
        module, data
    )
    run = Path(logger.experiment.dir).parent  # wandb's process-wide settings decide the folder
    logger.experiment.finish()
    assert run.name.startswith("offline-run-") and list(run.glob("*.wandb"))
    assert list(run.glob("files/media/images/val/source_control_sample*.png"))


def test_a_batch_of_only_unusable_samples_is_skipped(tiny_latent, image_folder):
    module, _ = make(tiny_latent, image_folder)
    empty = {"key": [], "sample_id": [], "image": torch.empty(0, 3, 0, 0), "skipped": [("x", "unreadable")]}
    logged = []
    module.log = lambda name, *args, **kwargs: logged.append(name)
    assert module.training_step(empty, 0) is None  # Lightning skips the optimizer step
    module.validation_step(empty, 0)  # measuring a 0x0 batch would raise
    for other in [ClassifierModule(), AutoencoderModule(block_out_channels=(8,), norm_num_groups=4)]:
        other.log = module.log
        assert other.training_step(empty, 0) is None
        other.validation_step(empty, 0)
    assert logged == []


# -- the digits prior and classifier --------------------------------------------------------------


def test_prior_training_exports_a_pixel_prior_that_samples_and_takes_a_cse(image_folder, tmp_path):
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, cross_attention_dim=12,
        norm_num_groups=8,
    )  # fmt: skip
    module = PriorModule(unet, export_dir=str(tmp_path / "prior"))
    assert module.prior.prompt_embeds.shape == (1, 1, 12)  # the prompt's width is the UNet's
    data = ImageDataModule(train=image_folder, image_size=16, batch_size=2, num_workers=0, augment=False, min_size=16)
    trainer = Trainer(
        max_steps=3, accumulate_grad_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, data)
    assert int(module.ema.n_averaged) == 3  # one EMA update per optimizer step, not per batch
    prior = DiffusersPrior.from_pretrained(tmp_path / "prior")
    assert prior.vae is None and prior.sample_shape == (3, 16, 16)
    torch.testing.assert_close(
        prior.unet.state_dict()["conv_in.weight"], module.ema.module.state_dict()["conv_in.weight"]
    )
    prior.attach_controlnet()
    x = Ancestral(3)(prior.conditioned(torch.zeros(2, 3, 16, 16)), None, None, seeds=[0, 1])
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()


def test_classifier_trains_on_labelled_digits_and_its_features_serve_fid(digits_data, tmp_path):
    module = ClassifierModule(export_dir=str(tmp_path / "classifier.safetensors"))
    data = ImageDataModule(
        train=str(digits_data / "train"), image_size=16, batch_size=32, num_workers=0, augment=False, label_key="label"
    )
    Trainer(max_steps=5, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(module, data)
    assert (tmp_path / "classifier.safetensors").stat().st_mode & 0o044 == 0o044  # readable by others
    features = DigitsFeatures(str(tmp_path / "classifier.safetensors"))
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    assert features(uint8).shape == (8, 128)
    torch.testing.assert_close(features(uint8).norm(dim=1), torch.full((8,), 128**0.5))
    assert feature_distances(x, x, features, kid_subset_size=4)["fid"] == pytest.approx(0, abs=1e-3)
    exported = (tmp_path / "classifier.safetensors").read_bytes()
    again = ClassifierModule(export_dir=str(tmp_path / "classifier.safetensors"))
    with pytest.raises(FileExistsError, match="already holds a model.*overwrite_export"):  # nothing is replaced
        Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(again, data)
    assert (tmp_path / "classifier.safetensors").read_bytes() == exported


def test_the_classifiers_shifts_are_seeded_by_sample_and_epoch():
    module = ClassifierModule()
    batch = {"image": torch.rand(6, 3, 16, 16) * 2 - 1, "label": torch.arange(6), "sample_id": list("abcdef")}
    batch["key"] = batch["sample_id"]
    module.log = lambda *args, **kwargs: None
    first = module.step(batch, "train")
    torch.rand(10)  # the global random stream moves on; the shifts do not depend on it
    assert module.step(batch, "train") == first
    assert module.step(batch, "val") != first  # and shifting does change the loss


def test_missing_classifier_weights_are_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="configs/digits/train_classifier.yaml"):
        DigitsFeatures(str(tmp_path / "none.safetensors"))
    save_file(DigitsClassifier().state_dict(), tmp_path / "ok.safetensors")
    assert DigitsFeatures(str(tmp_path / "ok.safetensors")).num_features == 128


def one_step_cse_fit(root: Path, digits_data: Path) -> list[str]:
    """``python -m cse fit`` of the digits x4 CSE recipe for one step into ``root``."""
    files = [CONFIGS / "digits" / "sr4" / "task.yaml", CONFIGS / "digits" / "train_cse.yaml"]
    return [
        "fit",
        *(f"--config={f}" for f in files),
        "--trainer.max_steps=1",
        "--trainer.limit_val_batches=0",
        f"--trainer.default_root_dir={root}",
        f"--data.init_args.train={digits_data / 'train'}",
    ]


def test_a_run_folder_is_never_restarted_over_nor_resumed_with_other_settings(digits_data, tmp_path):
    args = one_step_cse_fit(tmp_path, digits_data)
    main(args)
    assert (tmp_path / "config.yaml").is_file()
    shutil.rmtree(tmp_path / "controlnet")  # as if that run had been interrupted before its export
    last = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(FileExistsError, match="holds checkpoints of an earlier run"):
        main(args)
    with pytest.raises(FileExistsError, match=r"other settings \(data.init_args.train_count: 100 -> 25\)"):
        main([*args, "--ckpt_path=last", "--data.init_args.train_count=25"])
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == last
    main([*args, "--ckpt_path=last", "--trainer.max_steps=2"])  # the same settings, trained further
    exported = (tmp_path / "controlnet" / "diffusion_pytorch_model.safetensors").read_bytes()
    main([*args, "--ckpt_path=last", "--trainer.max_steps=3"])  # a finished run extended: its export replaced
    assert (tmp_path / "controlnet" / "diffusion_pytorch_model.safetensors").read_bytes() != exported
    main([*args, "--ckpt_path=last", "--trainer.max_steps=4", "--model.init_args.overwrite_export=true"])
