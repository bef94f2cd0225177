"""Uncertainty estimation with hypernetworks: data, target nets, methods, training, metrics."""

import warnings

from tqdm import TqdmWarning

# pooch and pyro import tqdm.auto, which warns inside Jupyter without ipywidgets; the library
# draws no notebook progress bars, so the warning would only clutter every executed notebook.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
