"""Every image/video/groupwise/compose reward: a valid Config (one doc comment per field), built through
`mmgrpo.components.build`, and, once the entry points are installed, found by its registry name."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmgrpo.components import REWARDS, build, component_config, import_path
from mmgrpo.config import field_docs

ENTRY_POINTS = {
    "pickscore": "mmgrpo.rewards.image.pickscore:PickScoreReward",
    "hpsv2": "mmgrpo.rewards.image.hps:HPSv2Reward",
    "clip_score": "mmgrpo.rewards.image.clip_score:CLIPScoreReward",
    "aesthetic": "mmgrpo.rewards.image.aesthetic:LaionAestheticReward",
    "jpeg_compressibility": "mmgrpo.rewards.image.jpeg:JpegCompressibility",
    "jpeg_incompressibility": "mmgrpo.rewards.image.jpeg:JpegIncompressibility",
    "darkness": "mmgrpo.rewards.image.brightness:Darkness",
    "brightness": "mmgrpo.rewards.image.brightness:Brightness",
    "geneval": "mmgrpo.rewards.image.geneval:GenEvalReward",
    "vlm_judge": "mmgrpo.rewards.image.vlm_judge:VLMJudgeReward",
    "video_per_frame": "mmgrpo.rewards.video.per_frame:PerFrameReward",
    "video_temporal_consistency": "mmgrpo.rewards.video.clip_video:TemporalConsistencyReward",
    "video_text_alignment": "mmgrpo.rewards.video.clip_video:TextVideoAlignmentReward",
    "group_rank": "mmgrpo.rewards.groupwise:GroupRankReward",
    "group_diversity": "mmgrpo.rewards.groupwise:GroupDiversityReward",
    "weighted_sum": "mmgrpo.rewards.compose:WeightedSum",
}


@pytest.mark.parametrize("name, path", sorted(ENTRY_POINTS.items()))
def test_config_defaults_validate_and_fields_are_documented(name, path):
    cls = import_path(path)
    assert cls.name == name
    cfg = component_config(cls, {}, f"rewards[{name}]")
    assert dataclasses.is_dataclass(cfg)
    # `name`, `weight` and `_component_` belong to the rewards list entry (the trainer pops them).
    assert not {"name", "weight", "_component_"} & {f.name for f in dataclasses.fields(cls.Config)}
    docs = field_docs(cls.Config)
    missing = [f.name for f in dataclasses.fields(cls.Config) if not docs.get(f.name)]
    assert not missing, f"{path}: Config fields without a doc comment: {missing}"


@pytest.mark.parametrize("name, path", sorted(ENTRY_POINTS.items()))
def test_registered_name_resolves_once_entry_points_are_installed(name, path):
    if name not in REWARDS.names():
        pytest.skip(f"entry point {name!r} not installed yet (pyproject [project.entry-points.\"mmgrpo.rewards\"])")
    assert REWARDS.get(name) is import_path(path)


def test_build_through_components(clip_dir, owlv2_dir):
    reward = build(REWARDS, {"_component_": ENTRY_POINTS["clip_score"], "checkpoint": clip_dir, "scale": 1.0},
                   "rewards[0]", device="cpu")
    assert reward.clip.device == torch.device("cpu")
    assert reward(torch.rand(2, 3, 32, 32), ["a", "b"]).shape == (2,)
    geneval = build(REWARDS, {"_component_": ENTRY_POINTS["geneval"], "checkpoint": owlv2_dir, "colors": ["red"]},
                    "rewards[1]")
    assert geneval.cfg.colors == ["red"]
    with pytest.raises(ValueError, match=r"rewards\[2\].mode"):
        build(REWARDS, {"_component_": ENTRY_POINTS["geneval"], "mode": "lenient"}, "rewards[2]")
