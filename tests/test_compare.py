"""Tests of ``python -m fastopt compare`` (fastopt.compare)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastopt
from fastopt import compare
from fastopt.compare import (DEFAULT_OPTIMIZERS, PRESETS, TUNE_FACTORS, UsageError, main,
                             parse_optimizer_spec)
from fastopt.datasets import make_spirals

TINY = ["--epochs", "3", "--hidden", "8", "--quiet"]


def run_main(capsys, argv):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def read_json(out_dir):
    with open(os.path.join(out_dir, compare.JSON_NAME), encoding="utf-8") as handle:
        return json.load(handle)


def test_end_to_end_tiny(capsys, tmp_path):
    status, out, err = run_main(capsys, TINY + [
        "--optimizers", "sgd", "adam:lr=3e-3,amsgrad=true", "--out", str(tmp_path)])
    assert status == 0, err
    assert "Train loss" in out and "Val acc" in out and "In step" in out
    assert "Mini-batch SGD" in out and "Adam (lr=3e-3, amsgrad=true)" in out
    document = read_json(tmp_path)
    assert [run["label"] for run in document["runs"]] == ["Mini-batch SGD",
                                                          "Adam (lr=3e-3, amsgrad=true)"]
    adam = document["runs"][1]
    assert adam["hyperparameters"]["amsgrad"] is True
    assert adam["hyperparameters"]["lr"] == pytest.approx(3e-3)
    for run in document["runs"]:
        for curve in ("train_loss", "validation_loss", "validation_accuracy"):
            assert len(run[curve]) == 4  # before training, then one per epoch
        assert 0.0 <= run["step_share"] <= 1.0
    assert document["config"]["layer_sizes"] == [2, 8, 3]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert document["chart"] is None
        assert "fastopt[plot]" in err
    else:
        assert document["chart"] == compare.CHART_NAME
        with open(tmp_path / compare.CHART_NAME, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_every_default_optimizer_lowers_the_training_loss(capsys, tmp_path):
    status, out, err = run_main(capsys, ["--epochs", "5", "--quiet", "--out", str(tmp_path)])
    assert status == 0, err
    runs = read_json(tmp_path)["runs"]
    assert [run["spec"] for run in runs] == list(DEFAULT_OPTIMIZERS)
    for run in runs:
        assert not run["diverged"], run["label"]
        assert run["train_loss"][-1] < run["train_loss"][0], run["label"]
        assert len(run["train_loss"]) == 6


def test_runs_are_deterministic_per_seed(capsys, tmp_path):
    curves = []
    for seed, name in [(1, "a"), (1, "b"), (2, "c")]:
        out_dir = tmp_path / name
        status, _, err = run_main(capsys, TINY + ["--optimizers", "momentum", "--seed",
                                                  str(seed), "--out", str(out_dir)])
        assert status == 0, err
        curves.append(read_json(out_dir)["runs"][0]["train_loss"])
    assert curves[0] == curves[1]
    assert curves[0] != curves[2]


def test_module_entry_point_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fastopt", "compare", "--epochs", "2", "--hidden", "4",
         "--optimizers", "gd", "adagrad", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "GD (full batch)" in result.stdout and "Adagrad" in result.stdout
    assert "\r" not in result.stderr  # stderr is a pipe: summary lines only
    assert "[2/2] Adagrad" in result.stderr
    assert len(read_json(tmp_path)["runs"]) == 2


def test_bad_argument_in_a_subprocess_has_no_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "fastopt", "compare", "--optimizers", "adam:lr=-1"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "Invalid learning rate" in result.stderr


@pytest.fixture
def malformed_csv(tmp_path):
    path = tmp_path / "malformed.csv"
    path.write_text("1.0,2.0,0\n3.0,oops,1\n")
    return str(path)


@pytest.fixture
def single_class_npz(tmp_path):
    path = tmp_path / "one_class.npz"
    np.savez(path, X=np.zeros((4, 2)), y=np.zeros(4, dtype=int))
    return str(path)


@pytest.mark.parametrize("argv, message", [
    (["--optimizers", "adamx"], "unknown optimizer 'adamx'"),
    (["--optimizers", "adam:lr=fast"], "expected a number"),
    (["--optimizers", "adam:lr=-1"], "Invalid learning rate"),
    (["--optimizers", "adam:betas=0.9"], "2 values separated by '/'"),
    (["--optimizers", "adam:amsgrad=maybe"], "expected true or false"),
    (["--optimizers", "adam:momentum=0.9"], "has no option 'momentum'"),
    (["--optimizers", "adam:lr"], "is not KEY=VALUE"),
    (["--optimizers", "sgd:batch=0"], "positive integer or 'full'"),
    (["--data", "no/such/file.csv"], "data file not found"),
    (["--data", "MALFORMED_CSV"], "feature 'oops' is not a number"),
    (["--data", "SINGLE_CLASS_NPZ"], "need at least 2 classes"),
    (["--epochs", "0"], "--epochs"),
    (["--hidden", "wide"], "--hidden"),
    (["--seed", "-1"], "non-negative integer"),
    (["--validation-fraction", "1.5"], "between 0 and 1"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(capsys, argv, message, malformed_csv,
                                                     single_class_npz):
    argv = [{"MALFORMED_CSV": malformed_csv, "SINGLE_CLASS_NPZ": single_class_npz}.get(arg, arg)
            for arg in argv]
    status, out, err = run_main(capsys, argv)
    assert status != 0
    assert err.startswith("fastopt compare: error: ")
    assert err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err and out == ""


def test_out_path_that_is_a_file(capsys, tmp_path):
    path = tmp_path / "taken"
    path.write_text("")
    status, _, err = run_main(capsys, TINY + ["--optimizers", "sgd", "--out", str(path)])
    assert status == 2 and "not a directory" in err and err.count("\n") == 1


def test_help_exits_zero(capsys):
    status, out, _ = run_main(capsys, ["--help"])
    assert status == 0 and "--optimizers" in out


def test_without_matplotlib_the_table_and_json_still_come(capsys, tmp_path, monkeypatch):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    status, out, err = run_main(capsys, TINY + ["--optimizers", "sgd", "--out", str(tmp_path)])
    assert status == 0
    assert "Mini-batch SGD" in out
    assert "pip install 'fastopt[plot]'" in err
    assert read_json(tmp_path)["chart"] is None
    assert not (tmp_path / compare.CHART_NAME).exists()


def test_chart_with_matplotlib(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    status, _, err = run_main(capsys, TINY + ["--optimizers", "gd", "adam", "--out",
                                              str(tmp_path)])
    assert status == 0, err
    assert (tmp_path / compare.CHART_NAME).stat().st_size > 10_000


def test_tune_keeps_the_best_learning_rate(capsys, tmp_path):
    status, out, err = run_main(capsys, TINY + ["--optimizers", "adagrad", "--tune",
                                                "--out", str(tmp_path)])
    assert status == 0, err
    run = read_json(tmp_path)["runs"][0]
    tried = [candidate["lr"] for candidate in run["tuning"]]
    base = PRESETS["adagrad"].options["lr"]
    assert tried == pytest.approx([base * factor for factor in TUNE_FACTORS], rel=1e-2)
    best = min(run["tuning"], key=lambda candidate: candidate["final_validation_loss"])
    assert run["hyperparameters"]["lr"] == pytest.approx(best["lr"])


def test_user_csv_end_to_end(capsys, tmp_path):
    spirals = make_spirals(n_per_class=20, n_classes=2)
    path = tmp_path / "mine.csv"
    lines = ["x,y,arm"] + [f"{x:.6f},{y:.6f},{'left' if label else 'right'}"
                           for (x, y), label in zip(spirals.features, spirals.labels)]
    path.write_text("\n".join(lines) + "\n")
    status, out, err = run_main(capsys, TINY + ["--data", str(path), "--optimizers", "adam",
                                                "--out", str(tmp_path / "out")])
    assert status == 0, err
    assert out.startswith("mine.csv: 32 training and 8 validation samples")
    assert read_json(tmp_path / "out")["config"]["n_classes"] == 2


def test_parse_optimizer_spec():
    spec = parse_optimizer_spec("adam:lr=3e-3,betas=0.9/0.99,amsgrad=yes")
    assert spec.algorithm == "adam"
    assert spec.hyperparameters == {"lr": 3e-3, "betas": (0.9, 0.99), "amsgrad": True}
    assert parse_optimizer_spec("SGD:batch=full").batch == "full"
    assert parse_optimizer_spec("sgd-1").batch == 1
    assert parse_optimizer_spec("nesterov").hyperparameters["nesterov"] is True
    assert parse_optimizer_spec("adam:label=My Adam").label == "My Adam"
    with pytest.raises(UsageError, match="choose from gd, sgd-1"):
        parse_optimizer_spec("lbfgs")


def test_every_registered_algorithm_is_accepted():
    for name in fastopt.ALGORITHMS:
        assert parse_optimizer_spec(name).algorithm == name


def test_duplicate_specs_get_distinct_labels(capsys, tmp_path):
    status, _, err = run_main(capsys, TINY + ["--optimizers", "adam", "adam", "--out",
                                              str(tmp_path)])
    assert status == 0, err
    assert [run["label"] for run in read_json(tmp_path)["runs"]] == ["Adam", "Adam #2"]


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_on_a_terminal_and_not_elsewhere():
    spec = parse_optimizer_spec("sgd")
    problem = compare._load_problem(compare.build_parser().parse_args(["--hidden", "4"]))
    for stream, live in [(FakeTerminal(), True), (io.StringIO(), False)]:
        progress = compare.Progress(stream, 1)
        progress.start(1, spec.label)
        result = compare.train_run(spec, problem, epochs=2, batch_size=32, seed=0,
                                   progress=progress)
        progress.finish(result)
        text = stream.getvalue()
        assert ("\r" in text) is live
        assert text.endswith("\n") and "[1/1] Mini-batch SGD: train loss" in text
        if not live:
            assert text.count("\n") == 1


def test_live_line_fits_the_terminal(monkeypatch):
    monkeypatch.setattr(compare.shutil, "get_terminal_size",
                        lambda fallback: os.terminal_size((40, 24)))
    stream = FakeTerminal()
    progress = compare.Progress(stream, 1)
    progress.start(1, "a label far longer than forty columns of terminal")
    assert all(len(piece) <= 39 for piece in stream.getvalue().split("\r"))
