"""python -m data_tools: shards from awkward folders, seeded subsets, self-generation, digits."""

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cse.data import ImageDataset, collate, index_source
from cse.images import eval_transform
from data_tools.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def read_all(source: str, size: int) -> dict:
    refs = index_source(source)
    batch = collate([ImageDataset(refs, eval_transform(size))[i] for i in range(len(refs))])
    return dict(zip(batch["key"], batch["image"], strict=True))


@pytest.fixture
def awkward_folder(tmp_path) -> Path:
    """ImageNet layout with every kind of file a real folder holds."""
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for cls in ("n001", "n002"):
        (src / cls).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
            src / f"n00{i % 2 + 1}" / f"good{i}.JPEG", quality=95
        )
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(src / "n001" / "gray.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)).save(src / "n001" / "rgba.png")
    Image.fromarray((rng.integers(0, 65536, (32, 32))).astype(np.uint16)).save(src / "n002" / "deep16.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).convert("P").save(src / "n002" / "palette.png")
    Image.fromarray(rng.integers(0, 256, (20, 64, 3), dtype=np.uint8)).save(src / "n002" / "small.png")
    good = (src / "n001" / "good0.JPEG").read_bytes()
    (src / "n002" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (src / "n001" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (src / "n001" / "notes.txt").write_text("not an image")
    return src


def test_shards_convert_skip_and_report(awkward_folder, tmp_path):
    out = tmp_path / "out"
    summary = main(["shards", "--src", str(awkward_folder), "--out", str(out), "--size", "32", "--shard-size", "3"])
    assert summary["written"] == 8 and summary["skipped"] == 4
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {s["source"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"n002/small.png", "n002/truncated.jpg", "n001/corrupt.png", "n001/notes.txt"}
    assert "too small: 64x20 < 32" in reasons["n002/small.png"] and "not an image" in reasons["n001/notes.txt"]
    assert len(list(out.glob("shard-*.tar"))) == 3
    images = read_all(str(out), 32)
    assert set(images) == {r["key"] for r in manifest["samples"]} and "n001__gray" in images
    assert all(image.shape == (3, 32, 32) for image in images.values())
    row = next(r for r in manifest["samples"] if r["key"] == "n002__good1")
    assert row["class"] == "n002" and row["original_size"] == [48, 40] and row["source"] == "n002/good1.JPEG"
    with tarfile.open(out / row["shard"]) as tar:
        assert json.loads(tar.extractfile(f"{row['key']}.json").read())["class"] == "n002"


def test_count_and_seed_select_the_paper_subsets(awkward_folder, tmp_path):
    def keys(*args):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        main(["shards", "--src", str(awkward_folder), "--out", str(out), "--size", "32", *args])
        return [r["key"] for r in json.loads((out / "manifest.json").read_text())["samples"]]

    first = keys("--count", "3")
    assert first == ["n001__good0", "n001__good2", "n001__gray"]  # sorted order, corrupt ones passed over
    seeded = keys("--count", "3", "--seed", "5")
    assert seeded == keys("--count", "3", "--seed", "5") and seeded != keys("--count", "3", "--seed", "6")
    assert len(seeded) == 3


def test_pixels_round_trip_through_the_shards(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "exact"
    src.mkdir()
    arrays = {f"im{i}": rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for i in range(3)}
    for key, array in arrays.items():
        Image.fromarray(array).save(src / f"{key}.png")
    main(["shards", "--src", str(src), "--out", str(tmp_path / "out"), "--size", "24"])
    for key, image in read_all(str(tmp_path / "out"), 24).items():
        np.testing.assert_array_equal(((image + 1) * 127.5).round().byte().permute(1, 2, 0).numpy(), arrays[key])


def test_selfgen_writes_shards_and_resumes(tiny_pixel_v, tmp_path):
    common = ["selfgen", "--prior", tiny_pixel_v, "--num-steps", "2", "--batch-size", "2", "--devices", "1"]
    first = main([*common, "--count", "3", "--out", str(tmp_path / "a")])
    assert first == {"generated": 3, "written": 3}
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "images").iterdir()}
    resumed = main([*common, "--count", "5", "--out", str(tmp_path / "a")])
    assert resumed == {"generated": 2, "written": 5}
    assert all((tmp_path / "a" / "images" / name).stat().st_mtime_ns == t for name, t in stamps.items())
    main([*common, "--count", "5", "--batch-size", "5", "--out", str(tmp_path / "b")])
    a, b = read_all(str(tmp_path / "a" / "shards"), 16), read_all(str(tmp_path / "b" / "shards"), 16)
    assert list(a) == [f"selfgen{i:06d}" for i in range(5)]
    for key in a:  # one seed per image: batch size and resuming change nothing
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert not torch.equal(a["selfgen000000"], a["selfgen000001"])


def shard_files(out: Path) -> set[str]:
    return {p.name for p in out.glob("*.tar")}


def manifest_shards(out: Path) -> set[str]:
    return {r["shard"] for r in json.loads((out / "manifest.json").read_text())["samples"]}


def test_a_shards_rerun_into_the_same_folder_never_mixes_old_shards_in(awkward_folder, tmp_path):
    out, other = tmp_path / "out", tmp_path / "other"
    main(["shards", "--src", str(awkward_folder), "--out", str(out), "--size", "32", "--shard-size", "2"])
    assert len(shard_files(out)) == 4
    shutil.copytree(awkward_folder / "n001", other)
    before = {name: (out / name).read_bytes() for name in shard_files(out)}
    with pytest.raises(FileExistsError, match=r"other settings \(src: .* -> .*other\).*--overwrite"):
        main(["shards", "--src", str(other), "--out", str(out), "--size", "32", "--shard-size", "20"])
    assert {name: (out / name).read_bytes() for name in shard_files(out)} == before  # refused: nothing touched
    main(["shards", "--src", str(awkward_folder), "--out", str(out), "--size", "32", "--shard-size", "20"])
    assert shard_files(out) == manifest_shards(out) == {"shard-000000.tar"}  # repacked, no old shard left
    main(["shards", "--src", str(other), "--out", str(out), "--size", "32", "--overwrite"])
    assert shard_files(out) == manifest_shards(out) and set(read_all(str(out), 32)) == {
        r["key"] for r in json.loads((out / "manifest.json").read_text())["samples"]
    }
    assert all(key.startswith(("good", "gray", "rgba")) for key in read_all(str(out), 32))


def test_selfgen_into_a_folder_of_other_settings_refuses_unless_overwritten(tiny_pixel_v, tmp_path):
    common = ["selfgen", "--prior", tiny_pixel_v, "--num-steps", "2", "--batch-size", "2", "--devices", "1"]
    out = ["--count", "2", "--out", str(tmp_path / "a")]
    main([*common, *out])
    with pytest.raises(FileExistsError, match=r"other settings \(seed: 0 -> 1\).*--overwrite"):
        main([*common, *out, "--seed", "1"])
    assert main([*common, *out, "--seed", "1", "--overwrite"]) == {"generated": 2, "written": 2}


def test_a_missing_prior_is_one_clear_line_naming_the_option(tmp_path, monkeypatch, capsys):
    argv = ["data_tools", "selfgen", "--prior", str(tmp_path / "no-prior"), "--count", "1", "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    monkeypatch.delenv("CSE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    assert err.startswith("error: Could not load the diffusion prior") and "Here: --prior DIR." in err


def test_digits_split(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "data_tools", "digits", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"train": 1597, "test": 200}
    train = json.loads((tmp_path / "train" / "manifest.json").read_text())["samples"]
    test = json.loads((tmp_path / "test" / "manifest.json").read_text())["samples"]
    assert not {r["index"] for r in train} & {r["index"] for r in test}
    assert {r["label"] for r in test} == set(range(10))
    images = read_all(str(tmp_path / "test"), 16)
    assert len(images) == 200 and next(iter(images.values())).shape == (3, 16, 16)
    digit = next(iter(images.values()))
    assert torch.equal(digit[0], digit[1]) and digit.min() < -0.9 and digit.max() > 0.5  # grey ink on black


def test_reading_the_digits_imports_neither_lightning_nor_diffusers():
    code = "import sys, data_tools.digits; print(sorted({'lightning', 'diffusers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_shards_skip_a_looping_linked_folder_with_the_reason(tmp_path):
    from PIL import Image

    from data_tools.shards import build_shards

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(src / "sub" / "a.png")
    (src / "sub" / "back").symlink_to("..")
    summary = build_shards(src, tmp_path / "out", size=16)
    assert summary["written"] == 1
    assert [s["source"] for s in summary["skipped"]] == ["sub/back"]
    assert "already listed" in summary["skipped"][0]["reason"]
