"""A CSE records the measurement it was trained with, and is refused for another (tiny stack)."""

import json
import warnings

import pytest

from cse.analysis.modules import ScoreErrorModule
from cse.operators import GaussianBlur, GaussianNoise, Measurement, SuperResolution
from cse.priors.conditioned import RECORD_FILE, CSEMismatchError, read_cse_record, write_cse_record
from cse.priors.diffusers_prior import DiffusersPrior, build_controlnet, local_digest
from cse.restoration import RestorationModule
from cse.samplers import DPS

SR2 = Measurement(SuperResolution(2))


@pytest.fixture(scope="module")
def cse_folder(tiny_latent, tmp_path_factory):
    """A tiny CSE saved with a record: trained (as far as the record says) for noise-free x2 SR."""
    folder = tmp_path_factory.mktemp("cse")
    build_controlnet(DiffusersPrior.from_pretrained(tiny_latent)).save_pretrained(folder)
    write_cse_record(folder, SR2.describe())
    return folder


@pytest.fixture(scope="module")
def prior(tiny_latent, cse_folder) -> DiffusersPrior:
    return DiffusersPrior.from_pretrained(tiny_latent, controlnet=cse_folder)


def test_the_record_round_trips_through_the_folder(cse_folder, prior):
    assert read_cse_record(cse_folder) == {
        "operator": {"class": "SuperResolution", "factor": 2, "lift": "bicubic"},
        "noise": {"class": "GaussianNoise", "std": 0.0},
    }
    assert prior.cse_record == read_cse_record(cse_folder) and prior.cse_folder == str(cse_folder)


def test_the_measurement_a_cse_was_trained_with_is_accepted_silently(prior):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RestorationModule(prior, Measurement(SuperResolution(2)), DPS(1.0, 2))


@pytest.mark.parametrize(
    "measurement, reason",
    [
        (Measurement(GaussianBlur(5, 1.0)), "this run's operator is GaussianBlur(kernel_size=5, std=1.0)"),
        (
            Measurement(SuperResolution(2, lift="matlab")),
            "this run's operator is SuperResolution(factor=2, lift=matlab)",
        ),
        (Measurement(SuperResolution(4)), "this run's operator is SuperResolution(factor=4, lift=bicubic)"),
    ],
    ids=["operator", "lift", "factor"],
)
def test_another_operator_or_lift_is_refused_with_the_reason(prior, cse_folder, measurement, reason):
    trained = f"{cse_folder} was trained with SuperResolution(factor=2, lift=bicubic)"
    for build in (
        lambda: RestorationModule(prior, measurement, DPS(1.0, 2)),
        lambda: ScoreErrorModule(prior, measurement, [1.0]),
    ):
        with pytest.raises(CSEMismatchError) as refused:
            build()
        message = str(refused.value)
        assert trained in message and reason in message and message.endswith("attach the CSE trained for this task")
        assert "\n" not in message


def test_other_noise_is_warned_about_not_refused(prior):
    with pytest.warns(UserWarning, match="trained with noise GaussianNoise\\(std=0.0\\); this run's noise is"):
        RestorationModule(prior, Measurement(SuperResolution(2), GaussianNoise(0.05)), DPS(1.0, 2))


def test_a_cse_without_a_record_is_warned_about(tiny_latent, cse_folder, tmp_path):
    bare = tmp_path / "bare"
    build_controlnet(DiffusersPrior.from_pretrained(tiny_latent)).save_pretrained(bare)
    prior = DiffusersPrior.from_pretrained(tiny_latent, controlnet=bare)
    assert prior.cse_record is None
    with pytest.warns(UserWarning, match=f"the CSE {bare} has no {RECORD_FILE} .* cannot be checked"):
        RestorationModule(prior, Measurement(GaussianBlur(5, 1.0)), DPS(1.0, 2))
    prior.controlnet = None  # no CSE, nothing to check
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RestorationModule(prior, Measurement(GaussianBlur(5, 1.0)), DPS(1.0, 2))


def test_the_record_leaves_the_folder_digest_unchanged(tiny_latent, tmp_path):
    """Runs made with a CSE before its record was written keep their settings."""
    build_controlnet(DiffusersPrior.from_pretrained(tiny_latent)).save_pretrained(tmp_path)
    before = local_digest(str(tmp_path))
    write_cse_record(tmp_path, SR2.describe())
    assert local_digest(str(tmp_path)) == before
    (tmp_path / "config.json").write_text(json.dumps({"changed": True}))
    assert local_digest(str(tmp_path)) != before  # the config still counts


def test_operators_describe_the_settings_that_decide_them():
    assert SuperResolution(8).describe() == {"class": "SuperResolution", "factor": 8, "lift": "bicubic"}
    assert GaussianBlur(5, 1.0).describe() == {"class": "GaussianBlur", "kernel_size": 5, "std": 1.0}
