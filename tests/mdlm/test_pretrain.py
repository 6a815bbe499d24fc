"""The arithmetic world's pretraining loss and the policy's weight loading."""

import math

import pytest
import torch

from mmgrpo.modalities.mdlm.models import TinyBertConfig, build_tiny_bert
from mmgrpo.modalities.mdlm.policy import MDLMPolicy
from mmgrpo.modalities.mdlm.pretrain import masked_diffusion_loss, split_problems
from mmgrpo.modalities.mdlm.vocab import PAD, CharVocab

from .tiny import batch

SMALL = TinyBertConfig(hidden=16, layers=1, heads=2, intermediate=16, max_positions=16)


def test_masked_diffusion_loss_weights_masked_tokens_by_one_over_t():
    vocab = CharVocab("0123456789+=")
    model = build_tiny_bert(SMALL, len(vocab), PAD)
    with torch.no_grad():                                   # constant logits: CE = ln 12 at every position
        model.cls.predictions.decoder.weight.zero_()
        model.cls.predictions.decoder.bias.zero_()
        model.cls.predictions.bias.zero_()
    prompts = ["12+34=", "99+99=", "5+7="]
    loss = masked_diffusion_loss(model, vocab, prompts, 3, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)                    # the same draws, by hand
    t = torch.rand(3, 1, generator=g).clamp(min=1e-3)
    m = torch.rand(3, 3, generator=g) < t
    m[torch.arange(3), torch.randint(3, (3,), generator=g)] = True
    expected = float((m.sum(1) * math.log(12) / t[:, 0]).mean() / 3)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_held_out_problems_are_disjoint_from_training():
    train, held = split_problems(1, 20, 0)
    assert len(train) == 80 and len(held) == 20 and not set(train) & set(held)


def test_policy_loads_weights_and_rejects_what_does_not_fit(tmp_path):
    from safetensors.torch import save_model

    cfg = dict(alphabet="ab", gen_length=2, block_length=2, steps=2, lora_rank=0, estimator="trace")
    src = MDLMPolicy(MDLMPolicy.Config(**cfg, model=TinyBertConfig(**{**SMALL.__dict__, "init_seed": 3})))
    path = tmp_path / "w.safetensors"
    save_model(src.model, str(path))
    loaded = MDLMPolicy(MDLMPolicy.Config(**cfg, model=SMALL, weights=str(path)))
    fresh = MDLMPolicy(MDLMPolicy.Config(**cfg, model=SMALL))
    r = src.sample(batch(["ab", "ba"]))
    torch.testing.assert_close(loaded.log_prob(r, slice(0, 2)).log_probs, src.log_prob(r, slice(0, 2)).log_probs)
    assert not torch.allclose(fresh.log_prob(r, slice(0, 2)).log_probs, src.log_prob(r, slice(0, 2)).log_probs)
    with pytest.raises(ValueError, match="policy.weights .* does not fit"):
        MDLMPolicy(MDLMPolicy.Config(**cfg, model=TinyBertConfig(hidden=32, layers=1, heads=2), weights=str(path)))
    with pytest.raises(FileNotFoundError, match="policy.weights"):
        MDLMPolicy(MDLMPolicy.Config(**cfg, weights=str(tmp_path / "none.safetensors")))
