"""How important a unit is: block scorers for heads, FFN neurons and hidden dimensions, and adapter
importance for rank growth. Scorers observe the model; none changes its outputs or parameters.

Registry: ``SCORERS[name]`` with names used by configs ("apt", "weight_gradient", "magnitude",
"random"); :func:`build_scorer` makes one from a name and keyword options.
"""

from aptune.salience.activation import APTSalience
from aptune.salience.adapter import AdapterImportance
from aptune.salience.base import Salience, ema_update, kurtosis, outlier_term
from aptune.salience.weight import MagnitudeSalience, RandomSalience, WeightGradientSalience

SCORERS: dict[str, type[Salience]] = {
    cls.name: cls for cls in (APTSalience, WeightGradientSalience, MagnitudeSalience, RandomSalience)
}


def build_scorer(name: str = "apt", **options) -> Salience:
    """A scorer by registry name, e.g. ``build_scorer("apt", kurtosis=True)``."""
    if name not in SCORERS:
        raise ValueError(f"unknown salience {name!r}; choose from {', '.join(SCORERS)}")
    return SCORERS[name](**options)


__all__ = [
    "SCORERS",
    "APTSalience",
    "AdapterImportance",
    "MagnitudeSalience",
    "RandomSalience",
    "Salience",
    "WeightGradientSalience",
    "build_scorer",
    "ema_update",
    "kurtosis",
    "outlier_term",
]
