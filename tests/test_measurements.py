"""Measurements as given (cse.measurements, cse.operators.measured, cse.restorer): each operator's
measurement path, the any-size padding, bad inputs skipped with their reason, reruns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cse.cli import main
from cse.data import index_source
from cse.errors import InputError
from cse.images import decode_image, read_png, save_png, to_tensor
from cse.measurements import estimate_noise
from cse.operators import BoxInpainting, Convolution, GaussianBlur, Measurement, SuperResolution
from cse.operators.measured import Cropped, MaskInpainting, centred_window, padded_size, read_kernel, with_parameters
from cse.priors import DiffusersPrior
from cse.restoration import RestorationModule
from cse.restorer import Restorer
from cse.samplers import DPS

ROOT = Path(__file__).resolve().parents[1]
PRIOR = ROOT / "checkpoints/digits/prior"


def inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


# -- operators ------------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", [SuperResolution(2), GaussianBlur(5, 1.0), BoxInpainting((2, 4))])
def test_a_cropped_operator_is_adjoint_and_sees_only_its_window(operator):
    window = centred_window((8, 8), (12, 10))
    cropped = Cropped(operator, window, (12, 10))
    x, y = torch.randn(2, 3, 12, 10), torch.randn_like(operator(torch.zeros(2, 3, 8, 8)))
    assert inner(cropped(x), y) == pytest.approx(inner(x, cropped.adjoint(y)), rel=1e-5)
    changed = x.clone()
    changed[..., 0, :] += 5  # the padding: not measured
    assert torch.equal(cropped(changed), cropped(x))
    whole = Cropped(operator, (0, 0, 8, 8), (8, 8))
    z = torch.randn(2, 3, 8, 8)
    assert torch.equal(whole(z), operator(z)) and torch.equal(whole.lift(operator(z)), operator.lift(operator(z)))


def test_per_image_kernels_and_masks_act_as_each_images_own_operator():
    kernels = [GaussianBlur(5, 0.8).kernel, GaussianBlur(3, 0.5).kernel]
    batched = with_parameters(GaussianBlur(5, 1.0), [None, None], kernels)
    x = torch.randn(2, 3, 9, 7)
    for i, kernel in enumerate(kernels):
        torch.testing.assert_close(batched(x)[i], Convolution(kernel)(x[i : i + 1])[0])
    y = torch.randn_like(x)
    assert inner(batched(x), y) == pytest.approx(inner(x, batched.adjoint(y)), rel=1e-5)
    mask = torch.ones(1, 9, 7)
    mask[:, 2:5] = 0
    masked = with_parameters(BoxInpainting((3, 3)), [mask, None], [None, None])
    assert isinstance(masked, MaskInpainting)
    assert torch.equal(masked(x)[0], x[0] * mask) and torch.equal(masked(x)[1], BoxInpainting((3, 3))(x)[1])


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.ones((3, 3, 3)), "2-D"),
        (np.ones((4, 5)), "odd sides"),
        (np.full((3, 3), np.nan), "NaN"),
        (-np.ones((3, 3)), "non-negative"),
    ],
)
def test_a_kernel_file_that_is_not_a_kernel_says_why(tmp_path, array, reason):
    np.save(tmp_path / "k.npy", array)
    with pytest.raises(InputError, match=reason):
        read_kernel((tmp_path / "k.npy").read_bytes(), "k.npy")
    with pytest.raises(InputError, match="not readable"):
        read_kernel(b"hello", "k.npy")


def test_padding_reaches_the_networks_multiple():
    assert padded_size((20, 28), 4) == (20, 28) and padded_size((7, 5), 4) == (8, 8)
    assert centred_window((7, 5), (8, 8)) == (0, 1, 7, 5)


def test_auto_noise_refuses_tiny_measurements_and_estimates_the_others(digits_data):
    images = [to_tensor(decode_image(r.read())) for r in index_source(str(digits_data / "test"))[:20]]
    blurred = GaussianBlur(13, 1.5)(torch.stack(images))
    noisy = blurred + 0.1 * torch.randn(blurred.shape, generator=torch.Generator().manual_seed(0))
    estimates = [estimate_noise(y) for y in noisy]
    assert abs(float(np.mean(estimates)) - 0.1) < 0.02
    with pytest.raises(InputError, match="too small to estimate"):
        estimate_noise(torch.zeros(3, 4, 4))


# -- the restoration ------------------------------------------------------------------------------


def digits(data: Path, count: int) -> tuple[list[str], torch.Tensor]:
    refs = index_source(str(data / "test"))[:count]
    return [r.key for r in refs], torch.stack([to_tensor(decode_image(r.read())) for r in refs])


@pytest.fixture(scope="module")
def sr_module() -> RestorationModule:
    return RestorationModule(DiffusersPrior.from_pretrained(str(PRIOR)), Measurement(SuperResolution(4)), DPS(8.0, 3))


def given(module, ys, keys, masks=None, kernels=None, references=None):
    n = len(ys)
    group = {"key": keys, "measurement": list(ys), "mask": masks or [None] * n, "kernel": kernels or [None] * n}
    return module.restore_group({**group, "reference": references or [None] * n, "noise_std": [None] * n})


def test_measurements_given_restore_exactly_as_the_simulated_path(sr_module, digits_data):
    """Where no padding is needed, a measurement given as it was simulated is restored to the same image."""
    keys, images = digits(digits_data, 3)
    simulated = sr_module.restore_batch(keys, images)
    measured = given(sr_module, simulated.measurement, keys, references=list(images))
    assert torch.equal(torch.stack(list(measured.recon)), simulated.recon)
    assert [m["psnr"] for m in measured.metrics] == [m["psnr"] for m in simulated.metrics]


def test_off_size_measurements_restore_at_their_size_with_a_residual_like_square_ones(sr_module, digits_data):
    from cse.operators.resize import imresize

    keys, images = digits(digits_data, 2)
    square = given(sr_module, SuperResolution(4)(images), keys)
    tall = imresize(images, 28, 20).clamp(-1, 1)  # 7x5 measurements: padded to 28x20 -> 28x20 (factor 2 divides)
    odd = given(sr_module, SuperResolution(4)(tall), keys)
    assert odd.recon[0].shape == (3, 28, 20)
    prior = DiffusersPrior.from_pretrained(str(PRIOR))
    blur = RestorationModule(prior, Measurement(GaussianBlur(13, 1.5)), DPS(2.0, 3))
    wide = GaussianBlur(13, 1.5)(imresize(images, 23, 17).clamp(-1, 1))  # padded to 24x18 and cropped back
    blurred = given(blur, wide, keys)
    assert blurred.recon[0].shape == (3, 23, 17)
    for result in (odd, blurred):
        ratio = np.mean([m["residual_relative"] for m in result.metrics]) / np.mean(
            [m["residual_relative"] for m in square.metrics]
        )
        assert 0.1 < ratio < 10, ratio


def test_the_python_restorer_takes_pil_images_and_tensors(digits_data):
    restorer = Restorer(
        RestorationModule(DiffusersPrior.from_pretrained(str(PRIOR)), Measurement(SuperResolution(4)), DPS(8.0, 2)),
        device="cpu",
    )
    keys, images = digits(digits_data, 1)
    y = SuperResolution(4)(images)[0]
    restored = restorer(y)
    assert restored.shape == (3, 16, 16)
    picture = Image.fromarray(((y.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8))
    assert restorer(picture).size == (16, 16)
    with pytest.raises(InputError, match="odd sides"):
        restorer(y, kernel=np.ones((2, 2)))


# -- the command line -----------------------------------------------------------------------------


def run(task: str, folder: Path, out: Path, *more: str) -> dict:
    main(
        [
            "predict",
            f"--config={ROOT / 'configs/digits' / task / 'task.yaml'}",
            f"--config={ROOT / 'configs/samplers/dps.yaml'}",
            f"--config={ROOT / 'configs/measured.yaml'}",
            f"--data.init_args.predict={folder}",
            "--steps.num_steps=2",
            f"--trainer.default_root_dir={out}",
            "--trainer.enable_progress_bar=false",
            *more,
        ]
    )
    return json.loads((out / "summary.json").read_text())


def test_the_shipped_examples_restore_from_the_command_line(tmp_path):
    for task in ("sr4", "gblur", "inpaint"):
        out = tmp_path / task
        reference = f"--data.init_args.reference={ROOT / 'examples/digits/clean'}"
        summary = run(task, ROOT / "examples/digits" / task, out, reference)
        names = sorted(p.name for p in (ROOT / "examples/digits" / task).glob("*.png") if ".mask" not in p.name)
        assert summary["count"] == len(names) and not summary["skipped"], summary
        assert "psnr" in summary and ("quality_note" in summary) == (task != "inpaint")  # off-size: no reference
        assert sorted(p.name for p in (out / "recon").glob("*.png")) == names
    assert Image.open(tmp_path / "sr4/recon/tall_7x5.png").size == (20, 28)
    assert Image.open(tmp_path / "gblur/recon/wide_24x16.png").size == (16, 24)


def test_bad_measurements_are_skipped_with_their_reason_and_reruns_resume(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "b", "c"):
        save_png(read_png(ROOT / "examples/digits/inpaint/digit0010.png"), folder / f"{name}.png")
    save_png(np.zeros((8, 8), np.uint8), folder / "b.mask.png")  # another size than its measurement
    (folder / "c.png").write_text("not an image")
    summary = run("inpaint", folder, tmp_path / "out")
    assert summary["count"] == 1 and set(summary["skipped"]) == {"b", "c"}
    assert "8x8" in summary["skipped"]["b"] and "not an image" in summary["skipped"]["c"]
    save_png(read_png(ROOT / "examples/digits/inpaint/digit0021.png"), folder / "d.png")
    summary = run("inpaint", folder, tmp_path / "out")  # resumes: restores d only, keeps a
    rows = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert summary["count"] == 2 and [r["key"] for r in rows] == ["a", "d"]


def test_too_large_and_unknown_operators_are_refused_in_one_line(tmp_path, capsys):
    summary = run("sr4", ROOT / "examples/digits/sr4", tmp_path / "big", "--model.init_args.max_pixels=300")
    assert summary["count"] == 3 and "max_pixels=300" in summary["skipped"]["tall_7x5"]  # 28x20 = 560 px
    with pytest.raises(InputError, match="blind restoration is not in scope"):
        run("nlblur", ROOT / "examples/digits/gblur", tmp_path / "nl")


def test_a_latent_prior_restores_an_off_size_measurement_padded_to_its_vae_and_unet(tiny_latent):
    prior = DiffusersPrior.from_pretrained(tiny_latent)
    module = RestorationModule(prior, Measurement(SuperResolution(2)), DPS(1.0, 2))
    y = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)) * 2 - 1
    restored = given(module, y, ["a", "b"])
    assert prior.size_multiple > 2 and restored.recon[0].shape == (3, 10, 14)
    assert all(np.isfinite(m["residual"]) for m in restored.metrics)


def test_shards_carry_each_measurements_mask_and_kernel_as_members(tmp_path):
    import io
    import tarfile

    from cse.measurements import MeasurementDataModule

    def member(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    def png(array):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        return buffer.getvalue()

    kernel = io.BytesIO()
    np.save(kernel, np.ones((3, 3)))
    hole = np.zeros((6, 6), np.uint8)
    hole[:2] = 255
    with tarfile.open(tmp_path / "shard-000000.tar", "w") as tar:
        member(tar, "a.png", png(np.full((6, 6, 3), 128, np.uint8)))
        member(tar, "a.mask.png", png(hole))
        member(tar, "b.png", png(np.full((6, 6, 3), 64, np.uint8)))
        member(tar, "b.kernel.npy", kernel.getvalue())
    batch = next(iter(MeasurementDataModule(str(tmp_path), batch_size=2).predict_dataloader()))
    assert batch["key"] == ["a", "b"] and not batch["skipped"]
    assert batch["mask"][0][0, :2].sum() == 0 and batch["mask"][0][0, 2:].min() == 1 and batch["mask"][1] is None
    torch.testing.assert_close(batch["kernel"][1], torch.full((3, 3), 1 / 9))
    assert batch["kernel"][0] is None


def test_a_measurement_stored_as_an_image_is_fitted_as_clipped():
    """Bicubic down-sampling overshoots [-1, 1] and an image file clips it: where the stored value is
    an extreme and A x lies beyond it, the clipped operator leaves x alone."""
    from cse.operators.measured import Clipped
    from cse.operators.svd import svd_of

    operator = Clipped(SuperResolution(2))
    x = torch.full((1, 1, 4, 4), -1.5, requires_grad=True)
    y = torch.full((1, 1, 2, 2), -1.0)
    (grad,) = torch.autograd.grad((operator(x) - y).square().sum(), x)
    assert torch.equal(grad, torch.zeros_like(grad))
    z = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(svd_of(operator, z).forward(z), SuperResolution(2)(z), atol=1e-5, rtol=1e-5)


def test_a_run_killed_before_its_summary_gets_one_from_the_rerun(tmp_path):
    out = tmp_path / "out"
    run("inpaint", ROOT / "examples/digits/inpaint", out)
    (out / "summary.json").unlink()  # as if killed after the last metrics line
    summary = run("inpaint", ROOT / "examples/digits/inpaint", out)  # nothing left to restore
    assert summary["count"] == 3


def test_an_attached_cse_is_frozen_so_sampling_keeps_no_graph_across_steps():
    """A CSE's parameters requiring gradients made every state of a run carry an autograd graph (DDRM
    + CSE was counted as back-propagating, and a batch of 200 ran out of memory)."""
    from cse.priors.counting import CountingPrior
    from cse.samplers.ddrm import DDRM

    prior = DiffusersPrior.from_pretrained(str(PRIOR), controlnet=str(ROOT / "checkpoints/digits/sr4_cse"))
    assert not any(p.requires_grad for p in prior.controlnet.parameters())
    y = SuperResolution(4)(torch.rand(2, 3, 16, 16) * 2 - 1)
    counted = CountingPrior(prior.conditioned(SuperResolution(4).lift(y)))
    x = DDRM(num_steps=3)(counted, SuperResolution(4), y, seeds=[0, 1], shape=(3, 16, 16))
    assert counted.gradients == 0 and not x.requires_grad


def test_a_spectral_method_refuses_a_padded_measurement_in_one_line(digits_data):
    from cse.samplers.ddrm import DDRM

    module = RestorationModule(DiffusersPrior.from_pretrained(str(PRIOR)), Measurement(GaussianBlur(13, 1.5)), DDRM(2))
    y = torch.zeros(1, 3, 15, 16)
    with pytest.raises(InputError, match="multiples of 2"):
        given(module, y, ["odd"])
    mask = torch.ones(1, 16, 16)
    masked = with_parameters(BoxInpainting((4, 4)), [mask, None], [None, None])
    assert torch.equal(masked.mask[1, 0], BoxInpainting((4, 4)).mask(mask))
