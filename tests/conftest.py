import pytest
import torch

import cse  # noqa: F401  (before anything imports torchvision)


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
