"""cse.data: folders and real webdataset shards behind one batch schema."""

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from cse.data import (
    ImageDataModule,
    ImageDataset,
    collate,
    decode_image,
    eval_transform,
    index_source,
    select_subset,
    train_transform,
)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def shards(tmp_path):
    """Two shards of 16x16 images written by webdataset itself; one sample is corrupt."""
    rng = np.random.default_rng(1)
    arrays = {f"s{i:03d}": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for i in range(7)}
    with wds.ShardWriter(str(tmp_path / "train-%06d.tar"), maxcount=4) as sink:
        for key, array in arrays.items():
            data = b"\x89PNG\r\n\x1a\n truncated" if key == "s003" else png_bytes(Image.fromarray(array))
            sink.write({"__key__": key, "png": data, "json": json.dumps({"source": key}).encode()})
    return tmp_path, arrays


def test_folder_keys_are_relative_paths(image_folder):
    refs = index_source(image_folder)
    assert [r.key for r in refs] == [
        "class0/img0",
        "class0/img2",
        "class0/img4",
        "class1/img1",
        "class1/img3",
        "class1/img5",
    ]


def test_shards_round_trip_pixels_and_skip_the_corrupt_sample(shards):
    folder, arrays = shards
    refs = index_source(str(folder))
    assert len(refs) == 7 and len({r.file for r in refs}) == 2
    assert index_source(str(folder / "train-{000000..000001}.tar")) == refs
    dataset = ImageDataset(refs, eval_transform(16))
    with pytest.warns(UserWarning, match=r"skipping unreadable sample 's003'.*1 skipped"):
        batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["key"] == ["s000", "s001", "s002", "s004", "s005", "s006"]
    for key, image in zip(batch["key"], batch["image"], strict=True):
        restored = ((image + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(restored, arrays[key])


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda: Image.fromarray(np.full((8, 8), 100, np.uint8))),
        ("RGBA", lambda: Image.fromarray(np.dstack([np.full((8, 8, 3), 200, np.uint8), np.zeros((8, 8), np.uint8)]))),
        ("P", lambda: Image.fromarray(np.full((8, 8, 3), 30, np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)),
        ("I;16", lambda: Image.fromarray(np.full((8, 8), 65535, np.uint16))),
    ],
)
def test_any_image_mode_decodes_to_rgb(mode, make):
    image = make()
    assert image.mode == mode
    rgb = np.asarray(decode_image(png_bytes(image)))
    assert rgb.shape == (8, 8, 3)
    expected = {"L": 100, "RGBA": 255, "P": 30, "I;16": 255}[mode]  # transparent pixels become white
    assert (rgb == expected).all()


def test_seeded_subsets_are_deterministic_and_repeated_to_the_batch(image_folder):
    refs = index_source(image_folder)
    first = select_subset(refs, 3, seed=7)
    assert first == select_subset(refs, 3, seed=7) and first != select_subset(refs, 3, seed=8)
    assert select_subset(refs, 3, seed=None) == refs[:3]
    assert [r.key for r in select_subset(refs, 2, seed=7, min_length=5)] == [r.key for r in first[:2]] * 3


def test_augmentation_is_seeded_by_epoch_and_key(image_folder):
    refs = index_source(image_folder)[:2]
    dataset = ImageDataset(refs, train_transform(16), seed=3)
    once, again = dataset[0]["image"], dataset[0]["image"]
    torch.testing.assert_close(once, again)
    dataset.epoch = 1
    assert not torch.equal(once, dataset[0]["image"])
    assert once.shape == (3, 16, 16) and once.min() >= -1 and once.max() <= 1


def test_datamodule_batches_and_a_clear_error_without_data(image_folder, tmp_path):
    module = ImageDataModule(train=image_folder, image_size=16, batch_size=4, num_workers=0, train_count=2)
    batch = next(iter(module.train_dataloader()))
    assert batch["image"].shape == (4, 3, 16, 16) and len(batch["key"]) == 4
    assert module.val_dataloader() == []
    with pytest.raises(ValueError, match="no predict data"):
        module.predict_dataloader()
    with pytest.raises(FileNotFoundError, match="no images or webdataset shards"):
        index_source(str(tmp_path / "empty"))
