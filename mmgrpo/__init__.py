"""mmgrpo: GRPO-style reinforcement learning for generative models in every modality."""

__version__ = "0.1.0"

# Register the method catalog (seed-paper advantages, objectives, aggregation, collectors) into the core
# registries, so that any config can name them like the baselines.
from . import methods as _methods  # noqa: E402,F401
