import cse  # noqa: F401  (before anything imports torchvision)
import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
