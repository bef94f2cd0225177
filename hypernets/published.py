"""The papers' published numbers, and tables that put ours beside them.

The numbers live in one small CSV shipped with the package, ``hypernets/published.csv``, one
row per number: ``table, method, metric, value, source, claim``. ``table`` names the paper's
table (see :data:`TABLES`), ``method`` is a short name of :mod:`hypernets.methods.registry` where
the method exists here (every published method now does; the architecture
table's rows are ``bbh_single``, ``bbh_layerwise`` and ``bbh_sliced``), and ``metric`` is one of
:data:`METRICS`. ``source`` cites the paper (with its arXiv id) and the table or section.

Where a paper's numbers could not be read in any retrieved text of it (HyperGAN's and the
Bayesian Hypernetworks' tables), the table holds the paper's qualitative claim instead: one row
of metric ``claim`` with ``value`` empty and ``claim`` the paper's words, quoted verbatim. The
``claim`` column is optional in the file: the rows with a number leave it off (or empty). Every
row has exactly one of a number and a quoted claim.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from importlib import resources

import pandas as pd

from hypernets.methods.registry import METHODS
from hypernets.methods.registry import method_label as registry_method_label

#: The published tables: name -> what it is.
TABLES: dict[str, str] = {
    "mnist": "Bayes by Hypernet's MNIST table (LeNet, notMNIST outliers)",
    "mnist_hypernet_architecture": "Bayes by Hypernet's MNIST table of hypernetwork architectures",
    "cifar5": "Bayes by Hypernet's CIFAR-5 table (ResNet, CIFAR classes 5-9 as outliers)",
    "hypergan_mnist": "HyperGAN's MNIST accuracy (Ratzlaff & Li 2019); the paper's claim only",
    "hypergan_cifar10": "HyperGAN's CIFAR-10 accuracy (Ratzlaff & Li 2019); the paper's claim only",
    "hypergan_anomaly": "HyperGAN's out-of-distribution detection (Ratzlaff & Li 2019); the "
                        "paper's claim only",
    "hypergan_adversarial": "HyperGAN's adversarial-example detection (Ratzlaff & Li 2019); the "
                            "paper's claim only",
    "bhn_generalisation": "Bayesian Hypernetworks' generalisation (regularisation) table (Krueger "
                          "et al. 2017); the paper's claim only",
    "bhn_anomaly": "Bayesian Hypernetworks' anomaly-detection table (Krueger et al. 2017); the "
                   "paper's claim only",
}

#: The metrics of the published tables: name -> meaning.
METRICS: dict[str, str] = {
    "error_pct": "test error in %",
    "entropy_auc_in": "area under the ECDF of the predictive entropy on the test set "
                      "(hypernets.metrics.entropy_auc; high is good)",
    "entropy_auc_out": "area under the ECDF of the predictive entropy on the outliers "
                       "(hypernets.metrics.entropy_auc; low is good)",
    "train_time_s": "training time in seconds (the paper's GPU and epochs, not ours)",
    "claim": "the paper's qualitative claim, quoted verbatim in the claim column: no number of "
             "this table was found in the paper's retrieved text, so the value is empty",
}

#: Labels of the published methods that are not in the registry.
EXTRA_LABELS: dict[str, str] = {
    "bbh_single": "Bayes by Hypernet, single hypernetwork",
    "bbh_layerwise": "Bayes by Hypernet, layer-wise hypernetworks",
    "bbh_sliced": "Bayes by Hypernet, sliced layer-wise hypernetworks",
    "bbh_kl_joint": "Bayes by Hypernet, joint KL estimate",
    "bbh_kl_per_weight": "Bayes by Hypernet, per-weight KL estimate",
    **{f"bbh_{'ind' if independent else ''}noise{dim}":
       f"Bayes by Hypernet, noise {dim}, {'independent' if independent else 'shared'}"
       for dim in (1, 8, 64) for independent in (False, True) if (dim, independent) != (8, False)},
}

_COLUMNS = ["table", "method", "metric", "value", "source", "claim"]

#: Metrics shown beside the paper's without a difference: they measure the setup (hardware,
#: epochs) as much as the method.
NO_DIFFERENCE = frozenset({"train_time_s"})


def _validate(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the file's rows: the columns, a source each, and a number or a quoted claim each.

    Returns the frame with ``claim`` as text (``""`` on the rows with a number).
    """
    if list(frame.columns) != _COLUMNS:
        raise ValueError(f"hypernets/published.csv must have the columns {_COLUMNS}, "
                         f"found {list(frame.columns)}")
    frame = frame.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="raise").astype(float)
    frame["claim"] = frame["claim"].fillna("").astype(str).str.strip()
    has_value = frame["value"].notna()
    has_claim = frame["claim"] != ""
    no_source = frame["source"].isna() | (frame["source"].astype(str).str.strip() == "")
    checks = {
        "rows with both a value and a claim": has_value & has_claim,
        "rows with neither a value nor a claim": ~has_value & ~has_claim,
        "rows whose metric is 'claim' without a claim, or a claim under another metric":
            has_claim != (frame["metric"] == "claim"),
        "rows without a source": no_source,
    }
    problems = [f"{what}: {list(frame.index[bad])}" for what, bad in checks.items() if bad.any()]
    if problems:
        raise ValueError("hypernets/published.csv is malformed: " + "; ".join(problems))
    return frame


@functools.lru_cache(maxsize=1)
def _read_all() -> pd.DataFrame:
    resource = resources.files("hypernets") / "published.csv"
    with resource.open("r", encoding="utf-8") as handle:
        frame = pd.read_csv(handle)
    return _validate(frame)


def method_label(method: str) -> str:
    """Label of a published or registered method name (e.g. ``mnf``, ``bbh``)."""
    if method in EXTRA_LABELS:
        return EXTRA_LABELS[method]
    if method in METHODS:
        return registry_method_label(method)
    return method


def published(table: str) -> pd.DataFrame:
    """The published numbers of ``table``: columns ``method, metric, value, source, claim``.

    Rows keep the file's order (methods in the paper's column order). ``claim`` is ``""`` on the
    rows with a number; on a claim row (metric ``claim``) ``value`` is NaN and ``claim`` quotes
    the paper.
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {sorted(TABLES)}, got {table!r}")
    frame = _read_all()
    rows = frame[frame["table"] == table].drop(columns="table").reset_index(drop=True)
    return rows.copy()


def quoted_claims(tables: Sequence[str]) -> str:
    """The papers' quoted claims of ``tables`` as markdown: one block quote per claim, with its
    source, for the tables whose numbers could not be found (metric ``claim``)."""
    blocks = []
    for table in tables:
        rows = published(table)
        claims = rows[rows["metric"] == "claim"]
        if claims.empty:
            raise ValueError(f"table {table!r} has published numbers, not a quoted claim")
        blocks += [f"> {row.claim}\n>\n> — {row.source} ({method_label(row.method)})"
                   for row in claims.itertuples()]
    return "\n\n".join(blocks)


def compare_with_published(ours: pd.DataFrame, table: str) -> pd.DataFrame:
    """Our numbers beside the published ones of ``table``, with the difference.

    ``ours`` has one row per method: a ``method`` column with the short names used in
    ``published.csv`` (registry names such as ``map``, ``bbh``) and one column per metric
    (``error_pct``, ``entropy_auc_in``, ...). Columns that are not metrics of the table (NLL,
    ECE, ...) are ignored: there is nothing published to compare them with.

    Returns one row per (method, metric) for every metric of the table and every method that
    is either published or ours: columns ``method, label, metric, published, ours,
    difference`` (ours minus published; NaN where either side is missing, e.g. a method the
    paper did not run) and ``source``. Our methods come first in their order, then the
    published methods we did not run.
    """
    if not isinstance(ours, pd.DataFrame):
        raise TypeError(f"ours must be a pandas DataFrame, got {type(ours).__name__}")
    if "method" not in ours.columns:
        raise ValueError(f"ours needs a 'method' column with one row per method; its columns are "
                         f"{list(ours.columns)}")
    if ours["method"].duplicated().any():
        duplicated = sorted(set(ours.loc[ours["method"].duplicated(), "method"]))
        raise ValueError(f"ours must have one row per method; repeated: {duplicated}")
    theirs = published(table)
    theirs = theirs[theirs["metric"] != "claim"]
    if theirs.empty:
        raise ValueError(f"table {table!r} holds only the paper's quoted claim, no published "
                         "number; there is nothing to compare ours with (see published(table))")
    metrics = list(dict.fromkeys(theirs["metric"]))
    shared = [metric for metric in metrics if metric in ours.columns]
    if not shared:
        raise ValueError(f"ours has none of the metrics of table {table!r} ({metrics}); its "
                         f"columns are {list(ours.columns)}")
    source = theirs["source"].iloc[0]
    our_long = ours.melt(id_vars="method", value_vars=shared, var_name="metric", value_name="ours")
    our_long["ours"] = pd.to_numeric(our_long["ours"], errors="raise").astype(float)
    methods = list(dict.fromkeys([*ours["method"], *theirs["method"]]))
    grid = pd.DataFrame([(method, metric) for method in methods for metric in metrics],
                        columns=["method", "metric"])
    merged = (grid
              .merge(theirs.rename(columns={"value": "published"})
                     .drop(columns=["source", "claim"]),
                     on=["method", "metric"], how="left")
              .merge(our_long, on=["method", "metric"], how="left"))
    merged["published"] = merged["published"].astype(float)
    merged["difference"] = merged["ours"] - merged["published"]
    # A time measured on other hardware and for other epochs is no difference of the method.
    merged.loc[merged["metric"].isin(NO_DIFFERENCE), "difference"] = float("nan")
    merged.insert(1, "label", merged["method"].map(method_label))
    merged["source"] = source
    return merged[["method", "label", "metric", "published", "ours", "difference", "source"]]


def side_by_side(comparison: pd.DataFrame) -> pd.DataFrame:
    """A :func:`compare_with_published` table pivoted for reading: one row per method.

    Columns are (metric, ``published`` / ``ours`` / ``difference``), metrics and methods in
    the comparison's order; the index is the method label.
    """
    missing = {"label", "metric", "published", "ours", "difference"} - set(comparison.columns)
    if missing:
        raise ValueError(f"comparison lacks the columns {sorted(missing)}; pass the output of "
                         "compare_with_published")
    labels = list(dict.fromkeys(comparison["label"]))
    metrics = list(dict.fromkeys(comparison["metric"]))
    wide = comparison.pivot(index="label", columns="metric",
                            values=["published", "ours", "difference"])
    wide = wide.swaplevel(0, 1, axis=1)
    wide = wide.reindex(index=labels,
                        columns=pd.MultiIndex.from_product([metrics, ["published", "ours", "difference"]]))
    wide.index.name = "method"
    return wide
