"""The shipped accelerate configs parse as `accelerate launch` reads them (and build their engine plugins), the
DeepSpeed settings mmgrpo fills before `prepare`, and (GPU + deepspeed) a few ZeRO-2 steps of the token world
that equal a plain run and resume from their own checkpoint."""

import os
import subprocess
import sys

import pytest
import torch
import yaml
from helpers.launch import ACCEL, free_port
from helpers.paths import ROOT, TOY

CONFIGS = sorted(ACCEL.glob("*.yaml"))
TYPES = {"NO", "MULTI_GPU", "FSDP", "DEEPSPEED"}


def _launch_env(path, monkeypatch):
    """What `accelerate launch --config_file path` would export to its processes (accelerate's own code)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "--main_process_port", str(free_port()),
                                               "train.py"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:                       # as accelerate's launch_command does before its DeepSpeed launcher
        fields = list(defaults.deepspeed_config)
        args.deepspeed_fields_from_accelerate_config = ",".join([*fields, "mixed_precision"])
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        env = {}
    for k, v in env.items():
        if k.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(k, v)
    return args, defaults


def test_every_shipped_config_is_there():
    names = {p.stem for p in CONFIGS}
    assert {"single", "ddp", "ddp_cpu", "fsdp2", "fsdp2_cpu", "deepspeed_zero2", "deepspeed_zero3"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses_as_accelerate_launch_reads_it(path, monkeypatch):
    raw = yaml.safe_load(path.read_text())
    assert isinstance(raw, dict), f"{path.name}: not a mapping"
    assert raw["distributed_type"] in TYPES, f"{path.name}: distributed_type {raw['distributed_type']!r}"
    assert isinstance(raw["num_processes"], int) and raw["num_processes"] >= 1
    assert raw.get("mixed_precision", "no") in ("no", "fp16", "bf16")
    if path.stem.endswith("_cpu"):               # the tests' one-rank == two-rank launches
        assert raw["num_processes"] == 2 and raw["mixed_precision"] == "no"

    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    cfg = load_config_from_file(str(path))        # raises on keys accelerate does not know
    assert cfg.distributed_type.value == raw["distributed_type"]
    known = {a.dest for a in launch_command_parser()._actions}
    for block in ("fsdp_config", "deepspeed_config"):
        unknown = set(raw.get(block) or {}) - known
        assert not unknown, f"{path.name}: {block} keys the launcher ignores: {sorted(unknown)}"
    args, _ = _launch_env(path, monkeypatch)
    assert args.num_processes == raw["num_processes"]

    if raw["distributed_type"] == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin
        from accelerate.utils.constants import FSDP_AUTO_WRAP_POLICY, FSDP_STATE_DICT_TYPE

        fsdp = raw["fsdp_config"]
        assert fsdp["fsdp_version"] == 2
        assert fsdp["fsdp_auto_wrap_policy"] in FSDP_AUTO_WRAP_POLICY
        assert fsdp["fsdp_state_dict_type"] in FSDP_STATE_DICT_TYPE
        assert os.environ["ACCELERATE_USE_FSDP"] == "true"       # what make_accelerator's CPU shim reads
        plugin = FullyShardedDataParallelPlugin()                  # from the launch environment, as in a run
        assert plugin.fsdp_version == 2
        assert plugin.reshard_after_forward == fsdp["fsdp_reshard_after_forward"]
        assert plugin.state_dict_type.name == fsdp["fsdp_state_dict_type"]
    elif raw["distributed_type"] == "DEEPSPEED":
        from accelerate.utils import DeepSpeedPlugin

        ds = raw["deepspeed_config"]
        assert ds["zero_stage"] in (0, 1, 2, 3)
        assert ds["gradient_accumulation_steps"] == 1            # mmgrpo names each optimizer step's end itself
        assert ds["offload_optimizer_device"] in ("none", "cpu", "nvme")
        assert ds["offload_param_device"] in ("none", "cpu", "nvme")
        plugin = DeepSpeedPlugin()                                 # from the launch environment, as in a run
        assert plugin.zero_stage == ds["zero_stage"]
        assert plugin.deepspeed_config["zero_optimization"]["stage"] == ds["zero_stage"]
        assert plugin.deepspeed_config["gradient_accumulation_steps"] == 1
    else:
        assert "fsdp_config" not in raw and "deepspeed_config" not in raw


class _Launched:
    """The two attributes of an Accelerator that `configure_deepspeed` reads, around a real DeepSpeedPlugin
    (an Accelerator itself needs deepspeed installed and a GPU to be built under DeepSpeed)."""

    def __init__(self, plugin):
        from accelerate.utils import DistributedType

        self.distributed_type = DistributedType.DEEPSPEED
        self.state = type("State", (), {"deepspeed_plugin": plugin})()


def _plugin(name, monkeypatch):
    from accelerate.utils import DeepSpeedPlugin

    _launch_env(ACCEL / name, monkeypatch)
    return DeepSpeedPlugin()


def test_configure_deepspeed_fills_micro_batch_and_the_run_clipping(monkeypatch):
    from mmgrpo.distributed import configure_deepspeed

    plugin = _plugin("deepspeed_zero2.yaml", monkeypatch)
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"   # accelerate needs a DataLoader
    configure_deepspeed(_Launched(plugin), micro_batch=4, grad_clip=0.5)
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == 4
    assert plugin.deepspeed_config["gradient_clipping"] == 0.5 and plugin.gradient_clipping == 0.5
    plugin = _plugin("deepspeed_zero2.yaml", monkeypatch)
    configure_deepspeed(_Launched(plugin), micro_batch=2, grad_clip=None)           # clipping off = 0 for DeepSpeed
    assert plugin.deepspeed_config["gradient_clipping"] == 0.0


def test_configure_deepspeed_refuses_what_it_cannot_run(monkeypatch):
    from mmgrpo.distributed import configure_deepspeed

    with pytest.raises(ValueError, match="zero_stage=3 partitions parameters.*fsdp2.yaml"):
        configure_deepspeed(_Launched(_plugin("deepspeed_zero3.yaml", monkeypatch)), micro_batch=4, grad_clip=1.0)
    plugin = _plugin("deepspeed_zero2.yaml", monkeypatch)
    plugin.deepspeed_config["gradient_accumulation_steps"] = 4
    with pytest.raises(ValueError, match="gradient_accumulation_steps=4: must be 1"):
        configure_deepspeed(_Launched(plugin), micro_batch=4, grad_clip=1.0)


# ---------------------------------------------------------------------------------------------- GPU

WORKER = ROOT / "tests" / "helpers" / "dist_worker.py"
QUIET = ["progress=false", "tensorboard=false", "sample_every=0", "data.eval_prompts=[]", "checkpoint_every=2"]
GPU_RUN = ["batch_size=32", "micro_batch_size=4", "loss.aggregation=token_mean", "inner_epochs=2", *QUIET]


def _gpu_env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "tests"), MMGRPO_COMPONENT_PREFIXES="helpers.")


def _run(cmd):
    res = subprocess.run(cmd, env=_gpu_env(), timeout=600, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]


@pytest.mark.gpu
def test_zero2_toy_steps_equal_a_plain_run_and_resume(tmp_path):
    """ZeRO-2 (fp32) on the GPUs there are (1 or 2): 4 steps equal a plain one-GPU run; 2 steps, then --resume
    to 4 from the ZeRO-2 checkpoint (weights, each rank's optimizer partition), equal them too."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    pytest.importorskip("deepspeed")
    n = min(2, torch.cuda.device_count())
    cfg = yaml.safe_load((ACCEL / "deepspeed_zero2.yaml").read_text())
    cfg.update(num_processes=n, mixed_precision="no")
    cfg_file = tmp_path / "zero2.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(cfg_file),
              "--main_process_port", str(free_port()), str(WORKER), str(TOY)]
    plain = [sys.executable, str(WORKER), str(TOY)]

    _run([*plain, str(tmp_path / "plain.pt"), f"run_dir={tmp_path / 'p'}", *GPU_RUN, "steps=4", "grad_accum=8"])
    _run([*launch, str(tmp_path / "ds.pt"), f"run_dir={tmp_path / 'd'}", *GPU_RUN, "steps=4", f"grad_accum={8 // n}"])
    _run([*launch, str(tmp_path / "half.pt"), f"run_dir={tmp_path / 'r'}", *GPU_RUN, "steps=2", f"grad_accum={8 // n}"])
    _run([*launch, str(tmp_path / "resumed.pt"), f"run_dir={tmp_path / 'r'}", *GPU_RUN, "steps=4",
          f"grad_accum={8 // n}", "--resume"])
    a, b, c = (torch.load(tmp_path / f) for f in ("plain.pt", "ds.pt", "resumed.pt"))
    assert b["engine"] == c["engine"] == "deepspeed" and b["world"] == n
    assert a["weights"].abs().sum() > 0
    torch.testing.assert_close(a["advantages"], b["advantages"], atol=1e-5, rtol=0)
    # one weight moves ~1e-2 per optimizer step at lr 1e-2: 1e-4 tells a missed or doubled step apart, and
    # leaves room for DeepSpeed's flat-buffer reductions on the GPU
    torch.testing.assert_close(a["weights"], b["weights"], atol=1e-4, rtol=0)
    torch.testing.assert_close(b["weights"], c["weights"], atol=1e-4, rtol=0)
    ckpt = tmp_path / "r" / "checkpoints" / "step_0000004"
    assert sorted(p.name for p in ckpt.glob("optimizer_rank*.safetensors")) == \
        [f"optimizer_rank{i}.safetensors" for i in range(n)]
