"""PolicyBase hooks the trainer honours: recomputed old log-probs for Monte Carlo estimators (with the
trainer's per-micro-batch generator), mixed precision through accelerate (bf16 on CPU, fp16 + loss scaling
on a GPU)."""

import pytest
import torch

from mmgrpo.policy import StepOutput
from mmgrpo.trainer import Trainer


def weights(trainer):
    return torch.cat([p.detach().reshape(-1).float() for p in trainer.params])


class MonteCarlo:
    """Wraps the toy policy's log_prob into a noisy estimator that draws from the trainer's generator, the way
    masked-diffusion likelihood estimators draw their random masks."""

    def __init__(self, policy):
        self.inner = policy.log_prob

    def __call__(self, rollout, positions, generator=None):
        out = self.inner(rollout, positions, generator)
        assert generator is not None, "the trainer must pass a generator to log_prob"
        n, c = out.log_probs.shape                      # one stream per sample: independent of the micro-batch
        noise = torch.stack([torch.randn(c, generator=generator.for_sample(i)) for i in range(n)])
        noise = noise.to(out.log_probs.device)
        return StepOutput(out.log_probs + 0.05 * noise, out.aux)


def mc_trainer(toy_cfg, recompute: bool, *extra):
    t = Trainer(toy_cfg("batch_size=16", "micro_batch_size=8", "grad_accum=2", "inner_epochs=1",
                        "loss.objective=clip", "loss.kl_beta=0", "overwrite=true", *extra))
    t.policy.log_prob = MonteCarlo(t.policy)
    t.policy.recompute_old_log_probs = recompute
    return t


def test_recompute_old_log_probs_uses_current_weights_and_the_pass_generator(toy_cfg):
    t = mc_trainer(toy_cfg, recompute=True)
    batch = t.collect(0)
    sampled = batch.rollout.log_probs.clone()
    t._recompute_old(batch, 0)
    old = batch.rollout.log_probs
    assert not torch.allclose(old, sampled)                       # the estimator's values, not the sampler's
    with torch.no_grad():                                         # what one micro-batch pass computes
        sub = torch.arange(0, 8)
        pos = slice(0, batch.rollout.num_positions)
        direct = t.policy.log_prob(batch.rollout.select(sub), pos, t._generator(0, sub, pos)).log_probs
    torch.testing.assert_close(old[:8], direct.float(), atol=0, rtol=0)
    # the first optimizer step sees ratio exactly 1 (same weights, same generator): nothing is clipped
    stats = t.update(batch, 0)
    assert stats["ratio_min"] == pytest.approx(1.0, abs=1e-6) and stats["ratio_max"] == pytest.approx(1.0, abs=1e-6)


def test_recomputed_ratio_is_one_with_shuffled_minibatches(toy_cfg):
    """Recomputation runs in rollout order, the update in a shuffled one: per-sample streams keep ratio 1."""
    t = mc_trainer(toy_cfg, True, "shuffle_minibatches=true", "micro_batch_size=4", "grad_accum=4")
    stats = t.update(t.collect(0), 0)
    assert stats["ratio_min"] == pytest.approx(1.0, abs=1e-6) and stats["ratio_max"] == pytest.approx(1.0, abs=1e-6)


def test_without_the_flag_old_log_probs_are_the_sampled_ones(toy_cfg):
    t = mc_trainer(toy_cfg, recompute=False)
    batch = t.collect(0)
    stats = t.update(batch, 0)
    assert stats["ratio_max"] - stats["ratio_min"] > 1e-3          # the noisy estimator disagrees with sampling


def test_bf16_mixed_precision_goes_through_accelerate(toy_cfg):
    t = Trainer(toy_cfg("steps=2", "batch_size=16", "micro_batch_size=8", "mixed_precision=bf16", "overwrite=true"))
    assert t.acc.mixed_precision == "bf16"
    before = weights(t)
    summary = t.fit()
    after = weights(t)
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert all(p.dtype == torch.float32 for p in t.params)          # master weights stay fp32
    assert summary["reward_history"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fp16_uses_a_loss_scaler_on_gpu(toy_cfg):
    t = Trainer(toy_cfg("steps=2", "batch_size=16", "micro_batch_size=8", "mixed_precision=fp16", "overwrite=true"))
    assert t.acc.scaler is not None                                  # accelerate.backward scales the loss
    before = weights(t)
    t.fit()
    assert torch.isfinite(weights(t)).all() and not torch.equal(before, weights(t))


def test_pass_generator_per_sample_streams_do_not_depend_on_the_micro_batch(toy_cfg):
    """`for_sample(i)` depends on the sample's index in the step's batch and the chunk, never on which other
    samples share its micro-batch; the pass stream itself is what the old/reference/current passes share."""
    t = Trainer(toy_cfg("batch_size=16", "micro_batch_size=8", "overwrite=true"))
    pos = slice(0, 3)
    a = t._generator(0, torch.arange(0, 8), pos)                 # rollout order
    b = t._generator(0, torch.tensor([5, 2, 9, 0]), pos)         # a shuffled micro-batch holding 5 and 2
    assert isinstance(a, torch.Generator)
    torch.testing.assert_close(torch.rand(4, generator=a.for_sample(5)), torch.rand(4, generator=b.for_sample(0)))
    torch.testing.assert_close(torch.rand(4, generator=a.for_sample(2)), torch.rand(4, generator=b.for_sample(1)))
    assert not torch.equal(torch.rand(4, generator=a.for_sample(5)), torch.rand(4, generator=a.for_sample(2)))
    other_step = t._generator(1, torch.arange(0, 8), pos)
    other_chunk = t._generator(0, torch.arange(0, 8), slice(3, 6))
    for g in (other_step, other_chunk):
        assert not torch.equal(torch.rand(4, generator=a.for_sample(5)), torch.rand(4, generator=g.for_sample(5)))
    # the same pass asked twice gives the same shared stream (old == current draws)
    again = t._generator(0, torch.arange(0, 8), pos)
    assert torch.equal(torch.rand(4, generator=again), torch.rand(4, generator=t._generator(0, torch.arange(0, 8), pos)))
