"""HPS v2 on a tiny open_clip ViT saved like an HPS checkpoint; JPEG (in)compressibility on real encodes."""

from __future__ import annotations

import io

import pytest
import torch
from conftest import IMG, PROMPTS, assert_reward_contract, random_images

from mmgrpo.rewards.image.hps import HPSv2Reward
from mmgrpo.rewards.image.jpeg import JpegCompressibility, JpegIncompressibility, jpeg_size_kb


@pytest.fixture(scope="module")
def hps(tiny_open_clip):
    name, weights = tiny_open_clip
    return HPSv2Reward(HPSv2Reward.Config(weights=weights, hub_repo=None, model_name=name, batch_size=3))


def test_hps_contract_and_equals_open_clip_forward(hps, tiny_open_clip):
    import open_clip

    name, weights = tiny_open_clip
    images = random_images(8, h=IMG, w=IMG)  # already model-sized: the resize is the identity
    scores = assert_reward_contract(hps, images, PROMPTS)
    model = open_clip.create_model(name, pretrained=weights).eval()  # open_clip's own checkpoint loader
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        img_f, txt_f, _ = model((images - mean) / std, open_clip.get_tokenizer(name)(PROMPTS))  # unit-norm features
    # hpsv2.score: diagonal(image_features @ text_features.T), no logit scale.
    torch.testing.assert_close(scores, (img_f @ txt_f.T).diagonal(), atol=1e-5, rtol=0)
    assert scores.abs().max() <= 1.0


def test_hps_preprocess_hand_computed(hps):
    # A flat 0.5 image at 64x80 -> resized (shortest side 32) and cropped to 32x32, then normalized with
    # the OpenAI CLIP mean/std: channel 0 = (0.5 - 0.48145466) / 0.26862954 = 0.0690371.
    pixels = hps.pixel_values(torch.full((1, 3, 64, 80), 0.5))
    assert pixels.shape == (1, 3, IMG, IMG)
    torch.testing.assert_close(pixels[0, 0], torch.full((IMG, IMG), 0.0690371), atol=1e-5, rtol=0)
    # Non-square inputs still give finite, batch-invariant scores.
    assert torch.isfinite(assert_reward_contract(hps, random_images(3, h=50, w=70), PROMPTS[:3])).all()


def test_hps_errors(tmp_path, tiny_open_clip):
    name, _ = tiny_open_clip
    with pytest.raises(FileNotFoundError, match=r"weights=.*not a file.*xswu/HPSv2"):
        HPSv2Reward(HPSv2Reward.Config(weights=str(tmp_path / "nope.pt"), hub_repo=None, model_name=name))
    with pytest.raises(ValueError, match="not an open_clip architecture"):
        HPSv2Reward(HPSv2Reward.Config(weights="x.pt", hub_repo=None, model_name="no-such-arch"))
    torch.save({"state_dict": {"visual.proj": torch.zeros(1)}}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match="lacks .* parameters"):
        HPSv2Reward(HPSv2Reward.Config(weights=str(tmp_path / "partial.pt"), hub_repo=None, model_name=name))
    sd = torch.load(tiny_open_clip[1])["state_dict"]
    sd["visual.proj"] = torch.zeros(32, 8)  # a different embedding width
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "other.pt")  # DDP prefix is stripped
    with pytest.raises(ValueError, match=r"do not fit model_name.*visual.proj \[32, 8\] != \[32, 16\]"):
        HPSv2Reward(HPSv2Reward.Config(weights=str(tmp_path / "other.pt"), hub_repo=None, model_name=name))


def test_jpeg_flat_compresses_better_than_noise():
    flat = torch.full((1, 3, 64, 64), 0.4)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    images = torch.cat([flat, noise])
    conds = ["", ""]
    comp = JpegCompressibility()(images, conds)
    incomp = JpegIncompressibility()(images, conds)
    assert comp.dtype == torch.float32 and comp.shape == (2,)
    assert comp[0] > comp[1]  # flat image: smaller file, higher compressibility
    assert incomp[1] > incomp[0]
    torch.testing.assert_close(incomp, -comp)
    # A 64x64 noise image at quality 95 is several kB; a flat one well under 2 kB.
    assert incomp[1] > 5.0 and incomp[0] < 2.0


def test_jpeg_size_matches_a_direct_pil_encode():
    from PIL import Image

    images = random_images(3, seed=4)
    sizes = jpeg_size_kb(images, quality=80)
    for i in range(3):
        # Loop reference: DDPO's conversion (x * 255).round() to uint8 HWC, then PIL JPEG.
        arr = (images[i] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=80)
        assert sizes[i].item() == pytest.approx(buf.tell() / 1000.0)
    assert_reward_contract(JpegIncompressibility(), images, PROMPTS[:3])


def test_jpeg_accepts_pil_lists_and_checks_quality():
    from PIL import Image

    img = Image.new("RGB", (32, 32), (200, 10, 10))
    reward = JpegCompressibility(JpegCompressibility.Config(quality=90))
    out = reward([img, img], ["", ""])
    assert out[0] == out[1] and out[0] < 0
    with pytest.raises(ValueError, match="quality"):
        JpegCompressibility.Config(quality=100)
