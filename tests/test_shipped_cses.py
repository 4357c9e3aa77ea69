"""Every CSE shipped under checkpoints/ loads as a ControlNet, records the measurement it was trained
with (cse.json) and stays small; Table 6's self-generated CSEs are among them."""

from pathlib import Path

import pytest
import torch

from cse.priors.conditioned import read_cse_record
from cse.priors.diffusers_prior import load_cse

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(path for path in ROOT.glob("checkpoints/digits*/*_cse*") if path.is_dir())


def test_the_self_generated_cses_of_table_6_are_shipped():
    names = {f"{path.parent.name}/{path.name}" for path in SHIPPED}
    assert {"digits/sr4_cse_selfgen", "digits_latent/sr8_cse_selfgen"} <= names


@pytest.mark.parametrize("folder", SHIPPED, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_each_shipped_cse_loads_and_records_its_operator(folder):
    loaded = load_cse(folder, torch.float32)
    assert loaded.controlnet is not None and loaded.record is not None
    op = folder.name.split("_cse")[0]
    shipped = read_cse_record(folder.parent / f"{op}_cse")  # every variant of an operator: one measurement
    assert loaded.record["operator"] == shipped["operator"]
    assert sum(f.stat().st_size for f in folder.iterdir()) < 4 * 2**20  # megabytes, like the prior's
