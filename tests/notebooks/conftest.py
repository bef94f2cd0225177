"""The notebook regression re-executes the smoke copies in the portable numerics they were made
in (:mod:`hypernets.numerics`): the kernels nbval starts inherit this environment."""

import os

from hypernets import numerics

os.environ.update(numerics.PORTABLE_ENV)
