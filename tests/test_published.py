"""The published numbers file and the tables that compare ours with it."""

import fnmatch
import math
import re

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
ARCHITECTURE = {  # single hypernet, layer-wise, sliced layer-wise
    "error_pct": [1.1, 0.73, 1.7],
    "entropy_auc_in": [0.89, 0.98, 0.93],
    "entropy_auc_out": [0.48, 0.54, 0.55],
}


# HyperGAN's and the Bayesian Hypernetworks' tables: no number of theirs was found in any
# retrieved text of the papers, so each holds the paper's claim, quoted verbatim.
HYPERGAN_ABSTRACT = "Ratzlaff & Li 2019, arXiv:1901.11058 (ICML 2019, PMLR 97:5361-5369), abstract"
ACCURACY_CLAIM = ("HyperGAN can learn to generate parameters which solve the MNIST and CIFAR-10 "
                  "datasets with competitive performance to fully supervised learning")
CLAIMS = {  # table -> (method, source, claim)
    "hypergan_mnist": ("hypergan", HYPERGAN_ABSTRACT, ACCURACY_CLAIM),
    "hypergan_cifar10": ("hypergan", HYPERGAN_ABSTRACT, ACCURACY_CLAIM),
    "hypergan_anomaly": (
        "hypergan", HYPERGAN_ABSTRACT,
        ("We also show that HyperGAN can also provide better uncertainty estimates than standard "
         "ensembles. This is evidenced by the ability of HyperGAN-generated ensembles to detect out "
         "of distribution data as well as adversarial examples.")),
    "hypergan_adversarial": (
        "hypergan", "Ratzlaff & Li 2019, arXiv:1901.11058 v1, concluding section",
        ("We have also shown the uncertainty estimates from the generated ensembles are capable of "
         "detecting out-of-distribution data and adversarial examples.")),
    "bhn_generalisation": (
        "bhn", "Krueger et al. 2017, arXiv:1710.04759 (revised version), abstract",
        ("In practice, Bayesian hypernets can provide a better defense against adversarial examples "
         "than dropout, and also exhibit competitive performance on a suite of tasks which evaluate "
         "model uncertainty, including regularization, active learning, and anomaly detection.")),
    "bhn_anomaly": (
        "bhn", "Krueger et al. 2017, arXiv:1710.04759 v1, abstract",
        ("We demonstrate these qualitative advantages of Bayesian hypernets, which also achieve "
         "competitive performance on a suite of tasks that demonstrate the advantage of estimating "
         "model uncertainty, including active learning and anomaly detection.")),
}


def as_dict(frame):
    return {(row.method, row.metric): row.value for row in frame.itertuples()}


@pytest.mark.parametrize("table, methods, expected", [
    ("mnist", METHOD_ORDER, MNIST),
    ("cifar5", METHOD_ORDER, CIFAR5),
    ("mnist_hypernet_architecture", ["bbh_single", "bbh_layerwise", "bbh_sliced"], ARCHITECTURE),
])
def test_published_tables_hold_the_papers_numbers(table, methods, expected):
    frame = pub.published(table)
    assert list(frame.columns) == ["method", "metric", "value", "source", "claim"]
    assert (frame["claim"] == "").all()  # numbers, no claims
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
    numbers = frame[frame["metric"] != "claim"]
    assert numbers["value"].map(lambda v: math.isfinite(v) and v >= 0).all()
    assert not frame.duplicated(["table", "method", "metric"]).any()
    assert len(frame) == 24 + 18 + 9 + len(CLAIMS)


def test_every_row_has_a_number_or_a_quoted_claim_and_cites_an_arxiv_paper():
    frame = pub._read_all()
    has_number = frame["value"].map(math.isfinite)
    has_claim = frame["claim"].str.len() > 0
    assert (has_number != has_claim).all()  # exactly one of the two
    assert (has_claim == (frame["metric"] == "claim")).all()
    assert frame["source"].map(lambda s: re.search(r"arXiv:\d{4}\.\d{4,5}\b", s) is not None).all()
    # A claim is the paper's words (a sentence of prose), never a number dressed as text.
    assert frame.loc[has_claim, "claim"].map(lambda c: len(c.split()) >= 10).all()


@pytest.mark.parametrize("table", sorted(CLAIMS))
def test_claim_tables_quote_the_papers(table):
    method, source, claim = CLAIMS[table]
    frame = pub.published(table)
    assert list(frame.columns) == ["method", "metric", "value", "source", "claim"]
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["method"], row["metric"], row["source"], row["claim"]) == (method, "claim", source,
                                                                          claim)
    assert math.isnan(row["value"])
    assert method in METHODS
    assert "claim only" in pub.TABLES[table]  # the table's description says it has no numbers


def test_the_papers_numbers_are_unchanged_by_the_claims():
    # The claim rows leave the claim column off the numeric rows; they still read as before.
    frame = pub._read_all()
    pawlowski = frame[frame["source"].str.startswith("Pawlowski et al. 2017, arXiv:1711.01297")]
    assert len(pawlowski) == 24 + 18 + 9
    assert set(pawlowski["table"]) == {"mnist", "cifar5", "mnist_hypernet_architecture"}
    assert (pawlowski["claim"] == "").all()


def good_rows():
    return pd.DataFrame({
        "table": ["mnist", "hypergan_mnist"],
        "method": ["map", "hypergan"],
        "metric": ["error_pct", "claim"],
        "value": [0.8, float("nan")],
        "source": ["Pawlowski et al. 2017, arXiv:1711.01297, MNIST table",
                   "Ratzlaff & Li 2019, arXiv:1901.11058, abstract"],
        "claim": [float("nan"), "a quoted claim of the paper, in its own words, ten or more"],
    })


def test_validate_accepts_a_number_or_a_claim():
    frame = pub._validate(good_rows())
    assert list(frame["claim"]) == [
        "", "a quoted claim of the paper, in its own words, ten or more"]


@pytest.mark.parametrize("change, message", [
    ({"value": [0.8, 1.0]}, "both a value and a claim: \\[1\\]"),
    ({"claim": [float("nan"), "  "]}, "neither a value nor a claim: \\[1\\]"),
    ({"metric": ["error_pct", "accuracy_pct"]}, "metric is 'claim' without a claim.*\\[1\\]"),
    ({"source": ["Pawlowski et al. 2017, arXiv:1711.01297, MNIST table", float("nan")]},
     "without a source: \\[1\\]"),
])
def test_validate_refuses_malformed_rows(change, message):
    rows = good_rows()
    for column, values in change.items():
        rows[column] = values
    with pytest.raises(ValueError, match=message):
        pub._validate(rows)


def test_validate_refuses_other_columns():
    with pytest.raises(ValueError, match="must have the columns"):
        pub._validate(good_rows().drop(columns="claim"))


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


def test_times_measured_on_other_hardware_get_no_difference():
    table = pub.compare_with_published(ours().assign(train_time_s=[10.0, 20.0, 30.0]), "mnist")
    times = table[table["metric"] == "train_time_s"].set_index("method")
    assert times.loc["map", "ours"] == 20.0 and times.loc["map", "published"] > 0
    assert times["difference"].isna().all()


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


@pytest.mark.parametrize("table", sorted(CLAIMS))
def test_compare_with_published_refuses_a_claim_only_table(table):
    ours_ = pd.DataFrame({"method": ["hypergan", "bhn"], "accuracy_pct": [99.0, 98.0],
                          "claim": [1.0, 2.0]})
    with pytest.raises(ValueError, match=f"table '{table}' holds only the paper's quoted claim"):
        pub.compare_with_published(ours_, table)


def test_compare_with_published_leaves_the_claim_column_out():
    table = pub.compare_with_published(ours(), "mnist")
    assert "claim" not in table.columns


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


def test_quoted_claims_render_each_claim_with_its_source():
    text = pub.quoted_claims(["hypergan_anomaly", "bhn_anomaly"])
    blocks = text.split("\n\n")
    assert len(blocks) == 2
    assert blocks[0].startswith("> " + CLAIMS["hypergan_anomaly"][2])
    assert blocks[0].endswith(f"— {CLAIMS['hypergan_anomaly'][1]} (HyperGAN)")
    assert "(Bayesian Hypernetwork)" in blocks[1]
    with pytest.raises(ValueError, match="has published numbers"):
        pub.quoted_claims(["mnist"])
