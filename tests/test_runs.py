"""cse.runs: one answer, for every command, to whether a folder belongs to this run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cse import runs
from cse.cli import main
from tests.test_training import one_step_cse_fit

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"sampler": "DPS(num_steps=2)", "data": {"predict": "images", "predict_count": 16}}
HOLD_LOCK = (  # another process holding a folder's lock, as cse.runs takes it
    "import sys, time; from cse import runs; runs.lock(sys.argv[1]); print('held', flush=True); time.sleep(600)"
)


def hold(folder: Path) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def with_count(count: int | None, sampler: str = "DPS(num_steps=2)") -> dict:
    data = {"predict": "images"} | ({} if count is None else {"predict_count": count})
    return {"sampler": sampler, "data": data}


def test_the_same_settings_or_more_inputs_are_this_run_and_anything_else_is_refused(tmp_path):
    assert runs.check_run(tmp_path, SETTINGS, has_results=False) is False  # a new folder
    runs.write_record(tmp_path, SETTINGS)
    assert runs.check_run(tmp_path, SETTINGS, has_results=True) is False
    grow = {"may_grow": ["data.predict_count"]}
    assert runs.check_run(tmp_path, with_count(200), has_results=True, **grow) is False
    assert runs.check_run(tmp_path, with_count(None), has_results=True, **grow) is False  # None: every input
    with pytest.raises(runs.RunFolderError, match=r"data.predict_count: 16 -> 8"):
        runs.check_run(tmp_path, with_count(8), has_results=True, **grow)
    with pytest.raises(runs.RunFolderError, match=r"sampler: DPS\(num_steps=2\) -> DPS\(num_steps=3\)") as refused:
        runs.check_run(tmp_path, with_count(200, "DPS(num_steps=3)"), has_results=True, **grow)
    assert f"({runs.CHOOSE_FOLDER})" in str(refused.value) and runs.OVERWRITE_RESULTS in str(refused.value)
    assert runs.check_run(tmp_path, with_count(16, "DPS(num_steps=3)"), has_results=False) is True  # stale


def test_results_without_a_record_are_refused_and_a_multi_line_setting_is_one_line(tmp_path):
    with pytest.raises(runs.RunFolderError, match="without a run.json.*--overwrite") as refused:
        runs.check_run(tmp_path, SETTINGS, has_results=True, overwrite="--overwrite", choose="another --out")
    assert "another --out" in str(refused.value)
    runs.write_record(tmp_path, {"measurement": "Measurement(\n  (noise): GaussianNoise(std=0.0)\n)"})
    with pytest.raises(runs.RunFolderError) as refused:
        runs.check_run(tmp_path, {"measurement": "Measurement(\n  (noise): GaussianNoise(std=0.1)\n)"}, True)
    assert "\n" not in str(refused.value) and "std=0.0) ) -> Measurement(" in str(refused.value)


def test_clear_removes_what_a_run_wrote_and_nothing_else(tmp_path):
    for name in ("shard-000000.tar", "shard-000001.tar", "manifest.json", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "recon").mkdir()
    (tmp_path / "recon" / "a.png").write_text("")
    (tmp_path / "images").mkdir()
    assert runs.holds(tmp_path, ["recon"]) and not runs.holds(tmp_path, ["images", "missing"])
    runs.clear(tmp_path, ["*.tar", "recon", "images", "missing"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "notes.txt"]


def test_a_folder_in_use_is_refused_at_once_and_free_again_after_kill_9(tmp_path):
    holder = hold(tmp_path)
    try:
        with pytest.raises(runs.RunFolderError, match=rf"in use by another run \(process {holder.pid}\)"):
            runs.lock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert runs.lock(tmp_path) is True and runs.lock(tmp_path) is False  # taken; this process holds it already
    runs.unlock(tmp_path)


def test_a_fit_into_a_folder_in_use_refuses_before_training(digits_data, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    args = one_step_cse_fit(tmp_path, digits_data)
    holder = hold(tmp_path)
    try:
        with pytest.raises(FileExistsError, match="in use by another run"):
            main(args)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "config.yaml").exists()


def test_an_export_is_refused_unless_it_is_the_runs_own_or_overwrite_is_asked(tmp_path):
    path = runs.export_path(tmp_path, None, "controlnet")
    assert path == tmp_path / "controlnet" and runs.export_path(tmp_path, "elsewhere", "x") == Path("elsewhere")
    runs.check_export(path, own=False, overwrite=False)  # nothing there yet
    runs.export(path, lambda folder: (folder.mkdir(), (folder / "weights.bin").write_bytes(b"1")))
    assert (path / "weights.bin").stat().st_mode & 0o044 == 0o044
    with pytest.raises(runs.RunFolderError, match="already holds a model.*overwrite_export=true"):
        runs.check_export(path, own=False, overwrite=False)
    runs.check_export(path, own=True, overwrite=False)
    runs.check_export(path, own=False, overwrite=True)
    checkpoints = tmp_path / "checkpoints"
    assert runs.resumes_own_run(str(checkpoints / "last.ckpt"), str(checkpoints))
    assert not runs.resumes_own_run(str(tmp_path / "other" / "last.ckpt"), str(checkpoints))
    assert not runs.resumes_own_run(None, str(checkpoints))


def test_the_run_folder_module_imports_no_lightning():
    code = "import sys, cse.runs; print(sorted(m for m in sys.modules if m.startswith('lightning')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().replace("'", '"')) == []
