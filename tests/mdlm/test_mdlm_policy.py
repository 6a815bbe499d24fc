"""MDLMPolicy: the shared replay contract, split invariance, ratio 1 on recomputation, reference masks, layouts."""

import pytest
import torch
from contract import check_replay

from mmgrpo.modalities.mdlm.models import ModelSpec, token_logits
from mmgrpo.modalities.mdlm.policy import MDLMPolicy
from mmgrpo.modalities.mdlm.sampling import transfer_counts
from mmgrpo.policy import PolicyBase

from .tiny import batch, tiny_policy

CONDS = ["ab", "ba", "aab", "b", "ab", "bb"]          # different prompt lengths: left padding is exercised


def perturb_lora(policy, scale=0.5):
    """Non-zero LoRA B so that current and reference differ."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("kw", [dict(estimator="trace", block_length=2, steps=4),
                                dict(estimator="trace", block_length=4, steps=2, remasking="random"),
                                dict(estimator="ar", block_length=1, steps=4),
                                dict(estimator="trace", block_length=2, steps=2, shifted_logits=True, temperature=0.7)])
def test_replay_contract_for_the_exact_estimators(kw):
    policy = tiny_policy(**kw)
    perturb_lora(policy)
    assert isinstance(policy, PolicyBase) and policy.recompute_old_log_probs
    r = check_replay(policy, batch(CONDS), splits=[2, 6])
    order = r.state["order"]
    assert r.mask.all() and (order >= 0).all() and int(order.max()) == kw["steps"] - 1
    per_block = policy.schedule.steps_per_block
    blocks = torch.arange(4) // kw["block_length"]
    assert ((order // per_block) == blocks).all()                 # block b is decoded at steps of block b
    per_step = transfer_counts(kw["block_length"], per_block) * policy.schedule.blocks
    counts = torch.stack([(order == s).sum(1) for s in range(kw["steps"])], 1)            # [n, steps]
    assert (counts == torch.tensor(per_step)).all()               # tokens committed per step, as scheduled


@pytest.mark.parametrize("name", ["d1", "coupled", "elbo"])
def test_monte_carlo_estimators_same_generator_same_value_for_any_split(name):
    policy = tiny_policy(estimator=name)
    perturb_lora(policy)
    r = policy.sample(batch(CONDS))
    full = policy.log_prob(r, slice(0, 4), torch.Generator().manual_seed(5)).log_probs.detach()
    for size in (1, 4):
        for idx in torch.randperm(len(CONDS), generator=torch.Generator().manual_seed(0)).split(size):
            part = policy.log_prob(r.select(idx), slice(0, 4), torch.Generator().manual_seed(5)).log_probs
            torch.testing.assert_close(part.detach(), full[idx], atol=1e-5, rtol=0)
    chunk = policy.log_prob(r, slice(1, 3), torch.Generator().manual_seed(5)).log_probs.detach()
    torch.testing.assert_close(chunk, full[:, 1:3], atol=0, rtol=0)   # a time chunk sees the same masks
    other = policy.log_prob(r, slice(0, 4), torch.Generator().manual_seed(6)).log_probs.detach()
    assert not torch.allclose(other, full)


@pytest.mark.parametrize("name", ["d1", "elbo"])
def test_recomputed_old_log_probs_equal_current_and_reference_sees_the_same_masks(name):
    policy = tiny_policy(estimator=name)
    policy.eval()
    r = policy.sample(batch(CONDS))
    with torch.no_grad():                                         # the trainer's recomputation (no grad)
        old = policy.log_prob(r, slice(0, 4), torch.Generator().manual_seed(9)).log_probs
    policy.train()
    cur = policy.log_prob(r, slice(0, 4), torch.Generator().manual_seed(9)).log_probs
    assert cur.requires_grad
    torch.testing.assert_close(torch.exp(cur.detach() - old), torch.ones_like(old), atol=1e-6, rtol=0)
    # LoRA B = 0 at init: the reference with the same generator is the current policy exactly
    g = torch.Generator().manual_seed(9)
    torch.testing.assert_close(policy.ref_log_prob(r, slice(0, 4), g), cur.detach(), atol=1e-6, rtol=0)
    assert not torch.allclose(policy.ref_log_prob(r, slice(0, 4), torch.Generator().manual_seed(10)), cur.detach())
    # with a trained adapter the reference is the adapter-off model on the same masks
    perturb_lora(policy)
    ref = policy.ref_log_prob(r, slice(0, 4), torch.Generator().manual_seed(9))
    torch.testing.assert_close(ref, old, atol=1e-6, rtol=0)
    assert not torch.allclose(policy.log_prob(r, slice(0, 4), torch.Generator().manual_seed(9)).log_probs, ref)


def test_lora_trains_only_the_adapter_and_full_fine_tuning_keeps_a_frozen_reference(tmp_path):
    lora = tiny_policy(lora_rank=2)
    names = [n for n, p in lora.trainable_module().named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    lora.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_config.json").exists()
    full = tiny_policy(lora_rank=0, estimator="ar")
    r = full.sample(batch(CONDS))
    with torch.no_grad():
        for p in full.model.parameters():
            p.add_(0.1)
    ref = full.ref_log_prob(r, slice(0, 4))
    init = tiny_policy(lora_rank=0, estimator="ar")
    torch.testing.assert_close(ref, init.log_prob(r, slice(0, 4)).log_probs.detach(), atol=1e-6, rtol=0)
    assert not torch.allclose(full.log_prob(r, slice(0, 4)).log_probs.detach(), ref)


def test_shifted_logits_read_the_previous_position():
    policy = tiny_policy()
    ids = torch.tensor([[2, 3, 1, 1]])
    attn = torch.ones_like(ids)
    raw = policy.model(input_ids=ids, attention_mask=attn).logits.float()
    dream = token_logits(policy.model, ids, attn, ModelSpec(1, 0, shifted_logits=True))
    llada = token_logits(policy.model, ids, attn, ModelSpec(1, 0, shifted_logits=False))
    torch.testing.assert_close(llada, raw)
    torch.testing.assert_close(dream[:, 1:], raw[:, :-1])


def test_config_errors_name_the_field():
    with pytest.raises(KeyError, match="unknown mdlm estimator 'elbow'; valid names: ar, coupled, d1, elbo, spg, trace"):
        MDLMPolicy.Config(estimator="elbow")
    with pytest.raises(ValueError, match=r"estimator 'd1' has no parameters \['nodes'\]"):
        MDLMPolicy.Config(estimator="d1", estimator_params={"nodes": 3})
    with pytest.raises(ValueError, match="policy.temperature must be > 0"):
        MDLMPolicy.Config(temperature=0)
    with pytest.raises(ValueError, match="outside the vocab alphabet"):
        tiny_policy().sample(batch(["abc"]))
    with pytest.raises(ValueError, match="mask_token_id and pad_token_id must differ"):
        ModelSpec(1, 1).check(4)
