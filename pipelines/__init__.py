"""Runnable GRPO recipes and the toy worlds that make them run on a laptop CPU."""
