"""Uncertainty estimation with hypernetworks: data, target nets, methods, training, metrics.

The package is layered; a module imports only from layers below it (``tests/test_layers.py``):

1. ``validation`` (argument checks), ``seeding`` (seeded sampling) and ``numerics`` (the
   portable mode of the smoke regression), ``memory`` (malloc keeps freed blocks);
2. ``data`` (loaders, ``ImageData`` with its normalisation, the toy) and ``targets``: a
   target network is a parameter spec plus pure forwards that run S weight sets at once;
3. ``likelihoods`` and ``metrics``;
4. ``methods``: the small ``Method`` contract (``sample_params`` with a leading S,
   ``training_loss``), one module per method, the lazy ``registry``;
5. ``training`` (``fit``, ``predict``), ``published`` and ``reference_posterior``;
6. ``store`` (trained runs on disk), then ``runs`` (named training runs, trained once), then
   ``evaluation``, ``adversarial``, ``plots``;
7. ``experiments``: one module per chapter; no chapter imports another;
8. ``book`` (profiles, parameter rules checked before a run) and ``plans`` (what each
   chapter trains), then ``runner``: the papermill runner and its ``--train-only``.
"""

import warnings

from tqdm import TqdmWarning

from hypernets import memory, numerics

# pooch and pyro import tqdm.auto, which warns inside Jupyter without ipywidgets; the library
# draws no notebook progress bars, so the warning would only clutter every executed notebook.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

if numerics.portable_requested():
    numerics.apply_portable_flags()

memory.keep_freed_memory()
