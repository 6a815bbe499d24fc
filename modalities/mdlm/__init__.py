"""Masked-diffusion language models: block-wise low-confidence remasking and pluggable likelihood estimators."""
