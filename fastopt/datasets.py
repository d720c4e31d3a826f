"""Classification data sets for ``python -m fastopt compare``.

The default data set is generated, not downloaded: three interleaved spirals in
the plane, the classic small problem that a linear model cannot solve and a
small multilayer perceptron can. A user's own data comes from a CSV file or a
NumPy ``.npz`` archive of features and labels (see :func:`load_dataset`).

Every problem with a data file raises :class:`DataError` with a one-line
message that names the file, so that the command line can print it as is.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DataError",
    "Dataset",
    "load_dataset",
    "make_spirals",
    "split_train_validation",
    "standardize",
]

#: Names under which an ``.npz`` archive may store the feature matrix.
NPZ_FEATURE_KEYS = ("X", "x", "features", "data")
#: Names under which an ``.npz`` archive may store the label vector.
NPZ_LABEL_KEYS = ("y", "labels", "label", "target", "targets")


class DataError(ValueError):
    """A data file is missing, unreadable or not a classification data set.

    The message is a single line that names the file and says what is wrong.
    """


@dataclass
class Dataset:
    """Features and integer class labels for a classification problem.

    Attributes
    ----------
    name : str
        Short description shown in the output (``"spirals"`` or the file name).
    features : numpy.ndarray
        Shape ``(n_samples, n_features)``, float64.
    labels : numpy.ndarray
        Shape ``(n_samples,)``, int64 class indices in ``range(n_classes)``.
    class_names : list of str
        The original label of each class index, as text.
    """

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_names: list

    @property
    def n_samples(self) -> int:
        """Number of samples (rows)."""
        return self.features.shape[0]

    @property
    def n_features(self) -> int:
        """Number of features (columns of ``features``)."""
        return self.features.shape[1]

    @property
    def n_classes(self) -> int:
        """Number of distinct classes."""
        return len(self.class_names)


def make_spirals(n_per_class: int = 300, n_classes: int = 3, *, turns: float = 0.75,
                 noise: float = 0.25, seed: int = 0) -> Dataset:
    """Generate interleaved spiral arms, one arm per class.

    Arm ``k`` is the curve ``r(t) = t``, ``angle(t) = 2 pi (turns t + k / n_classes)``
    for ``t`` spread evenly over ``[0.05, 1]``, with Gaussian noise of standard
    deviation ``noise / n_classes`` radians added to the angle. The result is the
    same for the same arguments on every machine.

    Parameters
    ----------
    n_per_class : int, optional
        Points on each arm.
    n_classes : int, optional
        Number of arms (classes), at least 2.
    turns : float, optional
        How many full turns each arm makes; more turns make a harder problem.
    noise : float, optional
        Angular noise, as a fraction of the angle between neighbouring arms.
    seed : int, optional
        Seed of the noise.

    Returns
    -------
    Dataset
        ``n_per_class * n_classes`` points with two features, ordered by class.
    """
    if n_classes < 2:
        raise ValueError(f"make_spirals needs at least 2 classes, got {n_classes}")
    if n_per_class < 1:
        raise ValueError(f"make_spirals needs at least 1 point per class, got {n_per_class}")
    rng = np.random.default_rng(seed)
    radius = np.linspace(0.05, 1.0, n_per_class)
    features = np.empty((n_per_class * n_classes, 2))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    for k in range(n_classes):
        angle = 2.0 * math.pi * (turns * radius + k / n_classes)
        angle += rng.normal(0.0, 2.0 * math.pi * noise / n_classes, n_per_class)
        rows = slice(k * n_per_class, (k + 1) * n_per_class)
        features[rows, 0] = radius * np.cos(angle)
        features[rows, 1] = radius * np.sin(angle)
    return Dataset(name=f"{n_classes} spirals", features=features, labels=labels,
                   class_names=[str(k) for k in range(n_classes)])


def load_dataset(path: str) -> Dataset:
    """Read a classification data set from a CSV file or an ``.npz`` archive.

    CSV: comma-separated, one sample per row, features in all columns but the
    last, the class label in the last column. Labels may be integers or names.
    An optional header row (one whose feature cells are not all numbers) is
    skipped, as are blank lines and lines starting with ``#``.

    ``.npz``: the features under one of the keys ``X``, ``x``, ``features``,
    ``data`` (a 2-D array, or 1-D for a single feature) and the labels under
    one of ``y``, ``labels``, ``label``, ``target``, ``targets`` (1-D).

    Parameters
    ----------
    path : str
        The file. A name ending in ``.npz`` or a file that is a zip archive is
        read as ``.npz``; anything else as CSV.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        The file is missing or unreadable, malformed, or does not hold at
        least two samples of at least two classes.
    """
    if not os.path.exists(path):
        raise DataError(f"data file not found: {path}")
    if os.path.isdir(path):
        raise DataError(f"data file is a directory: {path}")
    try:
        with open(path, "rb") as handle:
            is_zip = handle.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None
    if path.lower().endswith(".npz") or is_zip:
        features, raw_labels = _read_npz(path)
    else:
        features, raw_labels = _read_csv(path)
    return _make_dataset(os.path.basename(path), features, raw_labels, path)


def _read_npz(path):
    """Features and raw labels from an ``.npz`` archive."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({_first_line(exc)})") from None
    if not hasattr(archive, "files"):
        raise DataError(f"{path}: holds a single array, not an .npz archive of features and labels")
    with archive:
        feature_key = next((k for k in NPZ_FEATURE_KEYS if k in archive.files), None)
        label_key = next((k for k in NPZ_LABEL_KEYS if k in archive.files), None)
        if feature_key is None or label_key is None:
            missing = "features (X)" if feature_key is None else "labels (y)"
            raise DataError(f"{path}: no {missing} array; found keys {sorted(archive.files)}, "
                            f"expected features under one of {list(NPZ_FEATURE_KEYS)} and "
                            f"labels under one of {list(NPZ_LABEL_KEYS)}")
        try:
            features = archive[feature_key]
            labels = archive[label_key]
        except ValueError as exc:  # object arrays need pickle, which is refused
            raise DataError(f"{path}: cannot load arrays ({_first_line(exc)})") from None
    if features.ndim == 1:
        features = features[:, None]
    if features.ndim != 2:
        raise DataError(f"{path}: features {feature_key!r} must be 2-D (samples x features), "
                        f"got shape {features.shape}")
    if features.dtype.kind not in "biuf":
        raise DataError(f"{path}: features {feature_key!r} must be numeric, "
                        f"got dtype {features.dtype}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{path}: labels {label_key!r} must be 1-D, got shape {labels.shape}")
    if labels.shape[0] != features.shape[0]:
        raise DataError(f"{path}: {features.shape[0]} feature rows but {labels.shape[0]} labels")
    return features.astype(np.float64), labels


def _read_csv(path):
    """Features and raw labels (as text) from a CSV file."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for line_number, row in enumerate(csv.reader(handle), start=1):
                if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                    continue
                rows.append((line_number, [cell.strip() for cell in row]))
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file (it is not UTF-8)") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror}") from None
    if rows and not all(_is_number(cell) for cell in rows[0][1][:-1]):
        rows = rows[1:]  # a header row
    if not rows:
        raise DataError(f"{path}: no data rows")
    n_columns = len(rows[0][1])
    if n_columns < 2:
        raise DataError(f"{path}: line {rows[0][0]} has 1 column; need features and a label "
                        "in the last column, separated by commas")
    features = np.empty((len(rows), n_columns - 1))
    labels = []
    for index, (line_number, row) in enumerate(rows):
        if len(row) != n_columns:
            raise DataError(f"{path}: line {line_number} has {len(row)} columns, "
                            f"expected {n_columns}")
        for column, cell in enumerate(row[:-1]):
            try:
                features[index, column] = float(cell)
            except ValueError:
                raise DataError(f"{path}: line {line_number}, column {column + 1}: "
                                f"feature {cell!r} is not a number") from None
        labels.append(row[-1])
    return features, np.array(labels)


def _make_dataset(name, features, raw_labels, path):
    """Check the arrays and encode the labels as class indices."""
    if features.shape[0] < 2:
        raise DataError(f"{path}: need at least 2 samples, found {features.shape[0]}")
    if features.shape[1] < 1:
        raise DataError(f"{path}: no feature columns")
    if not np.all(np.isfinite(features)):
        row = int(np.argwhere(~np.isfinite(features))[0, 0])
        raise DataError(f"{path}: features of sample {row + 1} are not all finite numbers")
    labels = _label_values(raw_labels, path)
    class_values, class_indices = np.unique(labels, return_inverse=True)
    if len(class_values) < 2:
        raise DataError(f"{path}: all labels are {str(class_values[0])!r}; need at least 2 classes")
    return Dataset(name=name, features=np.ascontiguousarray(features, dtype=np.float64),
                   labels=class_indices.astype(np.int64).ravel(),
                   class_names=[str(value) for value in class_values])


def _label_values(raw_labels, path):
    """Labels as integers where they are numbers, else as text."""
    if raw_labels.dtype.kind in "biu":
        return raw_labels.astype(np.int64)
    if raw_labels.dtype.kind == "f":
        numbers = raw_labels
    elif raw_labels.dtype.kind == "U" and all(_is_number(value) for value in raw_labels):
        numbers = raw_labels.astype(np.float64)
    elif raw_labels.dtype.kind in "US":
        return raw_labels.astype(str)
    else:
        raise DataError(f"{path}: labels have unsupported dtype {raw_labels.dtype}")
    if not np.all(np.isfinite(numbers)) or not np.all(numbers == np.round(numbers)):
        bad = numbers[~(np.isfinite(numbers) & (numbers == np.round(numbers)))][0]
        raise DataError(f"{path}: label {bad} is not a class label (an integer or a name); "
                        "compare trains a classifier")
    return numbers.astype(np.int64)


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def split_train_validation(dataset: Dataset, validation_fraction: float,
                           rng: np.random.Generator):
    """Shuffle the samples and split them into a training and a validation part.

    Parameters
    ----------
    dataset : Dataset
    validation_fraction : float
        Share of the samples held out for validation, in ``(0, 1)``. At least
        one sample goes to each part.
    rng : numpy.random.Generator
        Source of the shuffle.

    Returns
    -------
    train_features, train_labels, validation_features, validation_labels : numpy.ndarray
    """
    n_samples = dataset.n_samples
    n_validation = min(max(1, round(n_samples * validation_fraction)), n_samples - 1)
    order = rng.permutation(n_samples)
    validation, train = order[:n_validation], order[n_validation:]
    return (dataset.features[train], dataset.labels[train],
            dataset.features[validation], dataset.labels[validation])


def standardize(train_features: np.ndarray, *others: np.ndarray):
    """Scale features to zero mean and unit variance using the training statistics.

    Constant columns are centred and left unscaled.

    Parameters
    ----------
    train_features : numpy.ndarray
        Shape ``(n_samples, n_features)``; its column means and standard
        deviations define the scaling.
    *others : numpy.ndarray
        More feature matrices (validation, test) scaled the same way.

    Returns
    -------
    list of numpy.ndarray
        New arrays, the training features first.
    """
    mean = train_features.mean(axis=0)
    scale = train_features.std(axis=0)
    scale[scale == 0.0] = 1.0
    return [(features - mean) / scale for features in (train_features, *others)]
