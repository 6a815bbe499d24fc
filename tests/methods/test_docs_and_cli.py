"""docs/methods.md matches the registries; every snippet is a valid config; `mmgrpo list` shows every method."""

import contextlib
import io
import re
import subprocess
import sys

import pytest
import yaml

import mmgrpo.methods  # noqa: F401  (registers the catalog)
from mmgrpo import advantages, aggregation, collect, objectives
from mmgrpo.config import load_config, load_yaml
from mmgrpo.methods.docs import SECTIONS, render, snippet

from .toyworld import ROOT, TOY

PAGE = ROOT / "docs" / "methods.md"


def test_page_is_generated_from_the_registries():
    assert PAGE.read_text() == render(), "docs/methods.md is stale: run python scripts/gen_methods_doc.py"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_methods_doc.py"), "--check"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_registered_method_has_an_entry_with_a_snippet():
    text = PAGE.read_text()
    for kind, reg, _, _ in SECTIONS:
        section = text.split(f"## {[t for k, _, t, _ in SECTIONS if k == kind][0]}")[1].split("\n## ")[0]
        for name in reg.names():
            assert re.search(rf"^### `{re.escape(name)}`", section, re.M), (kind, name)


def _merge(base: dict, extra: dict) -> dict:
    """Top-level sections merge key by key (`loss: {objective: ...}` keeps kl_beta); their values replace."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "sampling" else v
    return out


@pytest.mark.parametrize("kind,reg", [("advantages", advantages.ADVANTAGES), ("objectives", objectives.OBJECTIVES),
                                      ("aggregation", aggregation.AGGREGATIONS), ("collectors", collect.COLLECTORS)])
def test_every_snippet_is_a_valid_config_for_the_toy(kind, reg):
    base = load_yaml(TOY)
    # forward-process objectives (awm, nft) regress a flow policy's clean samples: checked on a flow recipe
    flow = {**base, "policy": {"pretrained": "unused"}, "rewards": [{"name": "shapes"}]}
    for e in reg.entries():
        extra = yaml.safe_load(snippet(kind, e.name, e.obj))
        on = flow if getattr(e.obj, "consumes", "log_prob") == "forward_process" else base
        load_config(None, base=_merge(on, extra))            # names, parameters and rollout fields check out


def test_mmgrpo_list_shows_every_method_with_description_and_reference():
    from mmgrpo.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["list"]) == 0
    out = buf.getvalue()
    sections: dict = {}
    current = None
    for ln in out.splitlines():
        if ln and not ln.startswith(" ") and ln.endswith(":"):
            current = sections.setdefault(ln[:-1], [])
        elif current is not None:
            current.append(ln)
    regs = {"advantages": advantages.ADVANTAGES, "objectives": objectives.OBJECTIVES,
            "aggregation": aggregation.AGGREGATIONS}
    if "collectors" in sections:                              # once the CLI lists collectors (issue-4 report)
        regs["collectors"] = collect.COLLECTORS
    for kind, reg in regs.items():
        for e in reg.entries():
            line = next((ln for ln in sections[kind] if ln.strip().startswith(e.name + " ")), None)
            assert line is not None, (kind, e.name)
            assert e.description in line and (not e.ref or f"[{e.ref}]" in line), line
