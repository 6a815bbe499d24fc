"""PickScore, CLIP score and the LAION aesthetic predictor on tiny random CLIP models of the real classes."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PROMPTS, assert_reward_contract, random_images

from mmgrpo.rewards.image.aesthetic import AestheticMLP, LaionAestheticReward
from mmgrpo.rewards.image.clip_score import CLIPScoreReward
from mmgrpo.rewards.image.pickscore import PickScoreReward


def reference_logits(clip_dir, images, prompts):
    """`CLIPModel.forward`'s logits_per_image: exp(logit_scale) * cos, computed by transformers itself."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir).eval()
    proc = CLIPProcessor.from_pretrained(clip_dir)
    pixels = proc.image_processor(images=images, return_tensors="pt", do_rescale=False)["pixel_values"]
    tokens = proc.tokenizer(prompts, padding=True, return_tensors="pt")  # shortest padding: must not matter
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    return out.logits_per_image, model.logit_scale.exp().item()  # [N, N], scalar


def test_pickscore_contract_and_equals_clip_forward(clip_dir):
    reward = PickScoreReward(PickScoreReward.Config(checkpoint=clip_dir, processor=clip_dir, batch_size=3))
    images = random_images(8)
    scores = assert_reward_contract(reward, images, PROMPTS)
    logits, scale = reference_logits(clip_dir, images, PROMPTS)
    torch.testing.assert_close(scores, logits.diagonal(), atol=1e-5, rtol=0)
    # The tiny model keeps CLIPConfig's logit_scale_init_value 2.6592 (= log(1/0.07) rounded):
    # scores are exp(2.6592) = 14.2849 * cos, so |score| <= 14.285.
    assert scale == pytest.approx(math.exp(2.6592), rel=1e-6)
    assert scores.abs().max() <= 14.285


def test_pickscore_divide_by_and_accepts_mapping_conds_and_uint8(clip_dir):
    base = PickScoreReward(PickScoreReward.Config(checkpoint=clip_dir, processor=clip_dir))
    scaled = PickScoreReward(PickScoreReward.Config(checkpoint=clip_dir, processor=clip_dir, divide_by=26.0))
    images = (random_images(2) * 255).round().to(torch.uint8)
    conds = [{"prompt": PROMPTS[0], "tag": "x"}, PROMPTS[1]]
    torch.testing.assert_close(scaled(images, conds), base(images, conds) / 26.0)
    with pytest.raises(ValueError, match="divide_by"):
        PickScoreReward.Config(divide_by=0.0)


def test_clip_score_is_clipped_scaled_cosine(clip_dir):
    images = random_images(8, seed=1)
    raw = CLIPScoreReward(CLIPScoreReward.Config(checkpoint=clip_dir, scale=1.0, clip_negative=False))
    cos = raw(images, PROMPTS)
    logits, scale = reference_logits(clip_dir, images, PROMPTS)
    torch.testing.assert_close(cos, logits.diagonal() / scale, atol=1e-6, rtol=0)
    hessel = CLIPScoreReward(CLIPScoreReward.Config(checkpoint=clip_dir))  # w = 2.5, max(cos, 0)
    # e.g. cos = -0.12 -> 0.0 ; cos = 0.2 -> 0.5
    torch.testing.assert_close(hessel(images, PROMPTS), 2.5 * cos.clamp_min(0.0), atol=1e-6, rtol=0)
    assert_reward_contract(hessel, images, PROMPTS)


def test_clip_reward_errors_name_the_reward_and_field(tmp_path, clip_dir):
    with pytest.raises(OSError, match=r"reward 'clip_score'.*checkpoint"):
        CLIPScoreReward(CLIPScoreReward.Config(checkpoint=str(tmp_path / "missing")))
    reward = CLIPScoreReward(CLIPScoreReward.Config(checkpoint=clip_dir))
    with pytest.raises(ValueError, match="2 outputs but 3 conds"):
        reward(random_images(2), PROMPTS[:3])
    with pytest.raises(ValueError, match=r"\[N,3,H,W\]"):
        reward(torch.rand(2, 4, 8, 8), PROMPTS[:2])


def write_head(path, sd):
    torch.save(sd, path)
    return str(path)


def test_aesthetic_head_constant_hand_computed(tmp_path, clip_dir):
    # All weights zero and the last bias 5.5: the head is the constant 5.5 whatever the image.
    head = AestheticMLP(16)
    sd = {k: torch.zeros_like(v) for k, v in head.state_dict().items()}
    sd["layers.7.bias"] = torch.tensor([5.5])
    reward = LaionAestheticReward(LaionAestheticReward.Config(
        head_weights=write_head(tmp_path / "head.pth", sd), clip_checkpoint=clip_dir))
    torch.testing.assert_close(reward(random_images(3), PROMPTS[:3]), torch.full((3,), 5.5))


def test_aesthetic_equals_affine_map_of_normalized_features(tmp_path, clip_dir):
    torch.manual_seed(3)
    head = AestheticMLP(16)
    path = write_head(tmp_path / "head.pth", head.state_dict())
    reward = LaionAestheticReward(LaionAestheticReward.Config(head_weights=path, clip_checkpoint=clip_dir, batch_size=3))
    images = random_images(8, seed=2)
    scores = assert_reward_contract(reward, images, PROMPTS)
    # Loop reference: the head has no nonlinearity, so it is x -> x W_eff + b_eff composed layer by layer,
    # applied to the unit-normalized CLIP image embedding (improved-aesthetic-predictor's `normalized`).
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir).eval()
    pixels = CLIPProcessor.from_pretrained(clip_dir).image_processor(images=images, return_tensors="pt",
                                                                     do_rescale=False)["pixel_values"]
    with torch.no_grad():
        emb = model.vision_model(pixel_values=pixels).pooler_output @ model.visual_projection.weight.T
    for i in range(8):
        x = emb[i] / emb[i].norm()
        for idx in (0, 2, 4, 6, 7):
            layer = head.layers[idx]
            x = layer.weight.detach() @ x + layer.bias.detach()
        assert math.isclose(scores[i].item(), x.item(), abs_tol=1e-5)


def test_aesthetic_head_errors(tmp_path, clip_dir):
    with pytest.raises(FileNotFoundError, match="head_weights.*improved-aesthetic-predictor"):
        LaionAestheticReward(LaionAestheticReward.Config(head_weights=str(tmp_path / "nope.pth"), clip_checkpoint=clip_dir))
    wrong = write_head(tmp_path / "wrong.pth", AestheticMLP(768).state_dict())  # ViT-L/14 head, 16-d tiny CLIP
    with pytest.raises(ValueError, match="768-d CLIP features.*gives 16-d"):
        LaionAestheticReward(LaionAestheticReward.Config(head_weights=wrong, clip_checkpoint=clip_dir))
    bad = write_head(tmp_path / "bad.pth", {"w": torch.zeros(1)})
    with pytest.raises(ValueError, match="layers.0.weight"):
        LaionAestheticReward(LaionAestheticReward.Config(head_weights=bad, clip_checkpoint=clip_dir))
