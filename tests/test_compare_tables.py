"""Tables ``compare`` reads: garbage is refused or dropped with a note, never trained on as data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pandas")
pytest.importorskip("sklearn")
import pandas as pd

from labelsmooth.experiments import DataError, compare, load_dataset
from labelsmooth.experiments.data import TEST_FRACTION, stratified_indices
from labelsmooth.experiments.tables import MAX_CATEGORIES


def table(tmp_path, n: int = 600, **columns) -> object:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % 3
    frame = pd.DataFrame({"x1": rng.normal(labels, 0.5), "x2": rng.normal(-labels, 0.5), **columns,
                          "label": labels})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def features(data):
    return torch.cat([data.train.inputs, data.test.inputs])


def test_id_column_is_dropped_and_said(tmp_path):
    path = table(tmp_path, user=[f"user{i}" for i in range(600)])
    data = load_dataset(path)
    assert data.train.inputs.shape[1] == 2  # x1 and x2 only: no 600 one-hot columns
    assert data.notes == ("dropped text column 'user' (600 distinct values in 600 rows: an id or free text)",)
    result = compare(path, seeds=2, epochs=5)
    assert result.notes == data.notes
    assert all(run.learned for run in result.runs)
    assert result.summary[0]["accuracy_mean"] > 0.8


def test_text_with_many_categories_is_dropped(tmp_path):
    words = [f"w{i % (MAX_CATEGORIES + 1)}" for i in range(600)]  # 51 values, each in many rows
    data = load_dataset(table(tmp_path, word=words))
    assert data.train.inputs.shape[1] == 2 and "dropped text column 'word'" in data.notes[0]


@pytest.mark.parametrize("row", [0, 17, 599], ids=["first-row", "middle-row", "last-row"])
def test_stray_text_in_a_numeric_column_names_the_column_and_row(tmp_path, row):
    values = [str(v) for v in np.linspace(0, 1, 600)]
    values[row] = "abc"
    message = rf"column 'x3', row {row + 1} \(counting data rows from 1\): expected a number, .*got 'abc'$"
    with pytest.raises(DataError, match=message):
        load_dataset(table(tmp_path, x3=values))


def held_out_rows(n: int) -> list[int]:
    """The table rows of the test split, in its order (the labels cycle through 3 classes)."""
    _, held = stratified_indices(np.arange(n) % 3, TEST_FRACTION, stratify=True)
    return held.tolist()


def test_one_hot_categories_come_from_the_training_split(tmp_path):
    colors = np.array(["red", "green", "blue"])[np.arange(600) % 3].astype(object)
    violet = held_out_rows(600)[0]
    colors[violet] = "violet"  # seen only in the test split
    data = load_dataset(table(tmp_path, color=colors))
    assert data.train.inputs.shape[1] == 2 + 3  # x1, x2 and one column per training color
    train_colors = pd.read_csv(tmp_path / "t.csv")["color"].to_numpy()[
        sorted(set(range(600)) - set(held_out_rows(600)))]
    # An unseen category is all zeros before standardization: (0 - mean) / std of each training column.
    absent = [(0.0 - (train_colors == c).mean()) / (train_colors == c).std()
              for c in ("blue", "green", "red")]
    torch.testing.assert_close(data.test.inputs[0, 2:], torch.tensor(absent, dtype=torch.float32))


def test_constant_columns_are_dropped_and_nothing_explodes(tmp_path):
    n = 600
    spike = np.zeros(n)
    spike[held_out_rows(n)[0]] = 1e6  # constant on the training split, huge in one test row
    data = load_dataset(table(tmp_path, const=np.full(n, 7.0), spike=spike))
    assert data.train.inputs.shape[1] == 2
    assert set(data.notes) == {"dropped column 'const' (constant on the training split)",
                               "dropped column 'spike' (constant on the training split)"}
    assert features(data).abs().max().item() < 1e3


def test_continuous_label_column_is_refused_in_one_short_line(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "reg.csv"
    pd.DataFrame({"x": rng.normal(size=600), "label": rng.normal(size=600)}).to_csv(path, index=False)
    with pytest.raises(DataError, match="looks continuous") as error:
        load_dataset(path)
    assert len(str(error.value)) < 200 and "\n" not in str(error.value)


def test_many_integer_labels_look_continuous_too(tmp_path):
    path = tmp_path / "ids.csv"
    pd.DataFrame({"x": np.arange(600.0), "label": np.arange(600)}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"600 distinct values in 600 rows.*looks continuous"):
        load_dataset(path)


def test_a_class_of_one_example_is_refused_with_a_short_list(tmp_path):
    labels = np.concatenate([np.arange(400) % 100, [100]])  # 100 classes of 4 examples and one of 1
    path = tmp_path / "rare.csv"
    pd.DataFrame({"x": np.arange(401.0), "label": labels}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"class sizes \[4, 4, .*\(101 in all\)\]") as error:
        load_dataset(path)
    assert len(str(error.value)) < 200
