"""Checkpoints hold no pickle, a broken newest checkpoint falls back to the one before it, stale staging goes."""

import pickle

import pytest

from mmgrpo import checkpoint
from mmgrpo.trainer import Trainer, TrainingError

RUN = ["steps=2", "checkpoint_every=1", "keep_checkpoints=3", "batch_size=16", "micro_batch_size=8", "data.eval_prompts=[]"]


def _trained(toy_cfg, *extra):
    t = Trainer(toy_cfg(*RUN, *extra))
    t.fit()
    return t.run_dir


def test_no_checkpoint_file_is_a_pickle(toy_cfg):
    run = _trained(toy_cfg, "optim.ema_decay=0.9")
    files = [p for p in (run / "checkpoints").rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix in (".pt", ".pkl", ".bin")]
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"


@pytest.mark.parametrize("damage", ["truncate_policy", "empty_state", "truncate_optimizer", "drop_rng"])
def test_broken_newest_checkpoint_falls_back_and_says_so(toy_cfg, capsys, damage):
    run = _trained(toy_cfg)
    newest = run / "checkpoints" / "step_0000002"
    if damage == "truncate_policy":
        f = newest / "policy.safetensors"
        f.write_bytes(f.read_bytes()[:20])
    elif damage == "empty_state":
        (newest / "trainer_state.json").write_text("")
    elif damage == "truncate_optimizer":
        (newest / "optimizer_rank0.safetensors").write_bytes(b"")
    else:
        (newest / "rng_rank0.json").unlink()
    t = Trainer(toy_cfg(*RUN, "steps=3"))
    t.fit(resume=True)
    out = capsys.readouterr().out
    assert "checkpoint step_0000002 is unusable" in out and "resuming from step_0000001" in out
    assert t.step == 3


def test_planted_pickle_is_never_read(toy_cfg, tmp_path):
    run = _trained(toy_cfg)
    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("methods.pt", "rng_rank0.pt", "optimizer.pt"):
        (run / "checkpoints" / "step_0000002" / name).write_bytes(pickle.dumps(Boom()))
    Trainer(toy_cfg(*RUN, "steps=3")).fit(resume=True)
    assert not marker.exists()


def test_stale_staging_folder_is_removed_before_training(toy_cfg, capsys):
    run = _trained(toy_cfg)
    stale = checkpoint.staging_dir(run, 7)
    stale.mkdir(parents=True)
    (stale / "junk.txt").write_text("half a checkpoint")
    Trainer(toy_cfg(*RUN, "steps=3")).fit(resume=True)
    assert not stale.exists() and "never finished" in capsys.readouterr().out
    assert not (run / "checkpoints" / "step_0000003" / "junk.txt").exists()


def test_every_checkpoint_broken_is_a_clear_error(toy_cfg):
    run = _trained(toy_cfg)
    for p in (run / "checkpoints").glob("step_*"):
        (p / "policy.safetensors").write_bytes(b"x")
    with pytest.raises(TrainingError, match="no checkpoint under .* can be used"):
        Trainer(toy_cfg(*RUN, "steps=3")).fit(resume=True)
