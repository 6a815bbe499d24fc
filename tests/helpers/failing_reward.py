"""A reward that fails when called, as a remote reward does when its server goes away (a failed run)."""

from mmgrpo.components import component


@component
def FailingReward(outputs, conds, **_):
    raise RuntimeError("the reward server is down")


FailingReward.name = "failing"
