"""The toy reward with a pause per call, so that a test can kill a run in the middle of training."""

import time
from dataclasses import dataclass

from mmgrpo.components import component
from mmgrpo.pipelines.toy_tokens import ToyMatchReward


@component
class SlowToyReward(ToyMatchReward):
    name = "toy_match"

    @dataclass
    class Config(ToyMatchReward.Config):
        sleep: float = 0.0  # seconds to wait per call

    def __call__(self, outputs, conds, **kw):
        time.sleep(self.cfg.sleep)
        return super().__call__(outputs, conds, **kw)
