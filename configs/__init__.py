"""YAML recipes, shipped as package data: pkg://mmgrpo.configs/<family>/<recipe>.yaml."""
