"""Tests of fastopt.datasets: the generated spirals and the CSV / .npz readers."""

import numpy as np
import pytest

from fastopt.datasets import (DataError, load_dataset, make_spirals, split_train_validation,
                              standardize)


def test_spirals_are_deterministic_and_balanced():
    first, second = make_spirals(seed=3), make_spirals(seed=3)
    np.testing.assert_array_equal(first.features, second.features)
    assert first.features.shape == (900, 2)
    assert np.bincount(first.labels).tolist() == [300, 300, 300]
    assert first.n_classes == 3
    assert not np.array_equal(first.features, make_spirals(seed=4).features)


def test_csv_with_header_and_named_labels(tmp_path):
    path = tmp_path / "flowers.csv"
    path.write_text("# comment\nwidth,height,kind\n1.0,2.0,rose\n\n3,4,tulip\n5,6,rose\n")
    dataset = load_dataset(str(path))
    np.testing.assert_array_equal(dataset.features, [[1, 2], [3, 4], [5, 6]])
    assert dataset.labels.tolist() == [0, 1, 0]
    assert dataset.class_names == ["rose", "tulip"]
    assert dataset.name == "flowers.csv"


def test_csv_integer_labels_keep_their_order(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("0.5,10\n0.1,2\n0.3,10.0\n0.2,2\n")
    dataset = load_dataset(str(path))
    assert dataset.class_names == ["2", "10"]
    assert dataset.labels.tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("key_x, key_y", [("X", "y"), ("features", "labels")])
def test_npz(tmp_path, key_x, key_y):
    path = tmp_path / "data.npz"
    np.savez(path, **{key_x: np.arange(8.0).reshape(4, 2), key_y: np.array([1, 0, 1, 0])})
    dataset = load_dataset(str(path))
    assert dataset.features.shape == (4, 2)
    assert dataset.labels.tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("content, message", [
    ("", "no data rows"),
    ("1,2,0\n3,4\n", "line 2 has 2 columns, expected 3"),
    ("1,2,0\n3,x,1\n", "line 2, column 2: feature 'x' is not a number"),
    ("1,2,0\n3,4,0\n", "need at least 2 classes"),
    ("1,0.5\n2,0.25\n3,1\n4,0\n", "not a class label"),
    ("1\n2\n", "has 1 column"),
    ("1,inf,0\n2,3,1\n", "not all finite"),
])
def test_malformed_csv(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(str(path))
    assert "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(str(tmp_path / "nope.csv"))
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(str(tmp_path))


def test_malformed_npz(tmp_path):
    wrong_keys = tmp_path / "wrong.npz"
    np.savez(wrong_keys, a=np.zeros((3, 2)), b=np.zeros(3))
    with pytest.raises(DataError, match="no features"):
        load_dataset(str(wrong_keys))
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, X=np.zeros((3, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="3 feature rows but 2 labels"):
        load_dataset(str(mismatched))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(garbage))


def test_split_and_standardize():
    dataset = make_spirals(n_per_class=10)
    train_x, train_y, val_x, val_y = split_train_validation(
        dataset, 0.2, np.random.default_rng(0))
    assert len(train_y) == 24 and len(val_y) == 6
    assert sorted(np.concatenate([train_y, val_y]).tolist()) == sorted(dataset.labels.tolist())
    scaled_train, scaled_val = standardize(train_x, val_x)
    np.testing.assert_allclose(scaled_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(scaled_train.std(axis=0), 1)
    assert scaled_val.shape == val_x.shape
