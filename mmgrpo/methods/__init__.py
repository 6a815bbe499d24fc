"""The method catalog: the seed papers' group-relative mechanisms as plugins of the core registries.

Importing this package registers every method by name into `mmgrpo.advantages`, `mmgrpo.objectives`,
`mmgrpo.aggregation` and `mmgrpo.collect` (and its schedules into `mmgrpo.schedules`); configs then name them
like the baselines. `docs/methods.md` is generated from these registries (`scripts/gen_methods_doc.py`).
"""

from . import balanced, collectors, estimators, similarity, trust_regions  # noqa: F401  (registers)
from .similarity import SIMILARITIES
from .tracker import ValueTracker

__all__ = ["SIMILARITIES", "ValueTracker"]
