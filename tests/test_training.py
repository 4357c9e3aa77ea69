"""CSE training through Lightning, on the tiny stack: CLI configs, learning, resume, export."""

from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from cse.cli import main
from cse.data import ImageDataModule
from cse.operators import SuperResolution
from cse.training import CSEModule

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*/cse.yaml"))
EXTRA_ARGS = {
    "inpaint": ["--model.init_args.operator.init_args.size=8"],
    "sr8": ["--trainer.precision=bf16-mixed", "--model.init_args.gradient_checkpointing=true"],
}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.parent.name)
def test_each_cse_config_runs_through_the_cli(config, tiny_latent, image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    main(
        [
            "fit",
            f"--config={config}",
            f"--model.init_args.pretrained={tiny_latent}",
            f"--model.init_args.export_dir={tmp_path / 'export'}",
            "--model.init_args.validation_steps=2",
            f"--data.init_args.train={image_folder}",
            f"--data.init_args.val={image_folder}",
            "--data.init_args.image_size=16",
            "--data.init_args.batch_size=2",
            "--data.init_args.num_workers=0",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *EXTRA_ARGS.get(config.parent.name, []),
        ]
    )
    assert (tmp_path / "export" / "diffusion_pytorch_model.safetensors").exists()


def make(tiny_latent, image_folder, **kwargs):
    module = CSEModule(SuperResolution(2), pretrained=tiny_latent, validation_steps=2, **kwargs)
    data = ImageDataModule(train=image_folder, image_size=16, batch_size=2, num_workers=0, train_count=4)
    return module, data


def trainer(tmp_path, **kwargs) -> Trainer:
    return Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **kwargs,
    )


def test_the_loss_falls(tiny_latent, image_folder, tmp_path):
    module, data = make(tiny_latent, image_folder, learning_rate=1e-3)
    batch = next(iter(data.train_dataloader()))

    @torch.no_grad()
    def probe() -> float:  # the same 8 draws of timesteps and noise before and after
        return sum(module.denoising_loss(batch["image"], batch["key"], f"probe{i}").item() for i in range(8)) / 8

    before = probe()
    trainer(tmp_path, max_steps=40).fit(module, data)
    after = probe()
    print(f"probe loss {before:.3f} -> {after:.3f}")
    assert after < 0.85 * before, (before, after)


def test_resuming_from_a_checkpoint_gives_the_same_weights(tiny_latent, image_folder, tmp_path):
    def run(epochs, ckpt_path=None, folder="run"):
        torch.manual_seed(123)  # the global RNG must not matter
        module, data = make(tiny_latent, image_folder, learning_rate=1e-4)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / folder, save_last=True)
        trainer(tmp_path, max_epochs=epochs, callbacks=[checkpoint], accumulate_grad_batches=2).fit(
            module, data, ckpt_path=ckpt_path
        )
        return module

    straight = run(2, folder="straight")
    run(1, folder="interrupted")
    torch.manual_seed(999)
    resumed = run(2, ckpt_path=tmp_path / "interrupted" / "last.ckpt", folder="interrupted")
    state = torch.load(tmp_path / "interrupted" / "last.ckpt", weights_only=False)["state_dict"]
    assert state and all(k.startswith("prior.controlnet.") for k in state)  # no frozen prior weights
    for (name, a), (_, b) in zip(
        straight.controlnet.state_dict().items(), resumed.controlnet.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    initial = ControlNetModel.from_unet(straight.prior.unet).state_dict()
    assert not torch.equal(
        initial["controlnet_mid_block.weight"], straight.controlnet.state_dict()["controlnet_mid_block.weight"]
    )


def test_the_exported_controlnet_reloads_with_diffusers(tiny_latent, image_folder, tmp_path):
    module, data = make(tiny_latent, image_folder, learning_rate=1e-3, export_dir=str(tmp_path / "cse"))
    trainer(tmp_path, max_steps=3).fit(module, data)
    reloaded = ControlNetModel.from_pretrained(tmp_path / "cse")
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), module.prior.prompt_embeds.expand(2, -1, -1)
    control = torch.rand(2, 3, 16, 16) * 2 - 1
    module.controlnet.eval()
    with torch.no_grad():
        ours = module.controlnet(x, t, context, controlnet_cond=control, return_dict=False)
        theirs = reloaded(x, t, context, controlnet_cond=control, return_dict=False)
    for a, b in zip([*ours[0], ours[1]], [*theirs[0], theirs[1]], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and it plugs into diffusers' own ControlNet pipeline next to the prior's components
    pipeline = StableDiffusionControlNetPipeline.from_pretrained(
        tiny_latent, controlnet=reloaded, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    image = pipeline(
        "", image=(control[:1] + 1) / 2, num_inference_steps=2, output_type="pt", height=16, width=16
    ).images
    assert image.shape == (1, 3, 16, 16)


def test_training_logs_a_real_offline_wandb_run(tiny_latent, image_folder, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    module, data = make(tiny_latent, image_folder)
    data.hparams.val = image_folder
    logger = WandbLogger(project="cse-test", save_dir=str(tmp_path), offline=True)
    Trainer(default_root_dir=tmp_path, logger=logger, max_steps=2, limit_val_batches=1, enable_progress_bar=False).fit(
        module, data
    )
    run = Path(logger.experiment.dir).parent  # wandb's process-wide settings decide the folder
    logger.experiment.finish()
    assert run.name.startswith("offline-run-") and list(run.glob("*.wandb"))
    assert list(run.glob("files/media/images/val/source_conditioning_restored*.png"))


def test_a_batch_of_only_unreadable_samples_is_skipped(tiny_latent, image_folder):
    module, _ = make(tiny_latent, image_folder)
    empty = {"key": [], "image": torch.empty(0, 3, 0, 0)}
    assert module.training_step(empty, 0) is None
    assert module.validation_step(empty, 0) is None
