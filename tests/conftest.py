import numpy as np
import pytest
import torch
from PIL import Image

import cse  # noqa: F401  (before anything imports torchvision)
from cse.testing import build_tiny_stack


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def float64_default():
    """Double precision as the default dtype for one test module (the exact tier's tests)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(scope="session")
def tiny_latent(tmp_path_factory) -> str:
    """A tiny SD-like latent prior folder (UNet, VAE, CLIP text encoder); 16 px images."""
    return str(build_tiny_stack(tmp_path_factory.mktemp("tiny-latent")))


@pytest.fixture(scope="session")
def tiny_pixel_v(tmp_path_factory) -> str:
    """A tiny pixel-space v-prediction prior without text encoder; 16 px images."""
    return str(
        build_tiny_stack(
            tmp_path_factory.mktemp("tiny-pixel"), latent=False, prediction_type="v_prediction", text_encoder=False
        )
    )


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> str:
    """Six random 24x20 RGB PNGs in two class folders."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        folder = root / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return str(root)


@pytest.fixture(scope="session")
def digits_at(tmp_path_factory):
    """``digits_at(size)``: scikit-learn's digits as ``python -m data_tools digits --size SIZE`` writes
    them (train/ and test/ shards), made once per size."""
    from data_tools.digits import build_digits

    made = {}

    def at(size: int):
        if size not in made:
            made[size] = tmp_path_factory.mktemp(f"digits{size}")
            build_digits(made[size], size=size)
        return made[size]

    return at


@pytest.fixture(scope="session")
def digits_data(digits_at):
    """The digits at 16 px, as the pixel tier reads them."""
    return digits_at(16)


@pytest.fixture(scope="session")
def digits32_data(digits_at):
    """The same digits at 32 px, for the latent tier."""
    return digits_at(32)
