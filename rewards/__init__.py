"""Reward modules by output kind (image/, video/, audio/, text/), plus groupwise, composition and remote."""
