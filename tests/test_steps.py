"""The step tables (cse.steps) and how a run is composed from them (cse.cli.compose)."""

from pathlib import Path

import pytest
import yaml

from cse.cli import build, compose, config_files, derived_root, main
from cse.operators import NonlinearBlur
from cse.samplers.registry import METHODS
from cse.steps import StepTableError, load, sampler_config, task_steps

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TABLES = sorted(CONFIGS.glob("*/steps.yaml"))
TASK_FILES = sorted(CONFIGS.rglob("task.yaml"))


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.parent.name)
def test_every_table_validates_and_writes_back_as_it_reads(path):
    table = load(path)
    assert table.num_steps > 0 and table.tasks
    assert set(table.cells) | set(table.reasons) >= {n for n, m in METHODS.items() if m.tuned}
    assert table.dumps() == path.read_text()


def test_every_task_file_names_a_column_of_a_table():
    assert {p.parent.name for p in TABLES} == {"sd2", "digits", "digits_latent"}
    for path in TASK_FILES:
        task = yaml.safe_load(path.read_text())["task"]
        assert task_steps(task)["num_steps"] > 0, path


def test_the_values_are_the_paper_s_and_the_tuned_ones():
    assert sampler_config("sd2/sr8", "dps") == {
        "class_path": "cse.samplers.DPS",
        "init_args": {"num_steps": 500, "zeta": 4.8},
    }
    same = sampler_config("sd2/gblur", "dmap_same")["init_args"]
    assert same == {"num_steps": 250, "zeta": 1.2, "ascent_steps": 2}
    assert sampler_config("digits/sr4", "dsg")["init_args"] == {"num_steps": 50, "guidance_rate": 0.2}
    assert sampler_config("digits/sr4", "psld")["init_args"]["gamma"] == 0.002


@pytest.mark.parametrize(
    ("wrong", "right", "key"),
    [
        ("  dsg: {", "  dgs: {", "methods.dgs: no such method"),
        (
            "{sr4: {zeta: 16.0}, inpaint: {zeta: 4.0}",
            "{sr4: {zata: 16.0}, inpaint: {zeta: 4.0}",
            "methods.dps.sr4: expected the settings ['zeta']",
        ),
        ("nlblur: {zeta: 2.0}}\n  dps_ddim", "nlblur2: {zeta: 2.0}}\n  dps_ddim", "methods.dps.nlblur2: no such task"),
        ("num_steps: 50", "num_step: 50", "num_steps, tasks, methods: missing"),
        ("  dsg: {", "  # dsg: {", "methods.dsg: missing"),
    ],
)
def test_a_misspelled_table_key_is_one_line_naming_the_file_and_key(tmp_path, wrong, right, key):
    text = (CONFIGS / "digits" / "steps.yaml").read_text()
    assert wrong in text
    path = tmp_path / "steps.yaml"
    path.write_text(text.replace(wrong, right, 1))
    with pytest.raises(StepTableError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}: {key}") and "\n" not in str(error.value)


def test_a_method_not_defined_for_a_task_is_refused_with_the_reason():
    with pytest.raises(
        StepTableError, match=r"digits/steps.yaml: methods.psld.nlblur: not defined: PSLD needs a linear"
    ):
        sampler_config("digits/nlblur", "psld", NonlinearBlur)
    with pytest.raises(
        StepTableError, match=r"sd2/steps.yaml: methods.dps_scaled: not defined on this tier: the step-scaled"
    ):
        sampler_config("sd2/sr8", "dps_scaled")
    with pytest.raises(StepTableError, match=r"tasks: no task 'sr5'"):
        sampler_config("digits/sr5", "dps")


def test_tuning_writes_the_table_as_data(tmp_path):
    path = tmp_path / "steps.yaml"
    path.write_text((CONFIGS / "digits" / "steps.yaml").read_text())
    table = load(path).with_setting("dsg", "gblur", "guidance_rate", 0.8)
    path.write_text(table.dumps())
    again = load(path)
    assert again.cells["dsg"]["gblur"] == {"guidance_rate": 0.8} and again.cells["dps"] == table.cells["dps"]
    assert path.read_text().startswith("# ")  # the file's comments stay
    with pytest.raises(StepTableError, match="zata: not a tuned setting of dps"):
        table.with_setting("dps", "gblur", "zata", 1.0)


def test_compose_puts_the_sampler_where_the_method_file_stands():
    argv = ["predict", "--config", "configs/sr8/task.yaml", "--config=configs/samplers/dmap_same.yaml", "--x=1"]
    composed = compose(argv)
    assert composed[:3] == argv[:3] and composed[3].startswith('--steps={"num_steps": 500')
    sampler = '{"class_path": "cse.samplers.DMAP", "init_args": {"num_steps": 250, "zeta": 9.6, "ascent_steps": 2}}'
    assert composed[4:] == [argv[3], f"--model.init_args.sampler={sampler}", "--x=1"]
    assert '"num_steps": 2,' in compose([*argv, "--steps.num_steps", "4"])[5]


def test_a_method_can_be_named_on_the_command_line_too():
    composed = compose(["--config=configs/digits/sr4/task.yaml", "--method", "dsg", "--x=1"])
    assert composed[3] == "dsg" and composed[-1] == "--x=1"
    sampler = '{"class_path": "cse.samplers.DSG", "init_args": {"num_steps": 50, "guidance_rate": 0.2}}'
    assert composed[4] == f"--model.init_args.sampler={sampler}"
    argv = ["--config=configs/digits/sr4/task.yaml", "--method", "dsg"]
    assert derived_root(config_files(argv)) == derived_root(
        [Path(argv[0].split("=")[1]), CONFIGS / "samplers/dsg.yaml"]
    )
    with pytest.raises(StepTableError, match="^--method: method: no method 'dgs'"):
        compose(["--config=configs/digits/sr4/task.yaml", "--method=dgs"])
    with pytest.raises(StepTableError, match="^--task: a task file names"):
        compose(["--config=configs/digits/sr4/task.yaml", "--task=digits/gblur"])


def test_a_misspelled_method_is_one_line_naming_the_method_file(tmp_path):
    (tmp_path / "m.yaml").write_text("method: dsp\n")
    with pytest.raises(StepTableError, match=rf"^{tmp_path / 'm.yaml'}: method: no method 'dsp' \(known: ancestral, "):
        compose(["--config=configs/sr8/task.yaml", f"--config={tmp_path / 'm.yaml'}"])


def test_a_setting_given_on_the_command_line_wins_over_the_table(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    args = ["predict", "--config=configs/digits/sr4/task.yaml", "--config=configs/samplers/dmap_same.yaml"]
    with pytest.raises(SystemExit):
        main([*args, "--model.init_args.sampler.init_args.zeta=3", "--print_config"])
    sampler = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["sampler"]
    assert sampler["class_path"] == "cse.samplers.DMAP"
    assert sampler["init_args"]["zeta"] == 3.0 and sampler["init_args"]["num_steps"] == 25
    assert sampler["init_args"]["ascent_steps"] == 2


def test_build_gives_the_objects_a_run_of_the_same_files_makes(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    model, data, trainer = build(
        ["configs/digits/sr4/task.yaml", "configs/samplers/dmap_same.yaml"],
        "--model.init_args.sampler.init_args.zeta=3",
    )
    assert type(model.sampler).__name__ == "DMAP" and model.sampler.zeta == 3.0 and model.sampler.num_steps == 25
    assert type(data).__name__ == "ImageDataModule" and trainer.default_root_dir == "outputs/digits/sr4/dmap_same"


def test_a_saved_config_reproduces_the_run_it_was_saved_from(capsys, monkeypatch, tmp_path):
    """A run's config.yaml holds the composed sampler, with its overrides: it is not composed again."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["python -m cse"])
    args = ["predict", "--config=configs/digits/sr4/task.yaml", "--config=configs/samplers/dps.yaml"]
    with pytest.raises(SystemExit):
        main([*args, "--model.init_args.sampler.init_args.zeta=3", "--steps.num_steps=7", "--print_config"])
    saved = tmp_path / "config.yaml"
    saved.write_text(capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["predict", f"--config={saved}", "--print_config"])
    again = yaml.safe_load(capsys.readouterr().out)
    assert again == yaml.safe_load(saved.read_text())
    assert again["model"]["init_args"]["sampler"]["init_args"]["zeta"] == 3.0 and again["steps"]["num_steps"] == 7
