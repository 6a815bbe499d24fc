"""Config hardening (issue 11): component paths, YAML aliases, declared ranges of every numeric field, pkg://
configs, prompt files; each case fails at load time with one message naming the key and what would be right."""

import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from mmgrpo import components
from mmgrpo.config import ConfigError, TrainConfig, from_dict, load_config, load_yaml
from mmgrpo.schema import Range, bounded, check_fields, describe_fields

ROOT = Path(__file__).resolve().parents[1]
FLOW = "pkg://mmgrpo.configs/flow/shapes_demo.yaml"


# ----------------------------------------------------------------------------- component paths

@pytest.fixture
def packages(tmp_path, monkeypatch):
    """`mypkg` (with a marked and an unmarked component) and `mypkg_evil`, whose import writes a file."""
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "x.py").write_text(textwrap.dedent("""
        from mmgrpo.components import component

        @component
        def Y(outputs, conds, **_):
            return [0.0] * len(conds)

        def unmarked(outputs, conds, **_):
            return [0.0] * len(conds)
    """))
    ran = tmp_path / "evil_ran"
    (tmp_path / "mypkg_evil.py").write_text(f"open({str(ran)!r}, 'w').write('x')\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MMGRPO_COMPONENT_PREFIXES", "mypkg")
    yield ran
    for name in ("mypkg", "mypkg.x", "mypkg_evil"):
        sys.modules.pop(name, None)


def test_prefix_matches_at_a_package_boundary_and_nothing_is_imported_before(packages):
    ran = packages
    with pytest.raises(ConfigError, match=r"rewards\[0\]._component_: 'mypkg_evil:X' is outside the allowed module "
                                          r"prefixes \['mmgrpo', 'mypkg'\]"):
        components.resolve(components.REWARDS, {"_component_": "mypkg_evil:X"}, "rewards[0]")
    assert not ran.exists() and "mypkg_evil" not in sys.modules
    factory, params = components.resolve(components.REWARDS, {"_component_": "mypkg.x:Y"}, "rewards[0]")
    assert factory.__name__ == "Y" and params == {}
    # a trailing dot (the old spelling, `mypkg.`) means the same package
    factory2, _ = components.resolve(components.REWARDS, {"_component_": "mypkg.x.Y"}, "rewards[0]")
    assert factory2 is factory


def test_an_allowed_module_admits_only_marked_or_registered_components(packages):
    with pytest.raises(ConfigError, match=r"rewards\[0\]._component_: 'mypkg.x:unmarked' is not a registered reward "
                                          "nor marked with @mmgrpo.components.component"):
        components.resolve(components.REWARDS, {"_component_": "mypkg.x:unmarked"}, "rewards[0]")


@pytest.mark.parametrize("spec, message", [
    ("{_component_: 'mmgrpo.components:os'}",
     r"policy._component_: 'mmgrpo.components:os' is a module, not a component; name a class or function"),
    ("{_component_: 'mmgrpo.components:ComponentRegistry'}",
     r"policy._component_: 'mmgrpo.components:ComponentRegistry' is not a registered policy nor marked"),
    ("{_component_: 'mmgrpo.components:DEFAULT_ALLOWED_PREFIXES'}", r"is a tuple, not a component"),
    ("{_component_: 5}", r"policy._component_: expected a string 'package.module:Name' .* got int 5"),
    ("{_component_: 'mmgrpo..os'}", r"policy._component_: 'mmgrpo..os' must look like 'package.module:Name'"),
    ("{_component_: 'mmgrpo/../os:system'}", r"must look like 'package.module:Name'"),
    ("{_component_: 'mmgrpo.nope:X'}", r"module 'mmgrpo.nope' cannot be imported"),
    ("{_component_: 'os:system'}", r"outside the allowed module prefixes"),
    # a registered reward is not a policy
    ("{_component_: 'mmgrpo.pipelines.toy_tokens:ToyMatchReward'}", r"is not a registered policy"),
    ("{name: 5}", r"policy.name: expected a string \(one of: .*toy_tokens"),
])
def test_bad_component_specs_give_one_line_naming_the_key(toy_cfg, spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        toy_cfg(f"policy={spec}")
    assert "\n" not in str(info.value)


def test_registered_components_resolve_by_path(toy_cfg):
    cfg = toy_cfg("rewards=[{_component_: 'mmgrpo.pipelines.toy_tokens:ToyLengthReward', weight: 0.3}]",
                  "policy={_component_: 'mmgrpo.pipelines.toy_tokens:ToyTokenPolicy'}")
    assert cfg.rewards[0]["weight"] == 0.3


def test_component_mark_is_not_inherited():
    @components.component
    class Base:
        pass

    class Child(Base):
        pass

    assert components.is_marked(Base) and not components.is_marked(Child)
    with pytest.raises(TypeError, match="marks a class or function"):
        components.component(5)


# ----------------------------------------------------------------------------- YAML aliases

def alias_bomb(levels: int = 6, width: int = 9) -> str:
    """The classic billion-laughs: each level lists the previous one `width` times (9^6 = 531,441 leaves)."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    lines.append("policy: {name: toy_tokens, junk: [" + ", ".join([f"*a{levels - 1}"] * width) + "]}")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_before_any_expansion(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    assert bomb.stat().st_size < 1000
    with pytest.raises(ConfigError, match=r"config file '.*bomb.yaml', line 2: YAML alias \*a0 is not accepted in a "
                                          "config .*write the value out instead"):
        load_yaml(bomb)
    with pytest.raises(ConfigError, match=r"YAML alias \*a0 is not accepted"):
        load_config(bomb, [f"run_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_alias_in_an_override_and_merge_keys_are_refused(tmp_path, toy_cfg):
    with pytest.raises(ConfigError, match=r"override 'data.prompts=\[&x a, \*x\]': line 1: YAML alias \*x"):
        toy_cfg("data.prompts=[&x a, *x]")
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {lr: 0.1}\noptim:\n  <<: *b\n")
    with pytest.raises(ConfigError, match=r"line 3: YAML alias \*b"):
        load_yaml(path)


def test_deeply_nested_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_yaml(path)


# ----------------------------------------------------------------------------- declared ranges

@pytest.mark.parametrize("override, message", [
    ("optim.lr=.nan", r"optim.lr: nan is out of range; valid: a finite number > 0 \(peak learning rate"),
    ("optim.lr=.inf", r"optim.lr: inf is out of range; valid: a finite number > 0"),
    ("optim.lr=0", r"optim.lr: 0 is out of range; valid: a finite number > 0"),
    ("optim.grad_clip=-1", r"optim.grad_clip: -1 is out of range; valid: a finite number > 0 or null \(clip the global"),
    ("optim.betas=[0.9, 1.5]", r"optim.betas\[1\]: 1.5 is out of range; valid: a finite number in \[0, 1\)"),
    ("optim.betas=[0.9]", r"optim.betas: give two numbers"),
    ("optim.ema_decay=1.0", r"optim.ema_decay: 1.0 is out of range; valid: a finite number in \(0, 1\) or null"),
    ("optim.warmup_steps=-3", r"optim.warmup_steps: -3 is out of range; valid: an integer >= 0"),
    ("loss.kl_beta=.nan", r"loss.kl_beta: nan is out of range; valid: a finite number >= 0 \(weight of the KL"),
    ("loss.kl_beta=-1", r"loss.kl_beta: -1 is out of range; valid: a finite number >= 0"),
    ("advantage.clip=-5", r"advantage.clip: -5 is out of range; valid: a finite number > 0 or null"),
    ("rewards.0.weight=.nan", r"rewards\[0\].weight: nan is out of range; valid: a finite number"),
    ("rewards.0.weight=1e999", r"rewards\[0\].weight: inf is out of range"),
    ("log_every=0", r"log_every: 0 is out of range; valid: an integer >= 1 \(write metrics every k steps\)"),
    ("seed=-1", r"seed: -1 is out of range; valid: an integer in \[0, 2\^63\)"),
    ("seed=9223372036854775808", r"seed: 9223372036854775808 is out of range"),
    ("steps=0", r"steps: 0 is out of range; valid: an integer >= 1"),
    ("sample_every=-1", r"sample_every: -1 is out of range; valid: an integer >= 0"),
    ("eval_group_size=0", r"eval_group_size: 0 is out of range; valid: an integer >= 1"),
    ("micro_batch_size=0", r"micro_batch_size: 0 is out of range; valid: an integer >= 1 or null"),
    ("data.group_size=0", r"data.group_size: 0 is out of range; valid: an integer >= 1"),
    ("loss.objective_params={eps_low: .nan}", r"loss.objective_params.eps_low: nan is not a finite number"),
    ("policy.perturb_scale=.nan", r"policy.perturb_scale: nan is out of range; valid: a finite number >= 0"),
    ("policy.vocab=1", r"policy.vocab: 1 is out of range; valid: an integer >= 2"),
])
def test_numeric_fields_fail_at_load_time_naming_key_and_range(toy_cfg, override, message):
    with pytest.raises(ConfigError, match=message) as info:
        toy_cfg(override)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override, message", [
    ("policy.num_steps=1", r"policy.num_steps: 1 is out of range; valid: an integer >= 2 \(denoising steps"),
    ("policy.guidance_scale=.nan", r"policy.guidance_scale: nan is out of range; valid: a finite number >= 1"),
    ("policy.guidance_scale=0.5", r"policy.guidance_scale: 0.5 is out of range"),
    ("policy.noise_level=-1", r"policy.noise_level: -1 is out of range; valid: a finite number >= 0 \(noise level"),
    ("policy.noise_level=.inf", r"policy.noise_level: inf is out of range"),
    ("policy.lora_rank=0", r"policy.lora_rank: 0 is out of range; valid: an integer >= 1"),
    ("policy.time_chunk=0", r"policy.time_chunk: 0 is out of range; valid: an integer >= 1 or null"),
    ("policy.noise_subspace.factor=[1, 0]", r"policy.noise_subspace.factor\[1\]: 0 is out of range"),
    ("policy.forward_process.t_max=1.5", r"policy.forward_process.t_max: 1.5 is out of range; valid: a finite "
                                         r"number in \(0, 1\]"),
    ("policy.forward_process.t_min=0.99", r"policy.forward_process: t_min=0.99 must be below t_max=0.98"),
])
def test_flow_policy_fields_fail_at_load_time(tmp_path, override, message):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_config(FLOW, [f"run_dir={tmp_path}", override])
    assert time.perf_counter() - t0 < 30          # loading checks only: no model is built


def test_every_shipped_config_still_loads():
    paths = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.parts)
    assert len(paths) >= 4
    for p in paths:
        assert isinstance(load_config(p), TrainConfig), p


def test_direct_construction_checks_ranges_too():
    from mmgrpo.config import OptimConfig

    with pytest.raises(ConfigError, match=r"optim.lr: -1.0 is out of range"):
        OptimConfig(lr=-1.0)


def test_bounded_refuses_a_default_outside_its_range_and_describes_ranges():
    with pytest.raises(ValueError, match="outside its own range >= 1"):
        bounded(0, ge=1)
    assert Range(gt=0).describe() == "> 0" and Range(ge=0, lt=1).describe() == "in [0, 1)"
    assert Range(le=5).describe() == "<= 5" and Range(gt=0, le=1).describe() == "in (0, 1]"
    assert Range(ge=0, lt=1 << 63).describe() == "in [0, 2^63)"


def test_check_fields_names_the_prefix():
    from dataclasses import dataclass

    @dataclass
    class C:
        k: float = bounded(1.0, gt=0)  # a positive knob

    with pytest.raises(ConfigError, match=r"x.k: 0.0 is out of range; valid: a finite number > 0 \(a positive knob\)"):
        check_fields(C(k=0.0), "x")
    with pytest.raises(ConfigError, match=r"k: nan is out of range"):
        from_dict(C, {"k": float("nan")})


# ----------------------------------------------------------------------------- paths and files

def test_pkg_config_paths_load_like_files(tmp_path):
    cfg = load_config("pkg://mmgrpo.configs/toy/tokens.yaml", [f"run_dir={tmp_path}"])
    assert cfg.policy["name"] == "toy_tokens"
    with pytest.raises(ConfigError, match=r"config file 'pkg://mmgrpo.configs/toy/nope.yaml' does not exist "
                                          r"\(looked for '.*configs/toy/nope.yaml'\)"):
        load_config("pkg://mmgrpo.configs/toy/nope.yaml")
    with pytest.raises(ConfigError, match=r"package 'no_such_pkg' is not installed"):
        load_config("pkg://no_such_pkg/x.yaml")


@pytest.mark.parametrize("attr, where", [("prompts_file", "data.prompts"), ("eval_prompts_file", "data.eval_prompts")])
def test_non_utf8_prompt_file_is_named_at_load_time(tmp_path, toy_cfg, attr, where):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{where}: prompt file '.*latin1.txt' is not UTF-8 text \(byte 3 is 0xe9\); "
                                          "save it as UTF-8"):
        toy_cfg(f"data.{attr}={bad}")


def test_non_utf8_config_file_is_named(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"run_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"config file '.*c.yaml' is not UTF-8 text"):
        load_yaml(bad)


# ----------------------------------------------------------------------------- the reference

def test_reference_lists_every_field_with_doc_and_range():
    from mmgrpo.config import describe_config

    rows = {r.key: r for r in describe_fields(TrainConfig)}
    assert rows["optim.lr"].valid == "> 0" and rows["optim.lr"].doc.startswith("peak learning rate")
    assert rows["seed"].valid == "in [0, 2^63)" and rows["optim.grad_clip"].valid == "> 0 or null"
    assert all(r.doc for r in rows.values()), [k for k, r in rows.items() if not r.doc]
    flow = {r.key: r for r in describe_config(load_yaml(FLOW))}
    assert flow["policy.num_steps"].valid == ">= 2" and flow["policy.num_steps"].doc.startswith("denoising steps")
    assert flow["policy.forward_process.t_max"].valid == "in (0, 1]"
    assert {"rewards.0.weight", "rewards.1.mode", "loss.objective_params.beta", "advantage.params.eps"} <= set(flow)
    assert yaml.safe_load("x: 1")                  # the plain loader is untouched
