"""Run by `accelerate launch` (or plainly): train the toy world a few steps, save weights and advantages."""

import sys

import torch

from mmgrpo.config import load_config
from mmgrpo.trainer import Trainer


def main(config: str, out: str, *overrides: str) -> None:
    cfg = load_config(config, list(overrides))
    t = Trainer(cfg)
    advs = []
    orig = t._advantages

    def spy(*a, **k):
        res = orig(*a, **k)
        advs.append(t.last_advantages.clone())
        return res

    t._advantages = spy
    t.fit()
    if t.is_main:
        torch.save({"weights": torch.cat([p.detach().reshape(-1) for p in t.params]),
                    "advantages": torch.stack(advs), "world": t.world}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
