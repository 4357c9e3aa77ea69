"""The entry points a new user touches first: the CLI, the torchvision fix, the README example."""

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cse._torchvision_compat as compat
from cse.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def cli(monkeypatch, *args: str) -> tuple[int, str, str]:
    """``python -m cse ARGS`` as the console runs it (``sys.argv``, so errors are one line), in process.
    Output goes to buffers that stay open (logging handlers made during a run keep them)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["python -m cse", *args])
    monkeypatch.delenv("CSE_TRACEBACK", raising=False)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, out.getvalue(), err.getvalue()


def test_cli_lists_the_lightning_subcommands(monkeypatch):
    code, out, err = cli(monkeypatch, "--help")
    assert code == 0, err
    assert "python -m cse" in out
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in out


def test_a_missing_model_folder_is_one_clear_line_not_a_parser_traceback(monkeypatch):
    code, _, err = cli(
        monkeypatch, "predict", "--config=configs/digits/sr4/task.yaml", "--config=configs/samplers/dps.yaml",
        "--model.init_args.prior.init_args.id_or_path=checkpoints/digits/missing",
    )  # fmt: skip
    assert code == 1
    assert "error: Could not load the diffusion prior 'checkpoints/digits/missing'" in err
    assert "--model.init_args.prior.init_args.id_or_path=DIR" in err
    assert "Traceback" not in err and "Union subtypes" not in err


def test_a_missing_cse_names_the_controlnet_option(monkeypatch):
    code, _, err = cli(
        monkeypatch, "predict", "--config=configs/digits/sr4/task.yaml", "--config=configs/samplers/dps.yaml",
        "--model.init_args.prior.init_args.controlnet=checkpoints/digits/missing_cse",
    )  # fmt: skip
    assert code == 1 and "error: Could not load the ControlNet (CSE) 'checkpoints/digits/missing_cse'" in err
    assert "--model.init_args.prior.init_args.controlnet=DIR" in err and "id_or_path=DIR" not in err


def test_a_cse_trained_for_another_task_is_refused_in_one_line(monkeypatch):
    code, _, err = cli(
        monkeypatch, "predict", "--config=configs/digits/gblur/task.yaml", "--config=configs/samplers/dps.yaml",
        "--model.init_args.prior.init_args.controlnet=checkpoints/digits/sr4_cse",
    )  # fmt: skip
    assert code == 1 and err.splitlines()[0] == (
        "error: checkpoints/digits/sr4_cse was trained with SuperResolution(factor=4, lift=bicubic); this run's "
        "operator is GaussianBlur(kernel_size=13, std=1.5): attach the CSE trained for this task"
    )
    assert "Traceback" not in err


def test_a_method_not_defined_for_the_task_is_one_line_with_the_reason(monkeypatch):
    code, _, err = cli(
        monkeypatch,
        "predict",
        "--config=configs/digits/nlblur/task.yaml",
        "--config=configs/samplers/psld.yaml",
    )
    assert code == 2 and "Traceback" not in err
    assert "error: configs/digits/steps.yaml: methods.psld.nlblur: not defined: PSLD needs a linear operator" in err


def test_a_task_without_step_sizes_to_observe_says_so_in_one_line(monkeypatch):
    code, _, err = cli(
        monkeypatch, "predict", "--config=configs/gblur/task.yaml", "--config=configs/observations/score_error.yaml"
    )
    assert code == 2 and "Traceback" not in err
    assert "error: steps.observe_zetas: a config reads it from the task's step table, which has none" in err


def test_predict_help_says_how_to_list_a_configs_options(monkeypatch):
    code, out, _ = cli(monkeypatch, "predict", "--help")
    assert code == 0 and "--print_config" in out and "python -m cse predict --model.init_args.sampler.help" in out


def test_the_console_entry_point_runs():
    result = run("-m", "cse", "--help")
    assert result.returncode == 0 and "python -m cse" in result.stdout, result.stderr


def test_import_cse_makes_torchvision_lightning_and_metrics_importable():
    code = (
        "import cse, torchvision, lightning, torchmetrics, lpips\n"
        "from torchvision.transforms import v2\n"
        "import torch\n"
        "print(v2.RandomHorizontalFlip(p=1.0)(torch.arange(4.0).reshape(1, 2, 2))[0, 0].tolist())"
    )
    result = run("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1.0, 0.0]"


def test_torchvision_fix_defines_nothing_where_the_extension_loads(monkeypatch):
    monkeypatch.setattr(compat, "_library", None)
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(compat, "_extension_loads", lambda: True)
    compat.ensure_torchvision_importable()
    assert compat._library is None


def test_torchvision_fix_leaves_an_imported_torchvision_alone(monkeypatch):
    monkeypatch.setattr(compat, "_library", None)
    monkeypatch.setitem(sys.modules, "torchvision", object())
    monkeypatch.setattr(compat, "_extension_loads", lambda: False)
    compat.ensure_torchvision_importable()
    assert compat._library is None


def test_readme_example_is_the_example_file_and_runs():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- example:restore_gmm -->\n```python\n(.*?)```", readme, re.S)
    assert block is not None
    example = ROOT / "examples" / "restore_gmm.py"
    assert block.group(1).strip() in example.read_text()
    result = run(str(example))
    assert result.returncode == 0, result.stderr
    residuals = dict(re.findall(r"^\s*(DMAP|DPS|exact posterior): residual ([\d.]+)", result.stdout, re.M))
    assert set(residuals) == {"DMAP", "DPS", "exact posterior"}
    assert float(residuals["DMAP"]) < float(residuals["DPS"])
    assert float(residuals["DMAP"]) < 3 * float(residuals["exact posterior"])


def test_configs_compose_rather_than_copy():
    """Lines repeated across config files (comments aside) stay under twice the distinct ones."""
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    lines = [s for p in files for line in p.read_text().splitlines() if (s := line.strip()) and not s.startswith("#")]
    assert len(lines) / len(set(lines)) < 2
