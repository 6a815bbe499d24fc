"""Run by `accelerate launch` (or plainly): train a config a few steps, save full weights and advantages."""

import sys

import torch

from mmgrpo.config import load_config
from mmgrpo.distributed import full_tensor
from mmgrpo.trainer import Trainer


def main(config: str, out: str, *overrides: str) -> None:
    resume = "--resume" in overrides
    cfg = load_config(config, [o for o in overrides if o != "--resume"])
    t = Trainer(cfg)
    advs = []
    step = t.train_step

    def spy(i):
        metrics = step(i)
        advs.append(t.last_advantages.clone())
        return metrics

    t.train_step = spy
    t.fit(resume=resume)
    weights = torch.cat([full_tensor(p.detach()).reshape(-1).cpu() for p in t.params])   # every rank gathers
    if t.is_main:
        torch.save({"weights": weights, "advantages": torch.stack(advs) if advs else torch.zeros(0),
                    "world": t.world, "engine": t.engine}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
