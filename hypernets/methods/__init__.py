"""Methods: distributions over target-network weights behind one interface (``Method``)."""

from hypernets.methods.base import Method, StackedParams
from hypernets.methods.map import MAP

__all__ = ["Method", "StackedParams", "MAP"]
