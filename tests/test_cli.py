"""The command line: a real run in a subprocess, and every bad input stopping with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clplat import config_dir
from clplat.preflight import preflight
from tests.conftest import TINY
from tests.helpers import cli_env, run_cli

STRATEGIES = ", ".join(sorted(p.stem for p in (config_dir() / "strategy").glob("*.yaml")))


def test_cli_runs_an_experiment_into_the_hydra_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(*TINY, "print_summary=true", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy after each experience" in proc.stdout
    for name in ("metrics.csv", "summary.json", "accuracy_matrix.csv", "config.yaml", "forgetting_curves.png"):
        assert (run_dir / name).exists(), name
    assert (run_dir / ".hydra" / "overrides.yaml").exists()
    log = (run_dir / "train.log").read_text()  # the run's own log, each line once on the terminal
    assert "experience 5/5 done at iteration 30" in log and "done: avg_acc=" in log
    assert proc.stdout.count("experience 5/5 done") == 1 and "[clplat.run]" not in proc.stdout


def test_cli_usage_error_exits_2_with_one_line_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "never"
    proc = run_cli("eval.every_n_iters=0", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["clplat: error: eval.every_n_iters=0 is not valid: must be an integer >= 1"]
    assert not run_dir.exists()


@pytest.mark.parametrize("args, expected", [
    (["strategy=bogus"], f"strategy=bogus is not valid: no such option; available: {STRATEGIES}"),
    (["strategy=repaly"], "strategy=repaly is not valid: no such option; did you mean replay?"),
    (["experiment=bogus"], "experiment=bogus is not valid: no such option; available: "),
    (["plots=maybe"], "plots='maybe' is not valid: allowed values are True, False"),
    (["plugin=[bogus]"], "plugin=bogus is not valid: no such option; available: fpf, refresh"),
    (["eval.every_n_iters=0"], "eval.every_n_iters=0 is not valid: must be an integer >= 1"),
    (["eval.every_n_iters=-5"], "eval.every_n_iters=-5"),
    (["strategy.buffer_size=-1"], "strategy.buffer_size=-1 is not valid: must be an integer >= 1"),
    (["strategy.replay_batch_size=0"], "strategy.replay_batch_size=0"),
    (["strategy.policy=fifo"], "strategy.policy='fifo' is not valid: allowed values are reservoir, class_balanced"),
    (["trainer.epochs=abc"], "trainer.epochs='abc' is not valid"),
    (["trainer.batch_size=0"], "trainer.batch_size=0"),
    (["trainer.epochs=null"], "set trainer.epochs or trainer.iterations"),
    (["eval.subset_size=0"], "eval.subset_size=0"),
    (["eval.tasks=future"], "eval.tasks='future' is not valid: allowed values are seen, all"),
    (["eval.colour=red"], "eval.colour=red is not valid: no such key; the keys of eval are: batch_size, "),
    (["trainer.iteration=5"], "trainer.iteration=5 is not valid: no such key; did you mean trainer.iterations?"),
    (["strategy.bufer_size=3"], "strategy.bufer_size=3 is not valid: no such key; did you mean strategy.buffer_size?"),
    (["+strategy.colour=red"], "could not be built"),
    (["head.type=double"], "head.type='double' is not valid: allowed values are auto, single, multi"),
    (["+logger.tb=3"], "logger.tb=3 is not valid: must be a config with a _target_"),
    (["+logger.tb._target_=nowhere.Logger"], "logger.tb._target_='nowhere.Logger' is not valid: cannot be imported"),
    (["+logger.tb._target_=collections.OrderedDict"], "must be a lightning.pytorch.loggers.Logger class"),
    (["logger=wandb", "logger.wandb.mode=sometimes"],
     "logger.wandb.mode='sometimes' is not valid: allowed values are auto, online, offline, disabled"),
    (["logger=wandb", "logger.wandb.tags=[1]"], "logger.wandb.tags=[1] is not valid: must be a list of strings"),
    (["logger.kind=csv"], "logger.kind=csv is not valid: no such key"),
    (["logger.wandb.mode=offline"], "no such key; the config has no logger.wandb (the keys of logger are: csv)"),
    (["+logger.csv.colour=red"], "logger.csv.colour='red' is not valid: not an argument of lightning.pytorch.loggers."
     "CSVLogger; its arguments: flush_logs_every_n_steps, name, prefix, save_dir, version"),
    (["backbone.pooling=max"], "backbone.pooling='max' is not valid: allowed values are last, mean"),
    (["backbone.hidden_size=0"], "backbone.hidden_size=0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is not valid: must be a number > 0"),
    (["+optimizer.betas=[0.9,2.0]"], "optimizer.betas=[0.9, 2.0] is not valid: Invalid beta parameter at index 1"),
    (["optimizer=sgd", "optimizer.momentum=-1"], "optimizer.momentum=-1 is not valid"),
    (["seed=-3"], "seed=-3 is not valid"),
    (["trainer.precision=banana"], "trainer.precision='banana' is not valid: allowed values are 32-true, 64-true"),
    (["-m", "strategy=naive,bogus"], "strategy=bogus is not valid: no such option"),
    (["-m", "eval.every_n_iters=5,0"], "eval.every_n_iters=0 is not valid"),
])
def test_bad_inputs_stop_in_preflight_with_one_clear_line(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        preflight(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clplat: error: ")
    assert expected in err[0]


def test_good_inputs_pass_preflight(capsys):
    preflight(["strategy=naive", "backbone=lstm", "eval=dense"])
    preflight(["-m", "strategy=naive,replay,joint,cumulative", "seed=0,1"])
    preflight(["--cfg", "job"])  # inspection flags are left to Hydra
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("overrides, tiny, expected", [
    (["head.type=multi"], True, "head.type='multi' is not valid: a multi-head needs task ids"),
    (["stream.n_experiences=3"], True, "stream.classes_per_experience=2 is not valid"),
    (["stream=split_mnist", "stream.source.root=/nonexistent"], False, "stream.source.root"),
])
def test_errors_found_when_the_stream_is_built_are_one_line_too(make_cfg, overrides, tiny, expected):
    from clplat.errors import ConfigError
    from clplat.experiment import run_experiment

    cfg = make_cfg(*overrides, tiny=tiny)
    with pytest.raises(ConfigError) as err:
        run_experiment(cfg)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not (Path(cfg.run_dir) / "metrics.csv").exists()


def test_an_error_found_at_run_start_leaves_no_run_folder(tmp_path):
    """A missing dataset is found when the stream is built, after Hydra made the run folder."""
    run_dir = tmp_path / "run"
    args = ["stream=split_mnist", f"stream.source.root={tmp_path / 'nowhere'}"]
    result = run_cli(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 2 and "stream.source.root" in result.stderr
    assert not run_dir.exists()
    # a folder that already held something keeps it
    (kept := tmp_path / "kept").mkdir()
    (kept / "notes.txt").write_text("mine")
    result = run_cli(*args, f"hydra.run.dir={kept}", cwd=tmp_path)
    assert result.returncode == 2 and (kept / "notes.txt").read_text() == "mine"


def test_a_gpu_trainer_without_a_gpu_stops_in_preflight_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        preflight(["trainer=gpu", f"hydra.run.dir={tmp_path / 'never'}"])
    assert exit_info.value.code == 2
    assert "trainer.accelerator='gpu' is not valid: no CUDA GPU is visible" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_a_float64_run_evaluates_in_float64(make_cfg):
    from clplat.experiment import run_experiment

    summary = run_experiment(make_cfg("trainer.precision=64", "trainer.checkpoint=false", "plots=false")).summary
    assert 0.0 <= summary["avg_acc"] <= 1.0


@pytest.mark.parametrize("argv, expected", [
    (["trainer.iteration=5"], "did you mean trainer.iterations"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 is not valid"),
    (["plugin=[foo]"], "available: fpf, refresh"),
    (["eval.split=foo"], "eval.split='foo' is not valid"),
    (["logger=csv_wandb", "logger.wandb.mode=never"], "logger.wandb.mode='never' is not valid"),
    (["-m", "optimizer.lr=interval(0.001,0.01)"], "the basic sweeper takes lists"),
    (["--frobnicate"], "unrecognised arguments: --frobnicate"),
    (["-m", "seed=0,1", "--info"], "--multirun and --info cannot be combined"),
])
def test_config_errors_are_answered_before_torch_is_imported(argv, expected):
    """Start-up checks of keys, values and ranges run without torch or Lightning (about a second)."""
    probe = ("import sys\nfrom clplat.preflight import preflight\ntry:\n    preflight(sys.argv[1:])\n"
             "except SystemExit as stop:\n    print('exit', stop.code)\n"
             "print('torch' in sys.modules, 'lightning' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe, *argv], env=cli_env(), capture_output=True, text=True,
                            timeout=300)
    assert expected in result.stderr and result.stdout.splitlines() == ["exit 2", "False False"], result
