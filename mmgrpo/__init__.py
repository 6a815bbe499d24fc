"""mmgrpo: GRPO-style reinforcement learning for generative models in every modality."""

__version__ = "0.1.0"
