"""Argument checks shared by every layer: each names the argument and what was expected.

Python's ``bool`` is an ``int``, and NumPy scalars are neither ``int`` nor ``float``; these
helpers accept what a user means by an integer or a number (``numbers.Integral`` /
``numbers.Real``, never a bool) and return plain Python values.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection, Iterable
from typing import Any


def check_int(name: str, value: Any, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum] (either bound optional), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{_bounds(minimum, maximum)}, got {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer{_bounds(minimum, maximum)}, got {value!r}")
    return value


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1."""
    return check_int(name, value, minimum=1)


def check_real(name: str, value: Any, *, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: bool = False,
               exclusive_maximum: bool = False) -> float:
    """``value`` as a finite float within the given bounds, else ValueError."""
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(float(value)))
    if ok:
        value = float(value)
        if minimum is not None:
            ok = value > minimum if exclusive_minimum else value >= minimum
        if ok and maximum is not None:
            ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        raise ValueError(f"{name} must be a finite number"
                         f"{_real_bounds(minimum, maximum, exclusive_minimum, exclusive_maximum)}, "
                         f"got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0 (a standard deviation, a learning rate)."""
    return check_real(name, value, minimum=0.0, exclusive_minimum=True)


def check_probability(name: str, value: Any, *, allow_one: bool = False) -> float:
    """``value`` in [0, 1) (or [0, 1] with ``allow_one``)."""
    return check_real(name, value, minimum=0.0, maximum=1.0, exclusive_maximum=not allow_one)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """``value`` if it is one of ``choices``, else ValueError listing them."""
    if isinstance(value, (list, dict, set)) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_int_list(name: str, values: Any, minimum: int | None = None,
                   maximum: int | None = None, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A list (not a string) of ints within bounds, as a tuple; non-empty unless ``allow_empty``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of integers, got {values!r}")
    values = tuple(values)
    if not values and not allow_empty:
        raise ValueError(f"{name} must list at least one integer, got {values!r}")
    return tuple(check_int(f"every entry of {name}", v, minimum, maximum) for v in values)


def _bounds(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""


def _real_bounds(minimum, maximum, exclusive_minimum, exclusive_maximum) -> str:
    if minimum is not None and maximum is not None:
        return (f" in {'(' if exclusive_minimum else '['}{minimum:g}, "
                f"{maximum:g}{')' if exclusive_maximum else ']'}")
    if minimum is not None:
        return f" {'>' if exclusive_minimum else '>='} {minimum:g}"
    if maximum is not None:
        return f" {'<' if exclusive_maximum else '<='} {maximum:g}"
    return ""
