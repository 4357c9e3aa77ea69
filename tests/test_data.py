"""cse.data: folders and real webdataset shards behind one batch schema."""

import io
import json

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from cse.data import (
    EpochPlan,
    ImageDataModule,
    ImageDataset,
    collate,
    index_source,
    select_subset,
    train_transform,
)
from cse.images import decode_image, eval_transform


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
    assert refs[1].metadata() == {"source": "s001"}  # the sample's JSON member
    dataset = ImageDataset(refs, eval_transform(16))
    with pytest.warns(UserWarning, match=r"skipping sample 's003' .*unreadable"):
        batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch["key"] == ["s000", "s001", "s002", "s004", "s005", "s006"]
    assert [key for key, _ in batch["skipped"]] == ["s003"] and "unreadable" in batch["skipped"][0][1]
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


def test_seeded_subsets_are_deterministic(image_folder):
    refs = index_source(image_folder)
    first = select_subset(refs, 3, seed=7)
    assert first == select_subset(refs, 3, seed=7) and first != select_subset(refs, 3, seed=8)
    assert select_subset(refs, 3, seed=None) == refs[:3]


def test_augmentation_is_seeded_by_epoch_and_sample_id(image_folder):
    refs = index_source(image_folder)[:2]
    dataset = ImageDataset(refs, train_transform(16), seed=3, min_size=16)
    once, again = dataset[(0, 0)]["image"], dataset[(0, 0)]["image"]
    torch.testing.assert_close(once, again)
    repeated = dataset[(0, 1)]
    assert repeated["key"] == refs[0].key and repeated["sample_id"] == f"{refs[0].key}#1"
    assert not torch.equal(once, repeated["image"])  # a repetition is a sample of its own
    dataset.epoch = 1
    assert not torch.equal(once, dataset[(0, 0)]["image"])
    assert once.shape == (3, 16, 16) and once.min() >= -1 and once.max() <= 1


def plan(n, multiple, world=1, rank=0, epoch=0, shuffle=True):
    dataset = ImageDataset([None] * n, eval_transform(8))
    sampler = EpochPlan(dataset, world, rank, shuffle=shuffle, seed=0, multiple=multiple)
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_optimizer_step_sees_exactly_the_effective_batch():
    """100 images, effective batch 64: an epoch is 64 of them (a different 64 each epoch), never a
    partial step of 36; 25 images are repeated to 64, each repetition a sample id of its own."""
    epoch0, epoch1 = plan(100, 64), plan(100, 64, epoch=1)
    assert len(epoch0) == 64 and len({i for i, _ in epoch0}) == 64 and {r for _, r in epoch0} == {0}
    assert {i for i, _ in epoch0} != {i for i, _ in epoch1}
    small = plan(25, 64)
    assert len(small) == 64 and len(set(small)) == 64 and {i for i, _ in small} == set(range(25))
    assert max(r for _, r in small) == 2
    ranks = [plan(100, 64, world=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 32 and not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(epoch0)
    assert plan(7, 1, shuffle=False) == [(i, 0) for i in range(7)]  # evaluation: everything, in order


def test_the_datamodule_drops_partial_steps_and_knows_accumulation(image_folder, tmp_path):
    module = ImageDataModule(train=image_folder, image_size=16, batch_size=2, num_workers=0, min_size=16)

    class Trainer:  # what the data module reads of the trainer
        world_size, global_rank, accumulate_grad_batches = 1, 0, 2

    module.trainer = Trainer()
    batches = list(module.train_dataloader())
    assert [len(b["key"]) for b in batches] == [2, 2]  # 6 images, effective batch 4: one full step
    assert batches[0]["image"].shape == (2, 3, 16, 16)
    assert module.val_dataloader() == []
    with pytest.raises(ValueError, match="no predict data"):
        module.predict_dataloader()
    with pytest.raises(FileNotFoundError, match="no images or webdataset shards"):
        index_source(str(tmp_path / "empty"))


def test_images_too_small_or_too_elongated_are_skipped_with_the_reason(tmp_path):
    for name, size in [("tiny", (4, 4)), ("dot", (1, 1)), ("strip", (3000, 2)), ("wide", (200, 40)), ("ok", (20, 16))]:
        Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).save(tmp_path / f"{name}.png")
    module = ImageDataModule(predict=str(tmp_path), image_size=16, batch_size=8, num_workers=0)
    with pytest.warns(UserWarning, match="skipping"):
        batch = next(iter(module.predict_dataloader()))
    assert batch["key"] == ["ok"]
    reasons = dict(batch["skipped"])
    assert set(reasons) == {"tiny", "dot", "strip", "wide"}
    assert "too small: 4x4 < 16" in reasons["tiny"] and "aspect ratio 200x40" in reasons["wide"]


def test_labels_come_from_each_samples_json(shards):
    folder, _ = shards
    (folder / "labels").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "labels" / "a.png")
    (folder / "labels" / "a.json").write_text(json.dumps({"label": 7}))
    module = ImageDataModule(predict=str(folder / "labels"), image_size=16, num_workers=0, label_key="label")
    assert next(iter(module.predict_dataloader()))["label"].tolist() == [7]


def test_links_loops_folders_and_non_images_are_skipped_with_their_reasons(tmp_path):
    (tmp_path / "good.png").write_bytes(png_bytes(Image.new("RGB", (16, 16))))
    (tmp_path / "dangling.png").symlink_to("nowhere.png")
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "inner.png").write_bytes(png_bytes(Image.new("RGB", (16, 16))))
    (tmp_path / "linked" / "back").symlink_to("..")  # a folder loop: walked once, then listed as skipped
    refs = index_source(str(tmp_path))
    dataset = ImageDataset(refs, eval_transform(16))
    with pytest.warns(UserWarning):
        batch = collate([dataset[i] for i in range(len(dataset))])
    reasons = dict(batch["skipped"])
    assert batch["key"] == ["good", "linked/inner"]
    assert "dangling symbolic link" in reasons["dangling"] and "loop" in reasons["loop"]
    assert "a folder" in reasons["folder"] and "empty file" in reasons["empty"]
    assert "not an image" in reasons["text"] and "0x" not in reasons["text"]  # the reason, not a memory address
    assert "already listed" in reasons["linked/back"]


def test_a_linked_folder_beside_its_target_is_listed_once(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(png_bytes(Image.new("RGB", (16, 16))))
    (tmp_path / "a").symlink_to("b")  # walked first by name: its images must not come twice
    refs = index_source(str(tmp_path))
    assert [(r.key, r.problem is None) for r in refs] == [("a", False), ("b/x", True)]


def test_two_files_with_one_key_are_named_in_one_error(tmp_path):
    from cse.errors import InputError

    for name in ("a.png", "a.jpg", "b.png"):
        Image.new("RGB", (16, 16)).save(tmp_path / name)
    with pytest.raises(InputError, match=r"a\.jpg and .*a\.png would both be sample 'a'"):
        index_source(str(tmp_path))


@pytest.mark.parametrize("option", ["batch_size", "image_size", "predict_count", "train_count"])
def test_a_zero_batch_size_image_size_or_count_is_refused_at_construction(option):
    """predict_count=0 used to exit 0 with no summary, against "a run that restores nothing fails"."""
    with pytest.raises(ValueError, match=f"{option} must be >= 1"):
        ImageDataModule(predict="data", **{option: 0})
