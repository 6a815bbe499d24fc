"""The SD3.5-Medium recipes: built and trained one step offline with tiny random SD3 components in their place.

The real checkpoint runs in the slow/GPU test below when it is in the local Hugging Face cache.
"""

from pathlib import Path

import pytest
import torch

from mmgrpo.config import load_config
from mmgrpo.modalities.flow.tiny import tiny_sd3_pipeline
from mmgrpo.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = ["policy.dtype=float32", "policy.resolution=16", "policy.max_sequence_length=16", "policy.lora_rank=4",
        "policy.lora_alpha=8", "policy.num_steps=3", "policy.eval_num_steps=2", "batch_size=4", "data.group_size=2",
        "micro_batch_size=2", "grad_accum=2", "steps=1", "mixed_precision=no", "progress=false",
        "tensorboard=false", "data.eval_prompts_file=null", "sample_every=1", "checkpoint_every=1"]


@pytest.fixture(scope="module")
def tiny_pipe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_sd3")
    tiny_sd3_pipeline(seed=0, sample_size=8).save_pretrained(d)
    return d


def _lora(trainer):
    return torch.cat([p.detach().reshape(-1).clone() for p in trainer.params])


def test_sd35m_shapes_recipe_one_step(tiny_pipe_dir, tmp_path):
    cfg = load_config(ROOT / "configs/flow/sd35m_shapes.yaml",
                      TINY + [f"policy.pretrained={tiny_pipe_dir}", f"run_dir={tmp_path}", "advantage.zero_std=keep"])
    assert cfg.policy["gradient_checkpointing"] and cfg.loss.kl_beta == 0.04
    t = Trainer(cfg)
    summary = t.fit()
    assert (tmp_path / "metrics.jsonl").is_file() and summary["checkpoint"]
    assert (Path(summary["checkpoint"]) / "export" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "samples" / "step_000001.png").is_file()


def test_sd35m_pickscore_recipe_one_step_moves_the_lora(tiny_pipe_dir, tmp_path):
    from mmgrpo.rewards.image.tiny import clip_bpe_tokenizer, make_tiny_clip

    clip = make_tiny_clip(tmp_path / "clip", clip_bpe_tokenizer())
    cfg = load_config(ROOT / "configs/flow/sd35m_pickscore.yaml",
                      TINY + [f"policy.pretrained={tiny_pipe_dir}", f"run_dir={tmp_path / 'run'}",
                              f"rewards.0.checkpoint={clip}", f"rewards.0.processor={clip}", "rewards.0.dtype=float32"])
    t = Trainer(cfg)
    before = _lora(t)
    t.fit()
    assert not torch.equal(before, _lora(t))          # continuous preference scores -> non-zero advantages


@pytest.mark.slow
@pytest.mark.gpu
def test_real_sd35_medium_one_step(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache("stabilityai/stable-diffusion-3.5-medium", "model_index.json"), str):
        pytest.skip("stabilityai/stable-diffusion-3.5-medium is not in the local Hugging Face cache")
    cfg = load_config(ROOT / "configs/flow/sd35m_shapes.yaml",
                      [f"run_dir={tmp_path}", "steps=1", "batch_size=4", "data.group_size=2", "micro_batch_size=1",
                       "grad_accum=4", "progress=false", "data.eval_prompts_file=null", "advantage.zero_std=keep"])
    Trainer(cfg).fit()


def test_sd35m_subspace_recipe_one_step(tiny_pipe_dir, tmp_path):
    """The SD3.5-M low-dimensional exploration recipe builds and trains (tiny components, 8x8 latents: factor 4
    leaves 2 x 2 blocks per channel), with the block subspace and the group-shared window in place."""
    cfg = load_config(ROOT / "configs/flow/sd35m_shapes_subspace.yaml",
                      TINY + [f"policy.pretrained={tiny_pipe_dir}", f"run_dir={tmp_path}", "advantage.zero_std=keep",
                              "policy.window_size=1"])
    assert cfg.policy["noise_subspace"] == {"kind": "block", "factor": 4} and cfg.policy["schedule"] == "window"
    t = Trainer(cfg)
    before = _lora(t)
    summary = t.fit()
    assert summary["checkpoint"] and not torch.equal(before, _lora(t))
