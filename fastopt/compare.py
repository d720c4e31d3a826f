"""``python -m fastopt compare``: train one small network with each optimizer, side by side.

The command trains the same multilayer perceptron (:class:`fastopt._mlp.MLP`),
from the same initial weights and on the same batches, once per optimizer, and
reports how far and how fast each one got: the comparison that the usual
"which optimizer should I use" articles tell their readers to run themselves.

By default it compares, on three generated spirals
(:func:`fastopt.datasets.make_spirals`), the optimizers such articles walk
through: gradient descent on the full batch, stochastic gradient descent on
single samples, mini-batch SGD, SGD with momentum, Nesterov momentum, Adagrad,
RMSprop, Adadelta and Adam.

Optimizer specs
---------------
``--optimizers`` takes one or more specs ``NAME[:KEY=VALUE[,KEY=VALUE...]]``.
``NAME`` is one of the presets in :data:`PRESETS` (the default runs) or any
algorithm registered in :data:`fastopt.ALGORITHMS`. ``KEY`` is a
hyperparameter of that algorithm's constructor, or one of

``batch``
    samples per step for this run: a positive integer or ``full``;
``label``
    the name shown in the table, the chart and the JSON.

A ``VALUE`` is read as the type of the hyperparameter's default: ``true`` /
``false`` (also ``yes``/``no``, ``on``/``off``, ``1``/``0``) for booleans, a
number for numbers, and numbers separated by ``/`` for tuples, so that
``adam:lr=3e-3,betas=0.9/0.99,amsgrad=true`` sets Adam's ``betas`` to
``(0.9, 0.99)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import fastopt
from fastopt._mlp import MLP
from fastopt.datasets import (DataError, load_dataset, make_spirals, split_train_validation,
                              standardize)

__all__ = ["main", "PRESETS", "DEFAULT_OPTIMIZERS", "RunSpec", "parse_optimizer_spec"]

PROG = "fastopt compare"

#: Learning-rate multipliers tried by ``--tune``, around each run's own rate.
TUNE_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)

#: Name of the JSON file and of the chart written under ``--out``.
JSON_NAME = "compare.json"
CHART_NAME = "loss_curves.png"

PLOT_HINT = "pip install 'fastopt[plot]'  (or: pip install matplotlib)"


@dataclass(frozen=True)
class Preset:
    """A named optimizer configuration usable in ``--optimizers``.

    Attributes
    ----------
    label : str
        Name shown in the output.
    algorithm : str
        Key of :data:`fastopt.ALGORITHMS`.
    options : dict
        Hyperparameters that differ from the algorithm's defaults.
    batch : int or str or None
        Samples per step: an int, ``"full"`` for the whole training set, or
        None for ``--batch-size``.
    """

    label: str
    algorithm: str
    options: dict = field(default_factory=dict)
    batch: object = None


#: The default comparison, in the order the runs are made. Learning rates
#: are chosen for the default network and data (torch's defaults suit other
#: scales: SGD's 1e-3 barely moves a small network in a few hundred steps).
#: A registered algorithm without a preset runs with its own defaults.
PRESETS = {
    "gd": Preset("GD (full batch)", "sgd", {"lr": 1.0}, "full"),
    "sgd-1": Preset("SGD (batch 1)", "sgd", {"lr": 0.02}, 1),
    "sgd": Preset("Mini-batch SGD", "sgd", {"lr": 0.3}),
    "momentum": Preset("SGD + momentum", "sgd", {"lr": 0.1, "momentum": 0.9}),
    "nesterov": Preset("Nesterov momentum", "sgd",
                       {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "adagrad": Preset("Adagrad", "adagrad", {"lr": 0.2}),
    "rmsprop": Preset("RMSprop", "rmsprop", {"lr": 1e-2}),
    "adadelta": Preset("Adadelta", "adadelta", {"lr": 1.0}),
    "adam": Preset("Adam", "adam", {"lr": 1e-2}),
}

#: Specs run when ``--optimizers`` is not given.
DEFAULT_OPTIMIZERS = tuple(PRESETS)

DEFAULT_EPOCHS = 100
DEFAULT_BATCH_SIZE = 32
DEFAULT_HIDDEN = "64"
DEFAULT_TARGET_LOSS = 0.3
DEFAULT_VALIDATION_FRACTION = 0.2

_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


class UsageError(Exception):
    """A bad command line or data file; the message is one line for the user."""


@dataclass
class RunSpec:
    """One optimizer run, parsed from a spec and checked against the registry.

    Attributes
    ----------
    spec : str
        The text it came from.
    label : str
        Name shown in the output.
    algorithm : str
        Key of :data:`fastopt.ALGORITHMS`.
    hyperparameters : dict
        Keyword arguments for the optimizer class (preset values, then the
        spec's options); the rest come from the class's defaults.
    batch : int or str or None
        As in :class:`Preset`.
    """

    spec: str
    label: str
    algorithm: str
    hyperparameters: dict
    batch: object = None


def _known_names():
    registered = [name for name in fastopt.ALGORITHMS if name not in PRESETS]
    return list(PRESETS) + registered


def parse_optimizer_spec(spec: str) -> RunSpec:
    """Parse ``NAME[:KEY=VALUE,...]`` into a checked :class:`RunSpec`.

    Parameters
    ----------
    spec : str
        See the module docstring for the syntax.

    Returns
    -------
    RunSpec

    Raises
    ------
    UsageError
        Unknown name or option, a value of the wrong type, or a value the
        optimizer's constructor rejects.
    """
    name, _, option_text = spec.strip().partition(":")
    name = name.strip().lower()
    if name in PRESETS:
        preset = PRESETS[name]
    else:
        try:
            row = fastopt.get_algorithm(name)
        except (ValueError, KeyError):
            raise UsageError(f"unknown optimizer {name!r} in {spec!r}; choose from "
                             f"{', '.join(_known_names())}") from None
        preset = Preset(label=row.name, algorithm=name)
    row = fastopt.get_algorithm(preset.algorithm)
    defaults = dict(row.defaults)
    hyperparameters = dict(preset.options)
    batch, label, given = preset.batch, preset.label, []
    for item in filter(None, (part.strip() for part in option_text.split(","))):
        key, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not key:
            raise UsageError(f"option {item!r} in {spec!r} is not KEY=VALUE")
        if key == "batch":
            batch = _parse_batch(value, spec)
        elif key == "label":
            if not value:
                raise UsageError(f"empty label in {spec!r}")
            label = value
            continue
        elif key in defaults:
            hyperparameters[key] = _parse_value(value, defaults[key], key, spec)
        else:
            raise UsageError(f"{row.name} has no option {key!r} (in {spec!r}); options: "
                             f"{', '.join(list(defaults) + ['batch', 'label'])}")
        given.append(f"{key}={value}")
    if given and label == preset.label:
        label = f"{label} ({', '.join(given)})"
    _check_constructor(row, hyperparameters, spec)
    return RunSpec(spec=spec, label=label, algorithm=preset.algorithm,
                   hyperparameters=hyperparameters, batch=batch)


def _parse_batch(value, spec):
    if value.lower() == "full":
        return "full"
    try:
        batch = int(value)
    except ValueError:
        batch = 0
    if batch < 1:
        raise UsageError(f"batch={value!r} in {spec!r}: expected a positive integer or 'full'")
    return batch


def _parse_value(text, default, key, spec):
    """Read ``text`` as the type of ``default``."""
    def fail(expected):
        return UsageError(f"{key}={text!r} in {spec!r}: expected {expected}")

    if isinstance(default, bool):
        word = text.lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise fail("true or false")
    if isinstance(default, int):
        # torch writes some float defaults as ints (SGD's momentum=0), so an
        # int default takes a float too; the constructor has the last word
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            raise fail("a number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise fail("a number") from None
    if isinstance(default, tuple):
        parts = text.split("/")
        if len(parts) != len(default):
            raise fail(f"{len(default)} values separated by '/' (default "
                       f"{'/'.join(str(part) for part in default)})")
        return tuple(_parse_value(part.strip(), element, key, spec)
                     for part, element in zip(parts, default))
    if default is None:
        word = text.lower()
        if word == "none":
            return None
        if word in ("true", "false"):
            return word == "true"
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return text
    if isinstance(default, str):
        return text
    raise UsageError(f"{key} in {spec!r} cannot be set from the command line")


def _check_constructor(row, hyperparameters, spec):
    """Let the optimizer class validate the values, as it will when training."""
    probe = [np.zeros(1, dtype=np.float64)]
    try:
        row.cls(probe, **hyperparameters)
    except (ValueError, TypeError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"{spec!r}: {message}") from None


# --------------------------------------------------------------------------- training


@dataclass
class RunResult:
    """Curves and figures of one trained optimizer run."""

    spec: RunSpec
    batch_size: int
    hyperparameters: dict
    train_loss: list
    validation_loss: list
    validation_accuracy: list
    train_seconds: float
    step_seconds: float
    diverged: bool
    tuning: list = field(default_factory=list)

    @property
    def final_train_loss(self) -> float:
        """Training loss after the last epoch (``nan`` if it diverged)."""
        return self.train_loss[-1] if not self.diverged else math.nan

    @property
    def final_validation_loss(self) -> float:
        """Validation loss after the last epoch (``nan`` if it diverged)."""
        return self.validation_loss[-1] if not self.diverged else math.nan

    @property
    def final_validation_accuracy(self) -> float:
        """Validation accuracy after the last epoch."""
        return self.validation_accuracy[-1]

    @property
    def step_share(self) -> float:
        """Share of the training time spent inside ``optimizer.step``."""
        return self.step_seconds / self.train_seconds if self.train_seconds > 0 else 0.0

    def epochs_to(self, target_loss: float):
        """First epoch whose training loss is at most ``target_loss``, or None."""
        for epoch, loss in enumerate(self.train_loss):
            if loss <= target_loss:
                return epoch
        return None


@dataclass
class Problem:
    """The data and network shape shared by every run."""

    name: str
    train_features: np.ndarray
    train_labels: np.ndarray
    validation_features: np.ndarray
    validation_labels: np.ndarray
    layer_sizes: list
    dtype: np.dtype


def _resolve_batch(spec_batch, default_batch, n_train):
    if spec_batch == "full":
        return n_train
    return min(spec_batch or default_batch, n_train)


def train_run(spec: RunSpec, problem: Problem, *, epochs: int, batch_size: int, seed: int,
              progress=None, hyperparameters=None) -> RunResult:
    """Train a fresh network with one optimizer and record its curves.

    Every run with the same ``seed`` starts from the same weights and, for the
    same batch size, sees the same batches, so that runs differ only by their
    optimizer.

    Parameters
    ----------
    spec : RunSpec
    problem : Problem
    epochs : int
    batch_size : int
        Used when the spec does not set its own batch.
    seed : int
    progress : Progress, optional
        Told about each finished epoch.
    hyperparameters : dict, optional
        Replace ``spec.hyperparameters`` (used by the learning-rate sweep).

    Returns
    -------
    RunResult
        Curves have ``epochs + 1`` points (the first before any step), fewer
        if the loss stopped being finite.
    """
    row = fastopt.get_algorithm(spec.algorithm)
    model = MLP(problem.layer_sizes, np.random.default_rng([seed, 0]), problem.dtype)
    optimizer = row.cls(model.params, **(spec.hyperparameters if hyperparameters is None
                                         else hyperparameters))
    features, labels = problem.train_features, problem.train_labels
    n_train = len(labels)
    batch = _resolve_batch(spec.batch, batch_size, n_train)
    order_rng = np.random.default_rng([seed, 1])
    train_loss, train_accuracy = model.evaluate(features, labels)
    validation_loss, validation_accuracy = model.evaluate(problem.validation_features,
                                                          problem.validation_labels)
    result = RunResult(spec=spec, batch_size=batch, hyperparameters=_group_settings(optimizer),
                       train_loss=[train_loss], validation_loss=[validation_loss],
                       validation_accuracy=[validation_accuracy], train_seconds=0.0,
                       step_seconds=0.0, diverged=False)
    clock = time.perf_counter
    grads = model.grads
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(1, epochs + 1):
            epoch_start = clock()
            if batch < n_train:
                order = order_rng.permutation(n_train)
                epoch_features, epoch_labels = features[order], labels[order]
            else:
                epoch_features, epoch_labels = features, labels
            step_seconds = 0.0
            for start in range(0, n_train, batch):
                model.loss_and_grads(epoch_features[start:start + batch],
                                     epoch_labels[start:start + batch])
                step_start = clock()
                optimizer.step(grads)
                step_seconds += clock() - step_start
            result.train_seconds += clock() - epoch_start
            result.step_seconds += step_seconds
            train_loss, _ = model.evaluate(features, labels)
            validation_loss, validation_accuracy = model.evaluate(
                problem.validation_features, problem.validation_labels)
            if not (math.isfinite(train_loss) and math.isfinite(validation_loss)):
                result.diverged = True
                break
            result.train_loss.append(train_loss)
            result.validation_loss.append(validation_loss)
            result.validation_accuracy.append(validation_accuracy)
            if progress is not None:
                progress.epoch(epoch, epochs, train_loss)
    return result


def _group_settings(optimizer):
    """The optimizer's hyperparameters as JSON-ready values."""
    group = optimizer.param_groups[0]
    return {key: _json_value(value) for key, value in group.items() if key != "params"}


def _json_value(value):
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (tuple, list)):
        return [_json_value(item) for item in value]
    if isinstance(value, np.generic):
        return _json_value(value.item())
    return repr(value)


def tune_run(spec: RunSpec, problem: Problem, *, epochs: int, batch_size: int, seed: int,
             progress=None) -> RunResult:
    """Train with each learning rate of a small sweep and keep the best.

    The sweep multiplies the spec's learning rate by :data:`TUNE_FACTORS`;
    the best run is the one with the lowest final validation loss. Runs whose
    loss stopped being finite lose.

    Returns
    -------
    RunResult
        The best run, with every candidate's learning rate and validation
        figures in ``tuning``.
    """
    row = fastopt.get_algorithm(spec.algorithm)
    base_lr = spec.hyperparameters.get("lr", row.defaults.get("lr"))
    if not isinstance(base_lr, (int, float)) or isinstance(base_lr, bool):
        return train_run(spec, problem, epochs=epochs, batch_size=batch_size, seed=seed,
                         progress=progress)
    best, candidates = None, []
    for index, factor in enumerate(TUNE_FACTORS):
        learning_rate = float(f"{base_lr * factor:.3g}")
        if progress is not None:
            progress.detail(f"lr={learning_rate:g} ({index + 1}/{len(TUNE_FACTORS)})")
        hyperparameters = dict(spec.hyperparameters, lr=learning_rate)
        try:
            row.cls([np.zeros(1)], **hyperparameters)
        except (ValueError, TypeError):
            continue  # e.g. a rate the algorithm rejects; the others still compete
        result = train_run(spec, problem, epochs=epochs, batch_size=batch_size, seed=seed,
                           progress=progress, hyperparameters=hyperparameters)
        candidates.append({"lr": learning_rate, "diverged": result.diverged,
                           "final_validation_loss": _json_value(result.final_validation_loss),
                           "final_validation_accuracy": result.final_validation_accuracy})
        if best is None or _tune_key(result) < _tune_key(best):
            best = result
    best.tuning = candidates
    return best


def _tune_key(result):
    return (result.diverged, result.final_validation_loss)


# --------------------------------------------------------------------------- output


class Progress:
    """Live progress on a stream (stderr).

    On a terminal one status line is redrawn in place (at most ten times a
    second) and replaced by a summary line when a run ends. Elsewhere (a file,
    a pipe, CI logs) only the summary lines are written, so the log stays
    readable.

    Parameters
    ----------
    stream : file-like
    n_runs : int
    enabled : bool
        False writes nothing.
    """

    def __init__(self, stream, n_runs: int, enabled: bool = True):
        self.stream = stream
        self.n_runs = n_runs
        self.enabled = enabled
        isatty = getattr(stream, "isatty", None)
        self.live = enabled and bool(isatty and isatty())
        self._index = 0
        self._label = ""
        self._detail = ""
        self._drawn_width = 0
        self._last_draw = 0.0

    def start(self, index: int, label: str):
        """A run begins."""
        self._index, self._label, self._detail = index, label, ""
        self._draw(f"{self._prefix()} starting", force=True)

    def detail(self, text: str):
        """Extra context for the current run (the learning rate under test)."""
        self._detail = text

    def epoch(self, epoch: int, epochs: int, loss: float):
        """An epoch of the current run ended."""
        self._draw(f"{self._prefix()} epoch {epoch}/{epochs}  loss {loss:.4g}",
                   force=epoch == epochs)

    def finish(self, result: RunResult):
        """The current run ended; write its one-line summary."""
        if not self.enabled:
            return
        outcome = ("diverged" if result.diverged
                   else f"train loss {_format_loss(result.final_train_loss)}, "
                        f"val acc {100 * result.final_validation_accuracy:.1f}%")
        self._write_line(f"[{self._index}/{self.n_runs}] {self._label}: {outcome} "
                         f"({result.train_seconds:.1f} s)")

    def _prefix(self):
        detail = f" {self._detail}" if self._detail else ""
        return f"[{self._index}/{self.n_runs}] {self._label}{detail}:"

    def _draw(self, text, force=False):
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        # a line wider than the terminal wraps, and "\r" then redraws only its tail
        width = shutil.get_terminal_size((80, 24)).columns - 1
        text = text[:width]
        padding = " " * max(0, self._drawn_width - len(text))
        self.stream.write("\r" + text + padding)
        self.stream.flush()
        self._drawn_width = len(text)

    def _write_line(self, text):
        if self.live:
            padding = " " * max(0, self._drawn_width - len(text))
            self.stream.write("\r" + text + padding + "\n")
            self._drawn_width = 0
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


def _format_loss(loss):
    return f"{loss:.4f}" if loss < 1000 else f"{loss:.3e}"


def format_table(results, target_loss: float) -> str:
    """The comparison as a plain-text table.

    Parameters
    ----------
    results : list of RunResult
    target_loss : float
        Threshold for the "epochs to target" column.

    Returns
    -------
    str
        Lines joined by newlines, without a trailing newline.
    """
    header = ["Optimizer", "lr", "Batch", "Train loss", "Val acc",
              f"Epochs to {target_loss:g}", "Time (s)", "In step"]
    rows = []
    for result in results:
        lr = result.hyperparameters.get("lr")
        epochs_to_target = result.epochs_to(target_loss)
        rows.append([
            result.spec.label,
            f"{lr:g}" if isinstance(lr, (int, float)) else "-",
            str(result.batch_size),
            "diverged" if result.diverged else _format_loss(result.final_train_loss),
            f"{100 * result.final_validation_accuracy:.1f}%",
            "-" if epochs_to_target is None else str(epochs_to_target),
            f"{result.train_seconds:.2f}",
            f"{100 * result.step_share:.0f}%",
        ])
    widths = [max(len(line[column]) for line in [header] + rows) for column in range(len(header))]

    def render(cells):
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule] + [render(row) for row in rows])


def _describe_problem(problem, args):
    sizes = "-".join(str(size) for size in problem.layer_sizes)
    return (f"{problem.name}: {len(problem.train_labels)} training and "
            f"{len(problem.validation_labels)} validation samples; MLP {sizes} (tanh), "
            f"{problem.dtype.name}; {args.epochs} epochs, seed {args.seed}"
            + ("; learning rates tuned on the validation split" if args.tune else ""))


def results_document(results, problem, args, argv) -> dict:
    """Everything the run measured, as a JSON-ready dict.

    Returns
    -------
    dict
        ``config`` (the settings and data shape) and ``runs``: per optimizer
        its spec, hyperparameters, the per-epoch curves ``train_loss``,
        ``validation_loss`` and ``validation_accuracy`` (index 0 is before
        training), and the figures shown in the table.
    """
    runs = []
    for result in results:
        runs.append({
            "label": result.spec.label,
            "spec": result.spec.spec,
            "algorithm": result.spec.algorithm,
            "hyperparameters": result.hyperparameters,
            "batch_size": result.batch_size,
            "diverged": result.diverged,
            "final_train_loss": _json_value(result.final_train_loss),
            "final_validation_loss": _json_value(result.final_validation_loss),
            "final_validation_accuracy": result.final_validation_accuracy,
            "epochs_to_target": result.epochs_to(args.target_loss),
            "train_seconds": result.train_seconds,
            "step_seconds": result.step_seconds,
            "step_share": result.step_share,
            "train_loss": result.train_loss,
            "validation_loss": result.validation_loss,
            "validation_accuracy": result.validation_accuracy,
            "tuning": result.tuning,
        })
    return {
        "fastopt_version": getattr(fastopt, "__version__", None),
        "argv": list(argv),
        "config": {
            "data": problem.name,
            "n_train": int(len(problem.train_labels)),
            "n_validation": int(len(problem.validation_labels)),
            "n_features": int(problem.layer_sizes[0]),
            "n_classes": int(problem.layer_sizes[-1]),
            "layer_sizes": problem.layer_sizes,
            "dtype": problem.dtype.name,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "target_loss": args.target_loss,
            "tune": args.tune,
            "tune_factors": list(TUNE_FACTORS) if args.tune else None,
        },
        "runs": runs,
    }


def plot_loss_curves(results, problem, target_loss: float, path: str) -> bool:
    """Draw every run's training-loss curve on one chart and save it as PNG.

    Parameters
    ----------
    results : list of RunResult
    problem : Problem
    target_loss : float
        Drawn as a dotted horizontal line.
    path : str

    Returns
    -------
    bool
        False when matplotlib is not installed (nothing is written).
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FormatStrFormatter
    except ImportError:
        return False
    figure = Figure(figsize=(9, 5.5), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    styles = ["-", "--", "-.", ":"]
    for index, result in enumerate(results):
        epochs = np.arange(len(result.train_loss))
        label = result.spec.label + (" (diverged)" if result.diverged else "")
        axes.plot(epochs, result.train_loss, label=label, linewidth=1.6,
                  color=f"C{index % 10}", linestyle=styles[(index // 10) % len(styles)])
    axes.axhline(target_loss, color="0.4", linestyle=":", linewidth=1,
                 label=f"target loss {target_loss:g}")
    axes.set_yscale("log")
    # plain numbers (0.3, 0.5) read better than 3x10^-1 on a loss axis
    axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axes.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    axes.set_xlabel("Epoch")
    axes.set_ylabel("Training loss (cross-entropy, log scale)")
    sizes = "-".join(str(size) for size in problem.layer_sizes)
    axes.set_title(f"Training loss per optimizer: {problem.name}, MLP {sizes}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.savefig(path)
    return True


# --------------------------------------------------------------------------- command line


class _ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors become one-line :class:`UsageError`."""

    def error(self, message):
        raise UsageError(message)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _hidden_sizes(text):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive layer widths such as 64 or 64,32, got {text!r}")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastopt compare``."""
    parser = _ArgumentParser(
        prog=PROG,
        description="Train a small NumPy multilayer perceptron once per optimizer and "
                    "compare training loss, validation accuracy and speed.",
        epilog="Optimizer specs: NAME[:KEY=VALUE,...], NAME a preset ("
               + ", ".join(PRESETS) + ") or a registered algorithm; KEY a hyperparameter "
               "of its constructor, batch (an integer or 'full') or label. Booleans are "
               "true/false, tuples are written with '/': adam:lr=3e-3,betas=0.9/0.99,amsgrad=true",
    )
    parser.add_argument("--optimizers", nargs="+", action="extend", metavar="SPEC",
                        help="optimizers to compare (default: all presets)")
    parser.add_argument("--tune", action="store_true",
                        help="try each learning rate times "
                             + ", ".join(f"{factor:g}" for factor in TUNE_FACTORS)
                             + " and keep the one with the best validation loss")
    parser.add_argument("--data", metavar="FILE",
                        help="CSV (features..., label per row) or .npz (X, y) to use instead "
                             "of the built-in spirals")
    parser.add_argument("--epochs", type=_positive_int, default=DEFAULT_EPOCHS,
                        help=f"passes over the training data (default {DEFAULT_EPOCHS})")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE,
                        help="samples per step for runs that do not set their own "
                             f"(default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--hidden", type=_hidden_sizes, default=_hidden_sizes(DEFAULT_HIDDEN),
                        metavar="WIDTHS",
                        help=f"hidden layer widths, comma-separated (default {DEFAULT_HIDDEN})")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the split, the initial weights and the batch order "
                             "(default 0)")
    parser.add_argument("--target-loss", type=_positive_float, default=DEFAULT_TARGET_LOSS,
                        help="training loss for the 'epochs to' column "
                             f"(default {DEFAULT_TARGET_LOSS:g})")
    parser.add_argument("--validation-fraction", type=_fraction,
                        default=DEFAULT_VALIDATION_FRACTION,
                        help="share of the data held out for validation "
                             f"(default {DEFAULT_VALIDATION_FRACTION:g})")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="parameter dtype (default float32)")
    parser.add_argument("--out", metavar="DIR",
                        help=f"write {CHART_NAME} (needs matplotlib) and {JSON_NAME} here")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress display on stderr")
    return parser


def _load_problem(args) -> Problem:
    if args.data:
        try:
            dataset = load_dataset(args.data)
        except DataError as exc:
            raise UsageError(str(exc)) from None
    else:
        dataset = make_spirals()
    rng = np.random.default_rng([args.seed, 2])
    train_x, train_y, validation_x, validation_y = split_train_validation(
        dataset, args.validation_fraction, rng)
    train_x, validation_x = standardize(train_x, validation_x)
    dtype = np.dtype(args.dtype)
    return Problem(
        name=dataset.name,
        train_features=np.ascontiguousarray(train_x, dtype=dtype),
        train_labels=train_y,
        validation_features=np.ascontiguousarray(validation_x, dtype=dtype),
        validation_labels=validation_y,
        layer_sizes=[dataset.n_features, *args.hidden, dataset.n_classes],
        dtype=dtype,
    )


def _unique_labels(specs):
    seen = {}
    for spec in specs:
        count = seen.get(spec.label, 0) + 1
        seen[spec.label] = count
        if count > 1:
            spec.label = f"{spec.label} #{count}"


def run(args, argv, stdout, stderr) -> int:
    """Run the comparison described by parsed ``args``.

    Returns
    -------
    int
        The exit status.
    """
    texts = args.optimizers or list(DEFAULT_OPTIMIZERS)
    specs = [parse_optimizer_spec(text) for entry in texts for text in entry.split()]
    if not specs:
        raise UsageError("--optimizers needs at least one spec")
    _unique_labels(specs)
    problem = _load_problem(args)
    if args.out:
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise UsageError(f"--out {args.out} exists and is not a directory")
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create --out directory {args.out}: {exc.strerror}") from None

    print(_describe_problem(problem, args), file=stdout, flush=True)
    progress = Progress(stderr, len(specs), enabled=not args.quiet)
    results = []
    for index, spec in enumerate(specs, start=1):
        progress.start(index, spec.label)
        train = tune_run if args.tune else train_run
        result = train(spec, problem, epochs=args.epochs, batch_size=args.batch_size,
                       seed=args.seed, progress=progress)
        progress.finish(result)
        results.append(result)

    print(file=stdout)
    print(format_table(results, args.target_loss), file=stdout)
    print("\nTime: training only, without the per-epoch loss evaluation; "
          "In step: its share in optimizer.step.", file=stdout)

    if args.out:
        chart_path = os.path.join(args.out, CHART_NAME)
        json_path = os.path.join(args.out, JSON_NAME)
        plotted = plot_loss_curves(results, problem, args.target_loss, chart_path)
        document = results_document(results, problem, args, argv)
        document["chart"] = CHART_NAME if plotted else None
        try:
            with open(json_path, "w", encoding="utf-8") as handle:
                json.dump(document, handle, indent=1)
                handle.write("\n")
        except OSError as exc:
            raise UsageError(f"cannot write {json_path}: {exc.strerror}") from None
        print(f"Wrote {json_path}" + (f" and {chart_path}" if plotted else ""), file=stdout)
        if not plotted:
            print(f"note: the loss-curve chart needs matplotlib: {PLOT_HINT}", file=stderr)
    return 0


def main(argv=None) -> int:
    """Entry point of ``fastopt compare``.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``compare``; ``sys.argv[1:]`` when None.

    Returns
    -------
    int
        0 on success, 2 for a bad argument or data file (after printing one
        line to stderr), 130 when interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    stdout, stderr = sys.stdout, sys.stderr
    try:
        args = build_parser().parse_args(argv)
        return run(args, argv, stdout, stderr)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=stderr)
        return 130
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
