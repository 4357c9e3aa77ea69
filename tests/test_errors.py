"""What a user sees for a bad config or command line: one line naming the reason and the option."""

import pytest

from tests.test_project import cli

TASK = ["--config", "configs/digits/sr4/task.yaml", "--config", "configs/samplers/dps.yaml"]


@pytest.mark.parametrize(
    "args, reason",
    [
        (["--model.init_args.sampler.init_args.zeta=-8"], "cse.samplers.dps.DPS: zeta must be a finite number >= 0"),
        (["--model.init_args.sampler.init_args.num_steps=0"], "num_steps must be >= 1, got 0"),
        (["--data.init_args.batch_size=0"], "batch_size must be >= 1 (None: all), got 0"),
        (["--data.init_args.predict_count=0"], "predict_count must be >= 1 (None: all), got 0"),
        (["--model.init_args.sampler.init_args.zetta=3"], "'zetta' is not accepted"),
    ],
)
def test_a_bad_value_or_option_is_one_line_naming_the_option(monkeypatch, tmp_path, args, reason):
    code, _, err = cli(monkeypatch, "predict", *TASK, *args, f"--trainer.default_root_dir={tmp_path}")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, err
    assert reason in errors[0] and f"given as {args[0]}" in errors[0]
    assert "Traceback" not in err and "Union" not in err and "usage:" not in err


def test_an_unknown_option_lists_the_options_the_class_takes(monkeypatch, tmp_path):
    _, _, err = cli(monkeypatch, "predict", *TASK, "--model.init_args.sampler.init_args.zetta=3")
    assert "by cse.samplers.DPS; it takes zeta, num_steps" in err


def test_a_missing_config_file_is_one_line(monkeypatch):
    code, _, err = cli(monkeypatch, "predict", "--config", "configs/digits/sr4/no_such_file.yaml")
    assert code == 2 and "does not exist" in err and "no_such_file.yaml" in err and "usage:" not in err


def test_predict_help_names_the_tasks_and_methods_first(monkeypatch):
    code, out, _ = cli(monkeypatch, "predict", "--help")
    head = "\n".join(out.splitlines()[:20])
    assert code == 0 and "configs/digits/sr4" in head and "dmap_full" in head and "--config TASK" in head


def test_a_class_options_are_listed_without_a_config(monkeypatch):
    code, out, _ = cli(monkeypatch, "predict", "--model.init_args.sampler.help", "cse.samplers.DMAP")
    assert code == 0 and "--model.init_args.sampler.init_args.ascent_steps" in out


def test_other_peoples_advice_is_silenced_and_the_users_kept(caplog, monkeypatch):
    import logging

    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    from cse.errors import quiet_other_peoples_advice

    quiet_other_peoples_advice()
    diffusers_log = logging.getLogger("diffusers.models.modeling_utils")
    with caplog.at_level(logging.INFO):
        monkeypatch.setattr(logging.getLogger("lightning.pytorch.utilities.rank_zero"), "propagate", True)
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing something")
        rank_zero_info("Restored 3 images")
        diffusers_log.warning("Cannot initialize model with low cpu memory usage because `accelerate` was not found")
        diffusers_log.warning("a warning about the user's model")
    assert "Restored 3 images" in caplog.text and "the user's model" in caplog.text
    assert "Tip" not in caplog.text and "accelerate" not in caplog.text
