import pytest
import torch
from diffusers import EulerAncestralDiscreteScheduler

from cse.priors import DiscreteSchedule


@pytest.mark.parametrize("num_steps", [2, 50, 333, 1000])
def test_sigmas_match_diffusers_euler_ancestral_on_sd2_defaults(num_steps):
    """The paper's reference runs sample SD2 with diffusers' Euler-ancestral scheduler."""
    reference = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="linspace"
    )
    reference.set_timesteps(num_steps)
    ours = DiscreteSchedule.scaled_linear()
    torch.testing.assert_close(ours.sigmas(num_steps).float(), reference.sigmas.float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.timesteps(num_steps).float(), reference.timesteps.float(), rtol=0, atol=1e-3)
    assert ours.sigmas(num_steps)[0].item() == pytest.approx(float(reference.init_noise_sigma), rel=1e-5)


def test_a_single_step_starts_from_pure_noise():
    schedule = DiscreteSchedule.scaled_linear()
    assert schedule.sigmas(1).tolist() == [schedule.sigma_max, 0.0]


def test_sigma_and_t_are_inverse():
    schedule = DiscreteSchedule.scaled_linear()
    t = torch.tensor([0.0, 0.5, 17.25, 500.0, 998.9, 999.0], dtype=torch.float64)
    torch.testing.assert_close(schedule.sigma_to_t(schedule.t_to_sigma(t)), t)


def test_schedule_rejects_bad_input():
    with pytest.raises(ValueError, match="decreasing"):
        DiscreteSchedule(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match="num_steps"):
        DiscreteSchedule.scaled_linear().sigmas(0)
