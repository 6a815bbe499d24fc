import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))          # tests/helpers importable as `helpers`
from helpers.paths import TOY  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def toy_cfg(tmp_path):
    """load_config of the toy world with quiet settings and a temporary run_dir."""
    from mmgrpo.config import load_config

    def make(*overrides):
        base = [f"run_dir={tmp_path / 'run'}", "progress=false", "tensorboard=false", "sample_every=0"]
        return load_config(TOY, base + list(overrides))

    return make
