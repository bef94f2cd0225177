"""Evaluating trained methods: seeded predictions over a data set and the tables built on them.

Shared by every chapter: the predictive of a run's sampled nets on a whole data set, Bayes by
Hypernet's classification row, the detection table of several uncertainty scores, and the
empirical CDFs of the predictive entropy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from torch import Tensor

from hypernets import metrics
from hypernets.methods.base import Method
from hypernets.runs import TrainedMethod
from hypernets.seeding import seeded
from hypernets.training import predict, tensor_digest
from hypernets.validation import check_int

#: The Bayesian Hypernetworks scores: table name -> key of :data:`hypernets.metrics.UNCERTAINTY_SCORES`.
#: ``std`` is scored by the variance of the class probabilities across the sampled nets: the
#: square root is monotone, so every threshold metric (AUROC, AUPR, FPR at 95% TPR) of the
#: standard deviation equals that of the variance. ``max_prob`` is 1 - max probability, so that
#: higher means more uncertain for every score.
OOD_SCORES: dict[str, str] = {"entropy": "entropy", "bald": "bald", "max_prob": "max_prob",
                              "std": "variance"}

OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def predict_probs(method: Method | TrainedMethod, x: Tensor, n_samples: int, *,
                  batch_size: int = 1000, seed: int = 0) -> Tensor:
    """Class probabilities of sampled nets on all of ``x``: ``[S', N, C]`` on the CPU.

    ``S' = method.n_distinct_nets(n_samples)``: MAP gives one net and an ensemble at most its
    members, rather than copies. The nets are drawn with torch's RNG seeded by ``seed``
    (:func:`~hypernets.seeding.seeded`), so they do not depend on what ran before.
    """
    if isinstance(method, TrainedMethod):
        method = method.method
    n_nets = method.n_distinct_nets(n_samples)
    with seeded(seed, method.device):
        return predict(method, x, n_nets, batch_size=batch_size)


def classification_row(probs_in: Tensor, labels: Tensor, probs_out: Tensor) -> dict[str, float]:
    """Bayes by Hypernet's numbers plus NLL, ECE and Brier from predictions on test and outlier sets.

    ``error_pct`` is the error of the mean predictive in %, ``entropy_auc_in``/``_out`` the
    areas under the ECDF of the predictive entropy (:func:`hypernets.metrics.entropy_auc`).
    """
    scores = metrics.classification_metrics(probs_in, labels)
    return {
        "error_pct": 100.0 * (1.0 - scores["accuracy"]),
        "entropy_auc_in": metrics.entropy_auc(probs_in),
        "entropy_auc_out": metrics.entropy_auc(probs_out),
        "nll": scores["nll"],
        "ece": scores["ece"],
        "brier": scores["brier"],
    }


def ood_table(probs_in: Tensor, probs_out: Tensor,
              scores: Mapping[str, str] = OOD_SCORES) -> pd.DataFrame:
    """Detection metrics of each score (outliers positive): columns ``score`` and :data:`OOD_METRICS`.

    ``scores`` maps table names to keys of :data:`hypernets.metrics.UNCERTAINTY_SCORES`.
    """
    rows = [{"score": name, **metrics.ood_metrics_from_probs(probs_in, probs_out, score=key)}
            for name, key in scores.items()]
    return pd.DataFrame(rows)


def entropy_ecdf_table(probs: Mapping[str, Tensor], *, n_points: int = 200,
                       **columns) -> pd.DataFrame:
    """Empirical CDFs of the predictive entropy of each data part (e.g. ``in``/``out``).

    ``probs`` maps a part's name to its probabilities ``[S, N, C]``; ``columns`` (such as
    ``method`` and ``label``) are added to every row. Columns: ``*columns, data, entropy,
    cdf`` on ``n_points`` entropies in [0, log C] (:func:`hypernets.metrics.entropy_ecdf`).
    """
    parts = []
    for part, p in probs.items():
        grid, cdf = metrics.entropy_ecdf(p, n_points=n_points)
        parts.append(pd.DataFrame({**columns, "data": part, "entropy": grid.numpy(),
                                   "cdf": cdf.numpy()}))
    return pd.concat(parts, ignore_index=True)


#: Versions of the evaluations here that a run's record keeps (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`; ``tests/test_records.py`` pins the code).
EVALUATION_VERSIONS = {"reliability": 1}


def reliability_table(trained: Mapping[str, TrainedMethod], x: Tensor, labels: Tensor, *,
                      n_samples: int, n_bins: int = 15, batch_size: int = 1000,
                      seed: int = 0) -> pd.DataFrame:
    """Reliability-diagram bins of every run's mean predictive (:func:`metrics.reliability_diagram`,
    15 equal-width bins as the ECE), with ``method`` and ``label`` columns; kept in a run's
    record where it has one."""
    arguments = {"x": tensor_digest(x)["sha256"], "labels": tensor_digest(labels)["sha256"],
                 "n_samples": n_samples, "n_bins": n_bins, "batch_size": batch_size, "seed": seed}
    frames = []
    for name, run in trained.items():
        def compute(run=run) -> list[dict]:
            probs = predict_probs(run, x, n_samples, batch_size=batch_size, seed=seed)
            return metrics.reliability_diagram(probs, labels, n_bins=n_bins).to_dict("records")

        bins = run.evaluated("reliability", arguments, EVALUATION_VERSIONS["reliability"], compute)
        frames.append(pd.DataFrame(bins).assign(method=name, label=run.label))
    return pd.concat(frames, ignore_index=True)


def training_curves(trained: Mapping[str, TrainedMethod]) -> pd.DataFrame:
    """One row per run and epoch: ``method, label, epoch, loss`` and the per-epoch evaluation
    (``test_error_pct`` for runs trained with :class:`~hypernets.runs.TestError`)."""
    rows = [{"method": name, "label": run.label, **record}
            for name, run in trained.items() for record in run.history]
    columns = ["method", "label", "epoch", "loss"]
    table = pd.DataFrame(rows)
    extra = [c for c in ("test_error_pct",) if c in table.columns]
    return table[columns + extra] if rows else pd.DataFrame(columns=columns)


# ---------------------------------------------------------------------------------------------
# Seeds and verdicts
# ---------------------------------------------------------------------------------------------

#: Suffix of a metric's standard deviation over seeds in a :func:`seed_summary` table.
SD_SUFFIX = "_sd"
#: A verdict's interval: the difference of the means +- this many standard errors (about 95%).
INTERVAL_SE = 2.0


def seed_summary(per_seed: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and standard deviation over seeds of each metric, one row per method.

    ``per_seed`` has a ``method``, a ``label`` and a ``seed`` column and the ``metrics``; the
    result has ``method, label, n_seeds``, each metric (the mean) and ``<metric>_sd`` (the
    sample standard deviation, NaN for one seed), methods in their first appearance's order.
    """
    missing = [column for column in ("method", "label", "seed", *metrics)
               if column not in per_seed.columns]
    if missing:
        raise ValueError(f"per_seed lacks the column(s) {missing}")
    if per_seed.duplicated(["method", "seed"]).any():
        raise ValueError("per_seed has a method twice for one seed")
    grouped = per_seed.groupby("method", sort=False)
    table = grouped[list(metrics)].mean()
    spread = grouped[list(metrics)].std(ddof=1).add_suffix(SD_SUFFIX)
    summary = pd.concat([grouped["label"].first(), grouped["seed"].nunique().rename("n_seeds"),
                         table, spread], axis=1)
    order = [m for m in metrics for m in (m, m + SD_SUFFIX)]
    return summary[["label", "n_seeds", *order]].reset_index()


def _difference(summary: pd.DataFrame, metric: str, a: str, b: str) -> tuple[float, float, int]:
    """mean_a - mean_b, its standard error from the seeds' spread, and the fewest seeds."""
    rows = summary.set_index("method")
    missing = [name for name in (a, b) if name not in rows.index]
    if missing:
        raise ValueError(f"the summary has no row for {missing}; it has {list(rows.index)}")
    n = [int(rows.loc[name, "n_seeds"]) for name in (a, b)]
    sd = [float(rows.loc[name, metric + SD_SUFFIX]) for name in (a, b)]
    se = float((sd[0] ** 2 / n[0] + sd[1] ** 2 / n[1]) ** 0.5) if min(n) > 1 else float("nan")
    return float(rows.loc[a, metric] - rows.loc[b, metric]), se, min(n)


def _evidence(metric: str, a: str, b: str, d: float, se: float, n: int) -> str:
    """The numbers a verdict compares: the difference of the means and its interval."""
    if n < 2:
        return f"{metric} {a} − {b} = {d:+.3f} from one seed: no spread to judge by"
    return f"{metric} {a} − {b} = {d:+.3f} ± {INTERVAL_SE * se:.3f} ({n} seeds)"


def ordering_verdict(summary: pd.DataFrame, claim: str, metric: str, a: str, b: str, *,
                     lower: bool) -> dict[str, Any]:
    """Is ``a``'s ``metric`` lower (``lower=True``) or higher than ``b``'s, beyond the seeds' spread?

    The interval is the difference of the means +- :data:`INTERVAL_SE` standard errors. Seen
    (True) when it lies wholly on the claimed side of 0, contradicted (False) when wholly on the
    other, undecided (None) when it holds 0 or there is one seed. Returns ``claim, seen,
    evidence, rule``.
    """
    d, se, n = _difference(summary, metric, a, b)
    signed = -d if lower else d  # > 0 where the claim holds
    rule = (f"{a} {'<' if lower else '>'} {b} in {metric}: the difference of the means ± "
            f"{INTERVAL_SE:g} standard errors over {n} seeds excludes 0")
    if n < 2:
        return {"claim": claim, "seen": None, "rule": rule,
                "evidence": _evidence(metric, a, b, d, se, n)}
    low, high = signed - INTERVAL_SE * se, signed + INTERVAL_SE * se
    seen = True if low > 0 else False if high < 0 else None
    return {"claim": claim, "seen": seen, "rule": rule,
            "evidence": _evidence(metric, a, b, d, se, n)}


def equivalence_verdict(summary: pd.DataFrame, claim: str, metric: str, a: str, b: str, *,
                        tolerance: float) -> dict[str, Any]:
    """Is ``a``'s ``metric`` within ``tolerance`` of ``b``'s, beyond the seeds' spread?

    Seen when the interval (difference +- :data:`INTERVAL_SE` standard errors) lies inside
    ±``tolerance``, contradicted when it lies wholly outside, undecided otherwise or with one
    seed.
    """
    d, se, n = _difference(summary, metric, a, b)
    rule = (f"|{a} − {b}| in {metric} within {tolerance:g}: the difference of the means ± "
            f"{INTERVAL_SE:g} standard errors over {n} seeds inside ±{tolerance:g}")
    if n < 2:
        return {"claim": claim, "seen": None, "rule": rule,
                "evidence": _evidence(metric, a, b, d, se, n)}
    low, high = d - INTERVAL_SE * se, d + INTERVAL_SE * se
    seen = (True if -tolerance <= low and high <= tolerance
            else False if high < -tolerance or low > tolerance else None)
    return {"claim": claim, "seen": seen, "rule": rule,
            "evidence": _evidence(metric, a, b, d, se, n)}


def noninferiority_verdict(summary: pd.DataFrame, claim: str, metric: str, a: str, b: str, *,
                           tolerance: float, lower: bool) -> dict[str, Any]:
    """Is ``a`` at least as good as ``b`` in ``metric``, up to ``tolerance``, beyond the seeds' spread?

    Lower is better with ``lower=True``. Seen when the interval (difference of the means ±
    :data:`INTERVAL_SE` standard errors) lies wholly on the good side of ``tolerance`` (below
    ``+tolerance`` for lower-is-better), contradicted when wholly beyond it, undecided
    otherwise or with one seed: "competitive with", where being much better also counts.
    """
    d, se, n = _difference(summary, metric, a, b)
    signed = -d if lower else d  # > -tolerance where the claim holds
    rule = (f"{a} {'≤' if lower else '≥'} {b} {'+' if lower else '−'} {tolerance:g} in {metric}: "
            f"the difference of the means ± {INTERVAL_SE:g} standard errors over {n} seeds "
            f"lies wholly on that side")
    evidence = _evidence(metric, a, b, d, se, n)
    if n < 2:
        return {"claim": claim, "seen": None, "rule": rule, "evidence": evidence}
    return interval_verdict(claim, signed - INTERVAL_SE * se, signed + INTERVAL_SE * se,
                            rule=rule, evidence=evidence, margin=tolerance)


def interval_verdict(claim: str, low: float, high: float, *, rule: str, evidence: str,
                     margin: float = 0.0) -> dict[str, Any]:
    """A claim that a difference exceeds ``-margin``, judged on an interval of it.

    Seen (True) when the interval ``[low, high]`` lies wholly above ``-margin``, contradicted
    (False) when wholly below, undecided (None) when it holds ``-margin`` or is not finite.
    ``margin`` 0 is "better than"; a positive margin is "at least as good, within ``margin``".
    Returns ``claim, seen, evidence, rule`` like :func:`ordering_verdict`.
    """
    seen = (None if not (math.isfinite(low) and math.isfinite(high))
            else True if low > -margin else False if high < -margin else None)
    return {"claim": claim, "seen": seen, "rule": rule, "evidence": evidence}


def paired_auroc_verdict(claim: str, scores_a: tuple, scores_b: tuple, *, names: tuple[str, str],
                         what: str, margin: float = 0.0, n_resamples: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """Does ``a`` detect better than ``b`` (less ``margin``)? A paired bootstrap of AUROCs.

    ``scores_a`` and ``scores_b`` are ``(negatives, positives)`` score arrays of the two on the
    same inputs (e.g. a test set and its outliers), so every resample draws the same inputs for
    both: the 95% percentile interval of AUROC(a) - AUROC(b)
    (:func:`hypernets.metrics.auroc_difference_interval`) decides by :func:`interval_verdict`.
    ``names`` label a and b and ``what`` the comparison (e.g. ``"entropy, notMNIST"``) in the
    rule and the evidence.
    """
    difference = (metrics.ood_metrics(*scores_a)["auroc"] - metrics.ood_metrics(*scores_b)["auroc"])
    low, high = metrics.auroc_difference_interval(scores_a, scores_b, n_resamples=n_resamples,
                                                  seed=seed)
    relation = f"> {names[1]}" if margin == 0 else f"≥ {names[1]} − {margin:g}"
    rule = (f"{names[0]} {relation} in AUROC ({what}): the 95% paired-bootstrap interval of the "
            f"difference ({n_resamples} resamples) lies above {-margin:g}")
    evidence = (f"AUROC {names[0]} − {names[1]} = {difference:+.3f}, 95% interval "
                f"[{low:+.3f}, {high:+.3f}]")
    return interval_verdict(claim, low, high, rule=rule, evidence=evidence, margin=margin)


def accuracy_and_outlier_claims(summary: pd.DataFrame, method: str, baselines: Sequence[str], *,
                                error_tolerance: float, outliers: str) -> pd.DataFrame:
    """Bayes by Hypernet's claims against each baseline of a :func:`seed_summary`.

    "As accurate as b": ``error_pct`` within ``error_tolerance`` percentage points
    (:func:`equivalence_verdict`). "Less confident than b on ``outliers``": a lower
    ``entropy_auc_out`` (:func:`ordering_verdict`), which counts only where the accuracy claim
    is not contradicted: a net collapsed to chance is uncertain everywhere, outliers included.
    Baselines not in the summary are left out.
    """
    present = [b for b in baselines if b in set(summary["method"])]
    accurate = {b: equivalence_verdict(summary, f"as accurate as {b}", "error_pct", method, b,
                                       tolerance=error_tolerance) for b in present}
    rows = list(accurate.values())
    for b in present:
        row = ordering_verdict(summary, f"less confident than {b} on {outliers}, at its accuracy",
                               "entropy_auc_out", method, b, lower=True)
        if accurate[b]["seen"] is False:
            row["seen"] = False
            row["evidence"] += "; but it is less accurate (see above)"
        rows.append(row)
    return pd.DataFrame(rows)


def prose_list(items: Sequence[str]) -> str:
    """``items`` joined for a sentence: ``"a"``, ``"a and b"``, ``"a, b and c"`` (``""`` for none)."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def count_of(n: int, noun: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``: ``n`` and ``noun``, plural unless ``n`` is 1."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _mean_sd(row: pd.Series, metric: str, digits: int, unit: str) -> str:
    sd = row[metric + SD_SUFFIX]
    return f"{row[metric]:.{digits}f}" + ("" if pd.isna(sd) else f" ± {sd:.{digits}f}") + unit


def ranking_prose(summary: pd.DataFrame, metric: str, *, paper: Mapping[str, float] | None = None,
                  digits: int = 2, unit: str = "", ascending: bool = True) -> str:
    """The rows of a :func:`seed_summary` ordered by ``metric`` for a sentence: ``"A 0.54 ± 0.04 %
    (paper 0.49 %), B 0.71 ± 0.05 % and C ..."``, with ``paper``'s value (method -> number)
    where it has one; no ± with one seed."""
    if metric not in summary.columns:
        raise ValueError(f"metric must be a column of the summary, got {metric!r}; it has "
                         f"{list(summary.columns)}")
    paper = dict(paper or {})
    ordered = summary.sort_values(metric, ascending=ascending)
    return prose_list([
        f"{row['label']} {_mean_sd(row, metric, digits, unit)}"
        + (f" (paper {paper[row['method']]:g}{unit})" if row["method"] in paper else "")
        for _, row in ordered.iterrows()])


def paper_values(published: pd.DataFrame, metric: str) -> dict[str, float]:
    """Method -> published value of ``metric`` from rows of ``hypernets.published.published``."""
    rows = published[published["metric"] == metric]
    return dict(zip(rows["method"], rows["value"].astype(float)))


def schedule_sentence(epochs: int, paper_epochs: int, n_seeds: int) -> str:
    """The first sentence of a conclusion: the runs' epochs against the paper's, and the seeds."""
    check_int("epochs", epochs, minimum=1)
    check_int("n_seeds", n_seeds, minimum=1)
    return (f"*Schedule*: every run trained {count_of(epochs, 'epoch')}, the paper's {paper_epochs}; "
            f"each number is the mean ± sd over {count_of(n_seeds, 'training seed')}"
            + (" (with one seed there is no spread and every verdict is undecided)" if n_seeds < 2 else "")
            + ", judged by the rules stated with the claims above.")


def table_paragraphs(summary: pd.DataFrame, claims: pd.DataFrame, published: pd.DataFrame, *,
                     epochs: int, paper_epochs: int, outliers: str,
                     method: str = "bbh") -> list[str]:
    """The first paragraphs of a classification table's conclusion, as Markdown.

    The schedule against the paper's, the methods of ``summary`` (a :func:`seed_summary`)
    ranked by test error and by the entropy AUC on ``outliers``, each with ``published``'s
    value (rows of ``hypernets.published.published``), and ``method``'s claims grouped by
    verdict (:func:`accuracy_and_outlier_claims`).
    """
    n_seeds = int(summary["n_seeds"].min())
    labels = summary.set_index("method")["label"]
    accuracy = ("**Accuracy.** Test error of the mean predictive, lowest first: "
                + ranking_prose(summary, "error_pct", paper=paper_values(published, "error_pct"),
                                unit=" %") + ".")
    if method in labels.index:
        rank = list(summary.sort_values("error_pct")["method"]).index(method) + 1
        accuracy += f" {labels[method]} ranks {rank} of {len(summary)}."
    return [
        schedule_sentence(epochs, paper_epochs, n_seeds),
        accuracy,
        f"**Uncertainty on {outliers}.** Entropy AUC there, lowest (most uncertain) first: "
        + ranking_prose(summary, "entropy_auc_out", paper=paper_values(published, "entropy_auc_out"))
        + f". The paper's claims for {labels.get(method, method)}: {verdict_prose(claims)}."]


VERDICTS = {True: "seen", False: "not seen", None: "undecided"}


def verdict_of(seen: Any) -> str:
    """The verdict of a claim's ``seen`` (True, False, or None / NaN for undecided)."""
    return VERDICTS[None if seen is None or pd.isna(seen) else bool(seen)]


def verdict_prose(claims: pd.DataFrame, *, counted: Sequence[str] = ()) -> str:
    """Claims (``claim, seen``) grouped by verdict for a sentence: ``"seen: *a* and *b*; not
    seen: *c*"``; the verdicts in ``counted`` (e.g. ``["not seen"]``) give their number of claims
    instead of the list; ``"none judged"`` without claims (e.g. a run without its baselines)."""
    unknown = set(counted) - set(VERDICTS.values())
    if unknown:
        raise ValueError(f"counted must name verdicts of {list(VERDICTS.values())}, got {sorted(unknown)}")
    groups: dict[str, list[str]] = {verdict: [] for verdict in VERDICTS.values()}
    for row in claims.itertuples(index=False):
        groups[verdict_of(row.seen)].append(f"*{row.claim}*")
    return "; ".join(
        f"{verdict}: " + (count_of(len(items), "claim") if verdict in counted
                          else prose_list(items))
        for verdict, items in groups.items() if items) or "none judged"


def claims_markdown(claims: pd.DataFrame) -> str:
    """A markdown list of claims (``claim, seen, evidence``): seen, not seen or undecided."""
    lines = []
    for row in claims.itertuples(index=False):
        lines.append(f"- {row.claim}: **{verdict_of(row.seen)}** ({row.evidence})")
    return "\n".join(lines)
