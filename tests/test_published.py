"""The published numbers file and the tables that compare ours with it."""

import fnmatch
import math

import pandas as pd
import pytest
import tomllib

from hypernets import published as pub
from hypernets.book import PROJECT_ROOT
from hypernets.methods.registry import METHODS

METHOD_ORDER = ["map", "ensemble", "bbb", "mc_dropout", "mnf", "bbh"]

# The papers' tables as printed (Pawlowski et al. 2017), method order as above.
MNIST = {
    "error_pct": [0.80, 0.49, 0.72, 0.47, 0.63, 0.56],
    "entropy_auc_in": [0.99, 0.99, 0.97, 0.99, 0.99, 0.97],
    "entropy_auc_out": [0.71, 0.65, 0.41, 0.58, 0.58, 0.48],
    "train_time_s": [710, 2721, 2892, 1224, 21811, 11504],
}
CIFAR5 = {
    "error_pct": [13.58, 10.18, 13.78, 24.74, 12.82, 13.62],
    "entropy_auc_in": [0.83, 0.77, 0.65, 0.46, 0.82, 0.68],
    "entropy_auc_out": [0.68, 0.55, 0.44, 0.35, 0.62, 0.51],
}
ARCHITECTURE = {  # single hypernet, layer-wise
    "error_pct": [1.1, 0.73],
    "entropy_auc_in": [0.89, 0.98],
    "entropy_auc_out": [0.48, 0.54],
}


def as_dict(frame):
    return {(row.method, row.metric): row.value for row in frame.itertuples()}


@pytest.mark.parametrize("table, methods, expected", [
    ("mnist", METHOD_ORDER, MNIST),
    ("cifar5", METHOD_ORDER, CIFAR5),
    ("mnist_hypernet_architecture", ["bbh_single", "bbh_layerwise"], ARCHITECTURE),
])
def test_published_tables_hold_the_papers_numbers(table, methods, expected):
    frame = pub.published(table)
    assert list(frame.columns) == ["method", "metric", "value", "source"]
    want = {(m, metric): v for metric, values in expected.items() for m, v in zip(methods, values)}
    assert as_dict(frame) == pytest.approx(want)
    assert len(frame) == len(want)
    assert list(dict.fromkeys(frame["method"])) == methods  # the paper's column order
    assert frame["source"].str.startswith("Pawlowski et al. 2017, arXiv:1711.01297, ").all()


def test_every_row_of_the_file_is_well_formed():
    frame = pub._read_all()
    assert set(frame["table"]) == set(pub.TABLES)
    assert set(frame["metric"]) <= set(pub.METRICS)
    assert set(frame["method"]) <= set(METHODS) | set(pub.EXTRA_LABELS)
    assert frame["value"].map(lambda v: math.isfinite(v) and v >= 0).all()
    assert not frame.duplicated(["table", "method", "metric"]).any()
    assert len(frame) == 24 + 18 + 6


def test_the_file_is_package_data():
    config = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["hypernets"]
    assert any(fnmatch.fnmatch("published.csv", pattern) for pattern in patterns)


def test_published_refuses_an_unknown_table():
    with pytest.raises(ValueError, match="table must be one of .*'mnist'"):
        pub.published("mnist_table")


def test_published_returns_a_copy():
    frame = pub.published("mnist")
    frame.loc[0, "value"] = -1.0
    assert pub.published("mnist").loc[0, "value"] == 0.80


def test_method_labels():
    assert pub.method_label("mnf") == "Multiplicative normalising flows"
    assert pub.method_label("bbh") == "Bayes by Hypernet"
    assert pub.method_label("something_else") == "something_else"


def ours():
    return pd.DataFrame({
        "method": ["hypergan", "map", "bbh"],
        "error_pct": [1.5, 1.0, 0.5],
        "entropy_auc_in": [0.9, 0.98, 0.95],
        "nll": [0.1, 0.2, 0.3],  # not in the table: ignored
    })


def test_compare_with_published_joins_and_subtracts():
    table = pub.compare_with_published(ours(), "mnist")
    assert list(table.columns) == ["method", "label", "metric", "published", "ours", "difference",
                                   "source"]
    # Our methods first, in our order, then the published ones we did not run.
    assert list(dict.fromkeys(table["method"])) == ["hypergan", "map", "bbh", "ensemble", "bbb",
                                                    "mc_dropout", "mnf"]
    assert set(table["metric"]) == set(MNIST)
    assert len(table) == 7 * 4
    row = table.set_index(["method", "metric"])
    assert row.loc[("map", "error_pct"), "published"] == pytest.approx(0.80)
    assert row.loc[("map", "error_pct"), "ours"] == pytest.approx(1.0)
    assert row.loc[("map", "error_pct"), "difference"] == pytest.approx(0.20)
    assert row.loc[("bbh", "entropy_auc_in"), "difference"] == pytest.approx(0.95 - 0.97)
    assert math.isnan(row.loc[("hypergan", "error_pct"), "published"])
    assert math.isnan(row.loc[("hypergan", "error_pct"), "difference"])
    assert math.isnan(row.loc[("mnf", "error_pct"), "ours"])
    assert math.isnan(row.loc[("map", "entropy_auc_out"), "ours"])  # a metric we did not give
    assert row.loc[("mnf", "error_pct"), "label"] == "Multiplicative normalising flows"
    assert (table["source"] == "Pawlowski et al. 2017, arXiv:1711.01297, MNIST table").all()


def test_compare_with_published_refuses_bad_input():
    with pytest.raises(TypeError, match="DataFrame"):
        pub.compare_with_published({"method": ["map"]}, "mnist")
    with pytest.raises(ValueError, match="'method' column"):
        pub.compare_with_published(ours().drop(columns="method"), "mnist")
    with pytest.raises(ValueError, match=r"one row per method; repeated: \['map'\]"):
        pub.compare_with_published(pd.concat([ours(), ours().iloc[[1]]]), "mnist")
    with pytest.raises(ValueError, match="none of the metrics"):
        pub.compare_with_published(ours()[["method", "nll"]], "mnist")
    with pytest.raises(ValueError, match="table must be one of"):
        pub.compare_with_published(ours(), "cifar10")


def test_side_by_side_has_one_row_per_method():
    comparison = pub.compare_with_published(ours(), "cifar5")
    wide = pub.side_by_side(comparison)
    assert list(wide.index) == ["HyperGAN", "MAP", "Bayes by Hypernet", "Deep ensemble",
                                "Bayes by Backprop", "MC dropout", "Multiplicative normalising flows"]
    assert list(wide.columns.get_level_values(0).unique()) == ["error_pct", "entropy_auc_in",
                                                               "entropy_auc_out"]
    assert wide.loc["MAP", ("error_pct", "published")] == pytest.approx(13.58)
    assert wide.loc["MAP", ("error_pct", "difference")] == pytest.approx(1.0 - 13.58)
    with pytest.raises(ValueError, match="compare_with_published"):
        pub.side_by_side(ours())
