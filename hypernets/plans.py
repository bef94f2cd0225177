"""What each chapter trains: its data and its runs, from the notebook's resolved parameters.

A notebook builds its plan with the chapter's function here and trains through it, and
``hypernets-run --train-only`` builds the same plan without executing the notebook, so both
ask the run store (:mod:`hypernets.store`) for the same runs: what the background training
stores is what the notebook then loads. :data:`PLANS` maps notebook names to their function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypernets.adversarial import adversarial_curves as attack_curves
from hypernets.data import (CIFAR10_PIXELS, ImageSplits, load_cifar5_splits, load_cifar10,
                            load_mnist, load_mnist_splits)
from hypernets.evaluation import reliability_table
from hypernets.experiments import anomaly, cifar, correlations, couplings, diversity, mnist
from hypernets.experiments import adversarial as adversarial_chapter
from hypernets.experiments import hypergan_tables as hypergan_tables_chapter
from hypernets.records import RecordRemade
from hypernets.runs import (RunRequest, TestError, TrainedMethod, check_requests, key_document,
                            progress_bar, run_requests, train_runs)
from hypernets.store import RunStore, request_hash
from hypernets.targets import mnist_mlp


@dataclass
class ChapterPlan:
    """A chapter's data and its runs, in named groups (e.g. ``table`` and ``architecture``).

    ``evaluate(group, runs)``, where a chapter has it, computes what its page computes from
    the runs of a group, through :meth:`~hypernets.runs.TrainedMethod.evaluated`, so that
    with run records (:mod:`hypernets.records`) every run can be evaluated as soon as it is
    trained (:meth:`evaluate_run`), and the page later reads the values from the records.
    """

    data: Any
    groups: dict[str, list[RunRequest]] = field(default_factory=dict)
    evaluate: Callable[[str, Mapping[str, TrainedMethod]], Any] | None = None
    _keys: dict[str, set[str]] | None = field(default=None, init=False, repr=False)

    @property
    def requests(self) -> list[RunRequest]:
        """Every run of every group, in order."""
        return [request for group in self.groups.values() for request in group]

    def train(self, group: str, *, store: RunStore | None | str = "default",
              progress: bool = False) -> dict[str, TrainedMethod]:
        """Train (or load from the store or the records) the runs of ``group``."""
        if group not in self.groups:
            raise ValueError(f"this plan has the run groups {sorted(self.groups)}, not {group!r}")
        return train_runs(self.groups[group], store=store, progress=progress)

    def train_all(self, *, store: RunStore | None | str = "default", progress: bool = False,
                  after_each: Callable[[TrainedMethod], None] | None = None,
                  admit: Callable[[RunRequest], bool] | None = None
                  ) -> dict[str, dict[str, TrainedMethod]]:
        """Train (or load) every group, with one progress bar over all of them: group -> runs.

        ``after_each`` is called with every run as soon as it is there, before the next one
        trains (e.g. :meth:`evaluate_run` of every chapter that shares it); runs that
        ``admit`` refuses to train are left out (:func:`~hypernets.runs.train_runs`).
        """
        for group in self.groups.values():
            check_requests(group)
        bar = progress_bar(self.requests) if progress else False
        try:
            return {name: train_runs(group, store=store, progress=bar, after_each=after_each,
                                     admit=admit)
                    for name, group in self.groups.items()}
        finally:
            if bar:
                bar.close()

    def evaluate_run(self, run: TrainedMethod) -> bool:
        """Evaluate ``run`` as this chapter's page will (``evaluate``) if one of its groups
        has the run (the same store key); returns whether one had."""
        if self.evaluate is None or run.key is None:
            return False
        if self._keys is None:
            self._keys = {group: {request_hash(key_document(request, request.build()))
                                  for request in requests}
                          for group, requests in self.groups.items()}
        for group, keys in self._keys.items():
            if run.key in keys:
                self.evaluate(group, {run.name: run})
                return True
        return False


def evaluate_for_chapters(run: TrainedMethod, chapters: Sequence[ChapterPlan]) -> None:
    """Evaluate ``run`` for every chapter of ``chapters`` that uses it
    (:meth:`ChapterPlan.evaluate_run`). Where restoring its method re-made its record (its
    training differs from the record's), every chapter evaluates it again, from the new record."""
    try:
        for chapter in chapters:
            chapter.evaluate_run(run)
    except RecordRemade:
        for chapter in chapters:
            chapter.evaluate_run(run)


def _curve(data: ImageSplits, params: Mapping[str, Any]) -> TestError:
    """The per-epoch test error behind a chapter's convergence figure."""
    return TestError(data.test.x, data.test.y, n_samples=params["curve_samples"],
                     batch_size=params["eval_batch_size"], seed=params["seed"])


def _lenet_runs(params: Mapping[str, Any], data: ImageSplits, methods, target: str) -> list[RunRequest]:
    return run_requests(methods, target, data.train.x, data.train.y, epochs=params["epochs"],
                        batch_size=params["batch_size"], device=params["device"],
                        seed=params.get("training_seed", params["seed"]), options=params["options"],
                        evaluate=_curve(data, params), precision=params["precision"])


#: A group of the runs of one training seed (the MNIST table's ``table``, ``architecture``, ...).
SEED_GROUP = "{}_seed{}"


def mnist_table(params: Mapping[str, Any]) -> ChapterPlan:
    """Bayes by Hypernet's MNIST table (``table``), its table of architectures
    (``architecture``) and the KL-estimator ablation (``estimator``), for every training seed
    in ``seeds`` (:data:`SEED_GROUP`, see :func:`train_seeds`). The ablation's groups come
    last, so that the tables train first. ``seed`` fixes the data and the per-epoch test
    samples."""
    data = load_mnist_splits(n_train=params["n_train"], n_test=params["n_test"], seed=params["seed"])
    variants = {"architecture": mnist.architecture_variant_options(
                    params["options"], params["architecture_options"]),
                "estimator": mnist.estimator_variant_options(params["options"])}
    groups = {}
    for seed in params["seeds"]:
        seeded_params = {**params, "training_seed": seed}
        groups[SEED_GROUP.format("table", seed)] = _lenet_runs(
            seeded_params, data, params["methods"], params["target"])
        groups[SEED_GROUP.format("architecture", seed)] = _lenet_runs(
            {**seeded_params, "options": variants["architecture"]}, data,
            list(variants["architecture"]), params["target"])
    for seed in params["seeds"]:
        groups[SEED_GROUP.format("estimator", seed)] = _lenet_runs(
            {**params, "training_seed": seed, "options": variants["estimator"]}, data,
            list(variants["estimator"]), params["target"])
    first_seed, last_seed = params["seeds"][0], params["seeds"][-1]

    def evaluate(group: str, runs: Mapping[str, TrainedMethod]) -> None:
        # What the notebook computes: every run's row; the first seed's reliability bins
        # (table runs) and Bayes by Hypernet KL spread (table and architecture runs); the
        # last seed's Bayes by Hypernet weight spread (table, architecture, estimator runs).
        settings = dict(n_samples=params["n_samples"], batch_size=params["eval_batch_size"],
                        seed=params["seed"])
        mnist.evaluate_methods(runs, data.test.x, data.test.y, data.outliers.x, **settings)
        if group == SEED_GROUP.format("table", first_seed):
            reliability_table(runs, data.test.x, data.test.y, **settings)
        bbh = {name: run for name, run in runs.items() if run.method_name == "bbh"}
        if bbh and group in (SEED_GROUP.format("table", first_seed),
                             SEED_GROUP.format("architecture", first_seed)):
            mnist.kl_estimate_spread(bbh, len(data.train), seed=params["seed"])
        if bbh and group in (SEED_GROUP.format("table", last_seed),
                             SEED_GROUP.format("architecture", last_seed),
                             SEED_GROUP.format("estimator", last_seed)):
            mnist.weight_spread(bbh, len(data.train), n_samples=params["n_samples"],
                                seed=params["seed"])

    return ChapterPlan(data, groups, evaluate)


def bbh_noise(params: Mapping[str, Any]) -> ChapterPlan:
    """Bayes by Hypernet's noise ablation on the MNIST table's LeNet runs: per training seed
    (``noise``, :data:`SEED_GROUP`) the published ``bbh`` and the runs of
    :func:`~hypernets.experiments.mnist.noise_variant_options`. With the MNIST table's settings
    the ``bbh`` run is the table's own (the store trains it once)."""
    data = load_mnist_splits(n_train=params["n_train"], n_test=params["n_test"], seed=params["seed"])
    variants = mnist.noise_variant_options(params["options"])
    options = {**{k: dict(v) for k, v in (params["options"] or {}).items()}, **variants}

    def evaluate(group: str, runs: Mapping[str, TrainedMethod]) -> None:
        mnist.evaluate_methods(runs, data.test.x, data.test.y, data.outliers.x,
                               n_samples=params["n_samples"], batch_size=params["eval_batch_size"],
                               seed=params["seed"])

    return ChapterPlan(data, {
        SEED_GROUP.format("noise", seed): _lenet_runs(
            {**params, "training_seed": seed, "options": options}, data, ["bbh", *variants],
            "lenet")
        for seed in params["seeds"]}, evaluate)


def train_seeds(plan: ChapterPlan, group: str, seeds: Sequence[int], *,
                store: RunStore | None | str = "default") -> dict[int, dict[str, TrainedMethod]]:
    """Train (or load) ``group``'s runs of every training seed: seed -> runs."""
    return {seed: plan.train(SEED_GROUP.format(group, seed), store=store) for seed in seeds}


def adversarial(params: Mapping[str, Any]) -> ChapterPlan:
    """The LeNet runs that the FGSM attack is evaluated on, one group per training seed
    (``methods``, :data:`SEED_GROUP`): the MNIST table's, when their settings agree, so the
    store trains them once."""
    data = load_mnist_splits(n_train=params["n_train"], n_test=params["n_test"], seed=params["seed"])
    first_seed = params["seeds"][0]

    def evaluate(group: str, runs: Mapping[str, TrainedMethod]) -> None:
        # What the notebook computes: every run's FGSM curve; of the first seed's runs, the
        # example images and the detection study.
        test = data.test
        attack_curves(runs, test.x, test.y, params["epsilons"], n_samples=params["n_samples"],
                      batch_size=params["eval_batch_size"], seed=params["seed"])
        if group != SEED_GROUP.format("methods", first_seed):
            return
        example = adversarial_chapter.example_method(params["methods"])
        if example in runs:
            adversarial_chapter.adversarial_examples(
                runs[example], test.x[:4], test.y[:4], params["epsilons"],
                n_samples=params["n_samples"], seed=params["seed"])
        detected = {name: run for name, run in runs.items()
                    if name in params["detection_methods"]}
        if detected:
            n = params["n_detect"]
            adversarial_chapter.adversarial_detection(
                detected, test.x[:n], test.y[:n], epsilons=params["detection_epsilons"],
                n_nets=params["detection_nets"], batch_size=params["eval_batch_size"],
                seed=params["seed"])

    return ChapterPlan(data, {
        SEED_GROUP.format("methods", seed): _lenet_runs({**params, "training_seed": seed}, data,
                                                        params["methods"], "lenet")
        for seed in params["seeds"]}, evaluate)


def anomaly_detection(params: Mapping[str, Any]) -> ChapterPlan:
    """The MLP runs of the notMNIST setting (``notmnist``) and, per held-out digit k, the runs
    trained without it (:data:`HELD_OUT_GROUP`, see :func:`train_held_out`)."""
    data = load_mnist_splits(n_train=params["n_train"], n_test=params["n_test"], seed=params["seed"])
    groups = {"notmnist": run_requests(
        params["methods"], "mnist_mlp", data.train.x, data.train.y, epochs=params["epochs"],
        batch_size=params["batch_size"], device=params["device"], seed=params["seed"],
        options=params["options"], evaluate=_curve(data, params), precision=params["precision"])}
    held_out = anomaly.held_out_class_runs(
        params["held_out_methods"], data.train, held_out_classes=params["held_out_classes"],
        epochs=params["held_out_epochs"], batch_size=params["batch_size"], device=params["device"],
        seed=params["seed"], options=params["options"], precision=params["precision"])
    groups.update({HELD_OUT_GROUP.format(k): requests for k, requests in held_out.items()})
    return ChapterPlan(data, groups)


#: The anomaly-detection plan's group of the runs trained without digit k.
HELD_OUT_GROUP = "held_out_{}"


def train_held_out(plan: ChapterPlan, classes: Sequence[int], *,
                   store: RunStore | None | str = "default") -> dict[int, dict[str, TrainedMethod]]:
    """Train (or load) the held-out-class runs of an anomaly-detection plan: class -> runs."""
    return {k: plan.train(HELD_OUT_GROUP.format(k), store=store) for k in classes}


def cifar5_table(params: Mapping[str, Any]) -> ChapterPlan:
    """Bayes by Hypernet's CIFAR-5 table: the ResNet runs, trained with random crops and flips,
    one group per training seed (``table``, :data:`SEED_GROUP`, see :func:`train_seeds`)."""
    data = load_cifar5_splits(n_train=params["n_train"], n_test=params["n_test"], seed=params["seed"])
    target = cifar.make_target(params["units_per_stage"])
    evaluate = TestError(cifar.centre_crop(data.test.x), data.test.y,
                         n_samples=params["curve_samples"], batch_size=params["eval_batch_size"],
                         seed=params["seed"])
    first_seed = params["seeds"][0]

    def evaluate_runs(group: str, runs: Mapping[str, TrainedMethod]) -> None:
        # What the notebook computes: every run's row, entropy ECDFs and FGSM curve; the first
        # seed's reliability bins.
        settings = dict(batch_size=params["eval_batch_size"], seed=params["seed"])
        cifar.evaluate_cifar5(runs, data, n_samples=params["n_samples"], **settings)
        if group == SEED_GROUP.format("table", first_seed):
            reliability_table(runs, cifar.centre_crop(data.test.x), data.test.y,
                              n_samples=params["n_samples"], **settings)
        n = params["n_attack"]
        attack_curves(runs, cifar.centre_crop(data.test.x[:n]), data.test.y[:n],
                      params["epsilons"], n_samples=params["attack_nets"],
                      pixel_range=CIFAR10_PIXELS, **settings)

    return ChapterPlan(data, {SEED_GROUP.format("table", seed): run_requests(
        params["methods"], target, data.train.x, data.train.y, epochs=params["epochs"],
        batch_size=params["batch_size"], device=params["device"], seed=seed,
        options=params["options"], transform=cifar.RandomCropFlip(), evaluate=evaluate,
        precision=params["precision"]) for seed in params["seeds"]}, evaluate_runs)


def weight_correlations(params: Mapping[str, Any]) -> ChapterPlan:
    """The MNIST runs whose weight pairs are tested (``mnist``) and the product-network runs
    (``product``); NUTS, the product network's reference, is sampled by the notebook. The
    MNIST runs' accuracy and p-values are evaluated into their records."""
    data = load_mnist_splits(params["n_train"], params["n_test"], seed=params["seed"])
    product = correlations.product_data(params["product_points"], seed=params["seed"])

    def evaluate(group: str, runs: Mapping[str, TrainedMethod]) -> None:
        if group == "mnist":  # the product network's runs are small: trained again, not recorded
            correlations.evaluate_correlation_runs(
                runs, data, n_weight_samples=params["n_weight_samples"],
                n_pairs=params["n_pairs"], seed=params["seed"])

    return ChapterPlan(data, {
        "mnist": correlations.correlation_runs(
            params["correlation_methods"], data, epochs=params["epochs"],
            batch_size=params["batch_size"], device=params["device"], seed=params["seed"],
            options=params["correlation_options"]),
        "product": correlations.product_runs(
            params["product_methods"], product, steps=params["product_steps"],
            device=params["device"], seed=params["seed"], options=params["product_options"]),
    }, evaluate)


def diversity_ablation(params: Mapping[str, Any]) -> ChapterPlan:
    """HyperGAN's ablation on MNIST (``ablation``, one group per training seed, see
    :data:`SEED_GROUP`) and HyperGAN-MI on the toy (:data:`MI_TOY_GROUP`, one group per noise
    std and training seed), with the arguments the notebook gives
    :func:`~hypernets.experiments.diversity.run_ablation` and
    :func:`~hypernets.experiments.diversity.run_mi_toy_study`."""
    train = load_mnist("train").subset(params["n_train"], seed=params["seed"])
    test = load_mnist("test").subset(params["n_test"], seed=params["seed"])
    groups = {SEED_GROUP.format("ablation", seed): diversity.ablation_runs(
        train.x, train.y, test.x, test.y, epochs=params["epochs"],
        batch_size=params["batch_size"], train_samples=params["train_samples"],
        eval_every=params["eval_every"], n_predict_samples=params["n_predict_samples"],
        n_diversity_samples=params["n_diversity_samples"],
        hypergan_options=dict(params["hypergan_options"]), lr=params["lr"],
        device=params["device"], seed=seed, eval_batch_size=params["eval_batch_size"])
        for seed in params["seeds"]}
    toys, toy_groups = diversity.mi_toy_groups(
        params["toy_noise_stds"], params["toy_seeds"], data_seed=params["seed"],
        beta=params["mi_beta"], steps=params["toy_steps"],
        train_samples=params["toy_train_samples"], eval_every=params["toy_eval_every"],
        n_samples=params["toy_n_samples"], mi_options=dict(params["mi_options"]),
        lr=params["toy_lr"], device=params["device"])
    groups.update({MI_TOY_GROUP.format(std, seed): requests
                   for (std, seed), requests in toy_groups.items()})
    return ChapterPlan({"train": train, "test": test, "toys": toys}, groups)


#: The diversity plan's group of the MI-toy runs of one noise std and training seed.
MI_TOY_GROUP = "mi_toy_sigma{:g}_seed{}"


def bhn_couplings(params: Mapping[str, Any]) -> ChapterPlan:
    """Bayesian Hypernetworks' generalisation study: per training-set size and training seed
    (:data:`~hypernets.experiments.couplings.GROUP`, see :func:`train_couplings`), the
    ``baselines`` and one Bayesian hypernetwork per entry of ``couplings``, on the MLP with
    ``hidden_units``. ``seed`` fixes the training subsets, the test subset and the test-time
    samples; ``lr``, when set, is every run's learning rate unless its options give one."""
    data = load_mnist_splits(n_test=params["n_test"], seed=params["seed"])
    variants = couplings.coupling_options(params["couplings"], params["options"])
    options = {**{name: dict(value) for name, value in (params["options"] or {}).items()},
               **variants}
    names = [*params["baselines"], *variants]
    if params["lr"] is not None:
        options = {name: {"lr": params["lr"], **options.get(name, {})} for name in names}
    target = mnist_mlp(len(data.train.classes), params["hidden_units"])
    groups = {}
    for size in params["train_sizes"]:
        train = data.train if size == len(data.train) else data.train.subset(size, seed=params["seed"])
        for seed in params["seeds"]:
            groups[couplings.GROUP.format(size, seed)] = run_requests(
                names, target, train.x, train.y, epochs=params["epochs"],
                batch_size=params["batch_size"], device=params["device"], seed=seed,
                options=options, evaluate=_curve(data, params), precision=params["precision"])

    def evaluate(group: str, runs: Mapping[str, TrainedMethod]) -> None:
        size, seed = (int(part) for part in group[1:].split("_seed"))
        couplings.evaluate_groups({(size, seed): runs}, data.test.x, data.test.y,
                                  n_samples=params["n_samples"],
                                  batch_size=params["eval_batch_size"], seed=params["seed"])

    return ChapterPlan(data, groups, evaluate)


def train_couplings(plan: ChapterPlan, sizes: Sequence[int], seeds: Sequence[int], *,
                    store: RunStore | None | str = "default"
                    ) -> dict[tuple[int, int], dict[str, TrainedMethod]]:
    """Train (or load) the runs of a :func:`bhn_couplings` plan: (size, seed) -> runs."""
    return {(size, seed): plan.train(couplings.GROUP.format(size, seed), store=store)
            for size in sizes for seed in seeds}


def hypergan_tables(params: Mapping[str, Any]) -> ChapterPlan:
    """HyperGAN's classification tables: per training seed, ``methods`` on MNIST with
    HyperGAN's small convolutional net (``mnist`` groups) and on all of CIFAR-10 with its CIFAR
    net (``cifar10`` groups, :data:`SEED_GROUP`), each data set with its own epochs and
    options. ``seed`` fixes the subsets and the test-time samples. Data: name -> splits."""
    mnist = load_mnist_splits(n_train=params["n_train"], n_test=params["n_test"], seed=params["seed"])
    cifar_train = load_cifar10("train")
    cifar_test = load_cifar10("test")
    if params["cifar_n_train"] < len(cifar_train):
        cifar_train = cifar_train.subset(params["cifar_n_train"], seed=params["seed"])
    if params["cifar_n_test"] < len(cifar_test):
        cifar_test = cifar_test.subset(params["cifar_n_test"], seed=params["seed"])
    data = {"mnist": (mnist.train, mnist.test), "cifar10": (cifar_train, cifar_test)}
    settings = {"mnist": (params["epochs"], params["options"]),
                "cifar10": (params["cifar_epochs"], params["cifar_options"])}
    groups = {}
    for name, (train, test) in data.items():
        epochs, options = settings[name]
        curve = TestError(test.x, test.y, n_samples=params["curve_samples"],
                          batch_size=params["eval_batch_size"], seed=params["seed"])
        for seed in params["seeds"]:
            groups[SEED_GROUP.format(name, seed)] = run_requests(
                params["methods"], hypergan_tables_chapter.TARGETS[name], train.x, train.y,
                epochs=epochs, batch_size=params["batch_size"], device=params["device"],
                seed=seed, options=options, evaluate=curve, precision=params["precision"])

    def evaluate(group: str, runs: Mapping[str, TrainedMethod]) -> None:
        test = data[group.rsplit(SEED_GROUP.format("", ""), 1)[0]][1]
        hypergan_tables_chapter.accuracy_by_nets(runs, test.x, test.y,
                                                 sizes=params["ensemble_sizes"],
                                                 batch_size=params["eval_batch_size"],
                                                 seed=params["seed"])

    return ChapterPlan(data, groups, evaluate)


#: Notebook name -> the function that plans its runs from its resolved parameters.
PLANS: dict[str, Callable[[Mapping[str, Any]], ChapterPlan]] = {
    "mnist_table": mnist_table,
    "adversarial": adversarial,
    "anomaly_detection": anomaly_detection,
    "cifar5_table": cifar5_table,
    "diversity_ablation": diversity_ablation,
    "weight_correlations": weight_correlations,
    "bhn_couplings": bhn_couplings,
    "hypergan_tables": hypergan_tables,
    "bbh_noise": bbh_noise,
}
