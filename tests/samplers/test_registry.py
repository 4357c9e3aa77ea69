"""The registry of methods: every sampler class and every method file has its entry."""

import inspect
from pathlib import Path

import pytest
import yaml

from cse.operators import BoxInpainting, GaussianBlur, LinearOperator, NonlinearBlur, SaturatedBlur, SuperResolution
from cse.samplers import SAMPLERS
from cse.samplers.registry import METHODS, Need, method

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_every_sampler_class_has_an_entry_and_every_method_file_names_its_own():
    assert {m.sampler for m in METHODS.values()} == set(SAMPLERS)
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONFIGS / "samplers").glob("*.yaml")}
    assert set(files) == set(METHODS)
    for name, content in files.items():
        assert content == {"method": name}, f"configs/samplers/{name}.yaml: only `method: {name}` (and comments)"


@pytest.mark.parametrize("name", list(METHODS))
def test_each_entry_builds_its_sampler_and_names_only_its_arguments(name):
    entry = METHODS[name]
    accepted = set(inspect.signature(entry.sampler).parameters)
    assert set(entry.tuned) | set(entry.fixed) <= accepted and "num_steps" not in entry.fixed
    sampler = entry.sampler(**entry.settings(10, dict.fromkeys(entry.tuned, 0.5)))
    assert sampler.num_steps == int(10 * entry.steps_factor) and entry.label
    assert entry.class_path.startswith("cse.samplers.") and entry.class_path.endswith(entry.sampler.__name__)


def test_the_paper_s_fixed_settings():
    assert METHODS["dps_ddim"].fixed["eta"] == 0.0 and METHODS["dmap_same"].steps_factor == 0.5
    assert METHODS["dmap_same"].fixed["ascent_steps"] == 2 and METHODS["dmap_full"].fixed["ascent_steps"] == 3
    assert METHODS["dps_scaled"].fixed["step_scaling"] == "noise_level"
    with pytest.raises(TypeError):
        METHODS["dps"].fixed["eta"] = 0.0  # read-only: a run cannot change the registry


def test_what_a_method_needs_decides_where_it_is_defined():
    psld = method("psld")
    assert Need.LINEAR_OPERATOR in psld.needs
    assert psld.unmet(SuperResolution) is None and psld.unmet(GaussianBlur) is None
    for nonlinear in (NonlinearBlur, SaturatedBlur):
        assert "needs a linear operator" in psld.unmet(nonlinear)
    linear_only = {n for n, m in METHODS.items() if Need.LINEAR_OPERATOR in m.needs}
    assert all(method(n).unmet(NonlinearBlur) is None for n in METHODS if n not in linear_only)
    ddrm = method("ddrm")
    assert {Need.SVD, Need.PIXEL_PRIOR} <= ddrm.needs and Need.GRADIENTS not in ddrm.needs
    assert ddrm.unmet(SuperResolution) is None and ddrm.unmet(BoxInpainting) is None
    assert "needs a linear operator" in ddrm.unmet(NonlinearBlur)
    assert "has none" in ddrm.unmet(LinearOperator) and "needs a pixel prior" in ddrm.unmet(
        SuperResolution, pixel_prior=False
    )
    assert psld.unmet(SuperResolution, pixel_prior=False) is None  # PSLD is a latent method
    with pytest.raises(KeyError, match="no method 'dsp'"):
        method("dsp")
